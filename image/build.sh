#!/bin/bash
# Build the Flux Box disk image.
#
#   image/build.sh [OUTDIR]        (default: build/image)
#
# 1. wheels:  the appliance's Python dependencies, pinned with hashes (image/requirements.txt),
#             source-only ones built into wheels, and the appliance itself as a wheel;
# 2. rootfs:  Debian bookworm by mmdebstrap, every package pinned by image/packages.lock,
#             plus image/rootfs/, the venv /opt/fluxbox and the units (hooks/customize.sh);
# 3. disk:    image/mkdisk.sh: GPT with ESP, rootfs-a, rootfs-b and data, bit for bit the same
#             from the same inputs;
# 4. SBOM:    fluxbox.spdx.json and sbom.txt next to the image.
#
# Caches (build/image/cache): .deb files, pip downloads, the build tools' venv. With them a
# rebuild downloads nothing. The .deb cache is also a local repository for the build, so a
# locked version that has left the mirror still installs from it; FLUXBOX_OFFLINE=1 builds
# from the caches alone (.deb files and build/image/cache/dist), without the network.
# Set FLUXBOX_TEST_IMAGE=1 to also write fluxbox-test.img (the same root file system plus a
# root autologin on the serial console, and a test config).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
OUT=$(realpath -m "${1:-$REPO/build/image}")
CACHE=$REPO/build/image/cache
SUITE=bookworm
MIRROR=${FLUXBOX_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${FLUXBOX_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
LOCK=$HERE/packages.lock
# Debian packages on top of the minbase variant (their dependencies come along).
PACKAGES=(
    systemd-sysv systemd-timesyncd systemd-boot-efi udev dbus kmod procps
    linux-image-amd64 initramfs-tools zstd e2fsprogs dosfstools
    python3 python3-dbus
    network-manager modemmanager wpasupplicant iproute2
    gpsd
    rauc rauc-service
    nano less
)

[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (mmdebstrap --mode=root, loop-free mke2fs)" >&2; exit 1; }
for tool in mmdebstrap genimage mke2fs debugfs mkdosfs sfdisk dpkg-scanpackages; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool missing: run make image-deps" >&2; exit 1; }
done

# Reproducible: the time of the last commit, unless given.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 1735689600)}
export LC_ALL=C.UTF-8 TZ=UTC
umask 022
# pip settings of this machine (index mirrors, find-links) must not leak into the build.
for v in $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p'); do
    case $v in PIP_CERT|PIP_DEFAULT_TIMEOUT) ;; *) unset "$v" ;; esac
done
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV

mkdir -p "$OUT" "$CACHE/debs" "$CACHE/pip" "$CACHE/repo"
rm -f "$OUT/fluxbox.img" "$OUT/fluxbox.img.sha256"   # no stale image if this build fails
WORK=$(mktemp -d /dev/shm/fluxbox-image.XXXXXX)   # tmpfs: fast, and a deterministic readdir order
trap 'rm -rf "$WORK"' EXIT
t0=$(date +%s)
step() { echo "== $(( $(date +%s) - t0 ))s: $*"; }

# ------------------------------------------------------------------ 1. wheels
step "wheels"
PYENV=$CACHE/pyenv
# Every Python distribution file the build uses, as downloaded (hash-checked on every use).
DIST=$CACHE/dist
mkdir -p "$DIST"
online() { [ -z "${FLUXBOX_OFFLINE:-}" ]; }
if ! cmp -s "$HERE/build-requirements.txt" "$PYENV/.requirements" 2>/dev/null; then
    rm -rf "$PYENV"
    /usr/bin/python3 -m venv "$PYENV"
    if online; then
        "$PYENV/bin/python" -m pip download -q --cache-dir "$CACHE/pip" --require-hashes --no-deps \
            -r "$HERE/build-requirements.txt" -d "$DIST"
    fi
    "$PYENV/bin/python" -m pip install -q --no-index --find-links "$DIST" --require-hashes --no-deps \
        -r "$HERE/build-requirements.txt"
    cp "$HERE/build-requirements.txt" "$PYENV/.requirements"
fi
PIP=("$PYENV/bin/python" -m pip)
WHL=$WORK/wheels
mkdir -p "$WHL" "$WORK/src"
# Wheels where PyPI has them for CPython 3.11 on x86_64 (this host's Debian python3 is the
# image's), sdists otherwise, into the cache; then wheels from the cache alone.
if online; then
    "${PIP[@]}" download -q --cache-dir "$CACHE/pip" --require-hashes --no-deps --no-build-isolation \
        -r "$HERE/build-requirements.txt" -r "$HERE/requirements.txt" -d "$DIST" \
        2> "$WORK/download.log" || { cat "$WORK/download.log"; exit 1; }
fi
pipver=$(sed -n 's/^pip==\([^ ]*\).*/\1/p' "$HERE/build-requirements.txt")
cp "$DIST/pip-$pipver-"*.whl "$WHL/"
"${PIP[@]}" wheel -q --no-index --find-links "$DIST" --require-hashes --no-deps --no-build-isolation \
    -r "$HERE/requirements.txt" -w "$WHL" 2> "$WORK/wheels.log" || { cat "$WORK/wheels.log"; exit 1; }
# The appliance, from the work tree (tracked and new files, not ignored ones).
(cd "$REPO" && git ls-files -z -co --exclude-standard -- pyproject.toml appliance hw) \
    | (cd "$REPO" && while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) \
    | (cd "$REPO" && xargs -0 cp --parents -t "$WORK/src")
"${PIP[@]}" wheel -q --no-deps --no-build-isolation "$WORK/src" -w "$WORK/app" \
    2> "$WORK/app.log" || { cat "$WORK/app.log"; exit 1; }
python3 "$HERE/imagetool.py" lock-check "$HERE/requirements.txt" "$WORK"/app/fluxbox-*.whl
cp "$WORK"/app/fluxbox-*.whl "$WHL/"
python3 "$HERE/imagetool.py" install-req "$WHL" "$HERE/requirements.txt"
FLUXBOX_VERSION=$(sed -n 's/^fluxbox==\([^ ]*\) .*/\1/p' "$WHL/install.txt")
export FLUXBOX_VERSION
# The image's version (os-release IMAGE_VERSION, the bundle's version): the appliance's and
# the commit's, unless given.
rev=$(git -C "$REPO" rev-parse --short=10 HEAD 2>/dev/null || echo unknown)
export FLUXBOX_IMAGE_VERSION=${FLUXBOX_IMAGE_VERSION:-$FLUXBOX_VERSION+g$rev}

# ------------------------------------------------------------------ 2. rootfs
step "rootfs (mmdebstrap)"
mkdir -p "$WORK/state"
# The CA the image trusts for RAUC bundles: a test CA made once into build/image/pki,
# unless FLUXBOX_RAUC_KEYRING names another (the production CA's certificate).
if [ -z "${FLUXBOX_RAUC_KEYRING:-}" ]; then
    "$HERE/rauc/pki.sh" "$REPO/build/image/pki"
    FLUXBOX_RAUC_KEYRING=$REPO/build/image/pki/ca.cert.pem
fi
export FLUXBOX_RAUC_KEYRING
export FLUXBOX_IMAGE=$HERE FLUXBOX_WHEELS=$WHL FLUXBOX_STATE=$WORK/state FLUXBOX_REPO=$REPO
export FLUXBOX_LOCK=$LOCK
# The sources: the .deb cache as a flat repository (Packages and a Release naming its hash;
# trusted: these files were checked by apt when they were downloaded), then the mirror.
NET_SOURCES=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main"
             "deb $SECURITY_MIRROR $SUITE-security main")
SOURCES=()
if compgen -G "$CACHE/debs/*.deb" > /dev/null; then
    (cd "$CACHE" && dpkg-scanpackages --multiversion debs /dev/null 2>/dev/null) > "$CACHE/repo/Packages"
    # (mmdebstrap takes the essential packages only from a source whose suite is $SUITE)
    printf 'Origin: fluxbox-cache\nLabel: fluxbox-cache\nSuite: %s\nCodename: %s\nSHA256:\n %s %s Packages\n' \
        "$SUITE" "$SUITE" \
        "$(sha256sum < "$CACHE/repo/Packages" | cut -d' ' -f1)" "$(stat -c %s "$CACHE/repo/Packages")" \
        > "$CACHE/repo/Release"
    SOURCES+=("deb [trusted=yes] file://$CACHE repo/")
fi
if [ -n "${FLUXBOX_OFFLINE:-}" ]; then
    [ ${#SOURCES[@]} -gt 0 ] || { echo "build.sh: FLUXBOX_OFFLINE=1 but no .deb cache in $CACHE/debs" >&2; exit 1; }
    echo "build.sh: offline: Debian packages from $CACHE/debs only"
    # The local index has the packages' own priorities, not the archive's (which make apt
    # and its few dependencies "required" for the minbase variant): name every locked one.
    [ -s "$LOCK" ] || { echo "build.sh: FLUXBOX_OFFLINE=1 needs image/packages.lock" >&2; exit 1; }
    mapfile -t locked < <(awk '!/^#/ && NF == 2 { print $1 }' "$LOCK")
    PACKAGES+=("${locked[@]}")
else
    SOURCES+=("${NET_SOURCES[@]}")
fi
# The image's own apt sources name the mirror, however it was built.
FLUXBOX_SOURCES_LIST=$(printf '%s\n\n' "${NET_SOURCES[@]}")
export FLUXBOX_SOURCES_LIST
[ -s "$LOCK" ] || echo "build.sh: no image/packages.lock yet: this build takes the mirror's versions and writes it"
mmdebstrap --variant=minbase --mode=root --format=tar \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --skip=essential/unlink \
    --hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $CACHE/debs /var/cache/apt/archives/" \
    --setup-hook="$HERE/hooks/pin.sh" \
    --customize-hook="sync-out /var/cache/apt/archives $CACHE/debs" \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
    --customize-hook="$HERE/hooks/customize.sh" \
    "$SUITE" "$WORK/rootfs.tar" "${SOURCES[@]}" \
    > "$WORK/mmdebstrap.log" 2>&1 || {
        cp "$WORK/mmdebstrap.log" "$OUT/mmdebstrap.log"
        grep -v "^rm: cannot remove" "$WORK/mmdebstrap.log" | tail -40
        echo "build.sh: mmdebstrap failed; its whole log: $OUT/mmdebstrap.log" >&2
        exit 1
    }
grep -E '^(pin|customize)\.sh:' "$WORK/mmdebstrap.log" || true

if [ -s "$LOCK" ]; then
    python3 "$HERE/imagetool.py" lock-verify "$LOCK" "$WORK/state/dpkg.tsv"
else
    python3 "$HERE/imagetool.py" lock "$WORK/state/dpkg.tsv" > "$LOCK"
    echo "build.sh: wrote image/packages.lock ($(grep -vc '^#' "$LOCK") packages): commit it"
fi

# ------------------------------------------------------------------ 3. disk
step "disk image"
"$HERE/mkdisk.sh" "$WORK/rootfs.tar" "$OUT" fluxbox
if [ -n "${FLUXBOX_TEST_IMAGE:-}" ]; then
    step "test disk image"
    "$HERE/mkdisk.sh" "$WORK/rootfs.tar" "$OUT" fluxbox-test
fi
cp "$WORK/rootfs.tar" "$OUT/rootfs.tar"

# ------------------------------------------------------------------ 4. SBOM
step "SBOM"
cp "$WORK/state/dpkg.tsv" "$OUT/dpkg.tsv"
cp "$WHL/install.txt" "$OUT/python.txt"
python3 "$HERE/imagetool.py" sbom "$OUT"
(cd "$OUT" && sha256sum fluxbox.img > fluxbox.img.sha256)
step "done: $OUT/fluxbox.img ($(du -h --apparent-size "$OUT/fluxbox.img" | cut -f1) sparse, $(du -h "$OUT/fluxbox.img" | cut -f1) used), sha256 $(cut -c1-16 "$OUT/fluxbox.img.sha256")"
