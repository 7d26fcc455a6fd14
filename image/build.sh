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
# 4. SBOM:    fluxbox.spdx.json and sbom.txt next to the image, naming any drift from the lock;
# 5. inputs:  OUTDIR/inputs: every input of this build (.deb files as a package repository,
#             Python distribution files, the RAUC CA, a manifest), to rebuild it bit for bit.
#
# Where the Debian packages come from, in order: FLUXBOX_INPUTS=DIR (the exported inputs of
# an earlier build: those alone, no network, the same bits); else the .deb cache as a local
# repository, then the mirror (FLUXBOX_MIRROR, or the snapshot archive of the lock's
# timestamp with FLUXBOX_SNAPSHOT=1). A locked version found nowhere is replaced by the
# mirror's: the build says so (DRIFT) in its log, drift.txt and the SBOM, and goes on, unless
# FLUXBOX_LOCK_STRICT=1. The build never writes image/packages.lock (`make image-lock` does).
# FLUXBOX_OFFLINE=1 is FLUXBOX_INPUTS=build/image/inputs (the last build's).
# Caches (FLUXBOX_CACHE, default build/image/cache): .deb files, pip downloads, the build
# tools' venv. With them a rebuild downloads nothing.
# Set FLUXBOX_TEST_IMAGE=1 to also write fluxbox-test.img (the same root file system plus a
# root autologin on the serial console, and a test config).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
OUT=$(realpath -m "${1:-$REPO/build/image}")
CACHE=$(realpath -m "${FLUXBOX_CACHE:-$REPO/build/image/cache}")
SUITE=bookworm
LOCK=$HERE/packages.lock
# Exported inputs of an earlier build to build from, alone and offline.
INPUTS=${FLUXBOX_INPUTS:-}
[ -z "${FLUXBOX_OFFLINE:-}" ] || INPUTS=${INPUTS:-$REPO/build/image/inputs}
if [ -n "$INPUTS" ]; then
    INPUTS=$(realpath -e "$INPUTS" 2>/dev/null) && [ -f "$INPUTS/MANIFEST" ] \
        || { echo "build.sh: no exported inputs (a directory with a MANIFEST) at ${FLUXBOX_INPUTS:-build/image/inputs}" >&2; exit 1; }
    # whole, unchanged, and of this commit (FLUXBOX_INPUTS_OTHER_COMMIT=1: build this tree
    # from them anyway, with its own version and time, not a reproduction)
    python3 "$HERE/imagetool.py" inputs-check "$INPUTS" "$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
fi
for path in "$REPO" "$OUT" "$CACHE" "$INPUTS"; do
    case $path in *[[:space:]]*) echo "build.sh: a path with spaces is not supported: '$path'" >&2; exit 1 ;; esac
done
MIRROR=${FLUXBOX_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${FLUXBOX_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SOURCE_OPTIONS=""
if [ -n "${FLUXBOX_SNAPSHOT:-}" ]; then
    # The snapshot archive as it was when the lock was written: it still has every locked version.
    ts=$(python3 "$HERE/imagetool.py" lock-snapshot "$LOCK")
    [ -n "$ts" ] || { echo "build.sh: FLUXBOX_SNAPSHOT=1 but image/packages.lock names no snapshot" >&2; exit 1; }
    MIRROR=https://snapshot.debian.org/archive/debian/$ts
    SECURITY_MIRROR=https://snapshot.debian.org/archive/debian-security/$ts
    SOURCE_OPTIONS="[check-valid-until=no] "
fi
# Debian packages on top of the minbase variant (their dependencies come along).
PACKAGES=(
    systemd-sysv systemd-timesyncd systemd-boot-efi udev dbus kmod procps
    linux-image-amd64 initramfs-tools zstd e2fsprogs dosfstools
    python3 python3-dbus
    network-manager modemmanager wpasupplicant iproute2 nftables
    gpsd
    rauc rauc-service
    nano less
)

[ "$(id -u)" = 0 ] || { echo "build.sh: run as root (mmdebstrap --mode=root, loop-free mke2fs)" >&2; exit 1; }
for tool in mmdebstrap genimage mke2fs debugfs mkdosfs sfdisk dpkg-scanpackages; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool missing: run make image-deps" >&2; exit 1; }
done

# Reproducible: the time of the last commit (from exported inputs: theirs), unless given.
same_commit() { [ -n "$INPUTS" ] && [ "$(awk '$1 == "commit" { print $2 }' "$INPUTS/MANIFEST")" = "$(git -C "$REPO" rev-parse HEAD 2>/dev/null)" ]; }
! same_commit || : "${SOURCE_DATE_EPOCH:=$(awk '$1 == "source_date_epoch" { print $2 }' "$INPUTS/MANIFEST")}"
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
rm -f "$OUT/fluxbox.img" "$OUT/fluxbox.img.sha256" "$OUT/drift.txt"   # nothing stale if this build fails
[ "$INPUTS" = "$OUT/inputs" ] || rm -rf "$OUT/inputs" "$OUT/inputs.new"   # nor inputs of another build
WORK=$(mktemp -d /dev/shm/fluxbox-image.XXXXXX)   # tmpfs: fast, and a deterministic readdir order
trap 'rm -rf "$WORK"' EXIT
t0=$(date +%s)
step() { echo "== $(( $(date +%s) - t0 ))s: $*"; }

# ------------------------------------------------------------------ 1. wheels
step "wheels"
PYENV=$CACHE/pyenv
# Every Python distribution file the build uses, as downloaded (hash-checked on every use):
# the cache, or the exported inputs' python/ when building from them.
DIST=$CACHE/dist
[ -z "$INPUTS" ] || DIST=$INPUTS/python
mkdir -p "$DIST"
online() { [ -z "$INPUTS" ]; }
# A pinned file that PyPI no longer serves (removed, or rebuilt with another hash) is taken
# from the cache if it is there; if not, the build stops with the commands that fix it.
python_missing() {
    cat "$1" >&2
    echo "build.sh: a Python distribution pinned in image/$2 is neither on PyPI (with that hash)" \
         "nor in $DIST. Either take PyPI's current files: \`make image-lock\` and commit the lock" \
         "files; or build from the exported inputs of a build that had them:" \
         "\`make image FLUXBOX_INPUTS=path/to/inputs\`." >&2
    exit 1
}
if ! cmp -s "$HERE/build-requirements.txt" "$PYENV/.requirements" 2>/dev/null; then
    rm -rf "$PYENV"
    /usr/bin/python3 -m venv "$PYENV"
    if online; then
        "$PYENV/bin/python" -m pip download -q --cache-dir "$CACHE/pip" --require-hashes --no-deps \
            -r "$HERE/build-requirements.txt" -d "$DIST" 2> "$WORK/download-tools.log" \
            || echo "build.sh: PyPI did not serve every build tool; trying the cache"
    fi
    "$PYENV/bin/python" -m pip install -q --no-index --find-links "$DIST" --require-hashes --no-deps \
        -r "$HERE/build-requirements.txt" 2> "$WORK/tools.log" \
        || python_missing "$WORK/tools.log" build-requirements.txt
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
        2> "$WORK/download.log" || {
            echo "build.sh: PyPI did not serve every pinned Python file (it left PyPI, or was rebuilt with another hash); trying the cache:"
            grep -E "ERROR|THESE PACKAGES" "$WORK/download.log" | head -5 || true
        }
fi
pipver=$(sed -n 's/^pip==\([^ ]*\).*/\1/p' "$HERE/build-requirements.txt")
cp "$DIST/pip-$pipver-"*.whl "$WHL/" 2>/dev/null || python_missing /dev/null build-requirements.txt
# (no cache: pip's wheel cache would hand back a wheel built under another SOURCE_DATE_EPOCH)
"${PIP[@]}" wheel -q --no-cache-dir --no-index --find-links "$DIST" --require-hashes --no-deps --no-build-isolation \
    -r "$HERE/requirements.txt" -w "$WHL" 2> "$WORK/wheels.log" || python_missing "$WORK/wheels.log" requirements.txt
# The appliance, from the work tree (tracked and new files, not ignored ones).
(cd "$REPO" && git ls-files -z -co --exclude-standard -- pyproject.toml appliance hw) \
    | (cd "$REPO" && while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) \
    | (cd "$REPO" && xargs -0 cp --parents -t "$WORK/src")
"${PIP[@]}" wheel -q --no-cache-dir --no-deps --no-build-isolation "$WORK/src" -w "$WORK/app" \
    2> "$WORK/app.log" || { cat "$WORK/app.log"; exit 1; }
python3 "$HERE/imagetool.py" lock-check "$HERE/requirements.txt" "$WORK"/app/fluxbox-*.whl
cp "$WORK"/app/fluxbox-*.whl "$WHL/"
python3 "$HERE/imagetool.py" install-req "$WHL" "$HERE/requirements.txt"
FLUXBOX_VERSION=$(sed -n 's/^fluxbox==\([^ ]*\) .*/\1/p' "$WHL/install.txt")
export FLUXBOX_VERSION
# The image's version (os-release IMAGE_VERSION, the bundle's version): the appliance's and
# the commit's, unless given.
rev=$(git -C "$REPO" rev-parse --short=10 HEAD 2>/dev/null || echo unknown)
! same_commit || : "${FLUXBOX_IMAGE_VERSION:=$(awk '$1 == "image_version" { print $2 }' "$INPUTS/MANIFEST")}"
export FLUXBOX_IMAGE_VERSION=${FLUXBOX_IMAGE_VERSION:-$FLUXBOX_VERSION+g$rev}

# ------------------------------------------------------------------ 2. rootfs
step "rootfs (mmdebstrap)"
mkdir -p "$WORK/state"
# The CA the image trusts for RAUC bundles: a test CA made once into build/image/pki,
# unless FLUXBOX_RAUC_KEYRING names another (the production CA's certificate).
# A build from exported inputs trusts the CA the exporting build did.
if [ -z "${FLUXBOX_RAUC_KEYRING:-}" ] && [ -n "$INPUTS" ]; then
    FLUXBOX_RAUC_KEYRING=$INPUTS/rauc-ca.cert.pem
elif [ -z "${FLUXBOX_RAUC_KEYRING:-}" ]; then
    "$HERE/rauc/pki.sh" "$REPO/build/image/pki"
    FLUXBOX_RAUC_KEYRING=$REPO/build/image/pki/ca.cert.pem
fi
export FLUXBOX_RAUC_KEYRING
export FLUXBOX_IMAGE=$HERE FLUXBOX_WHEELS=$WHL FLUXBOX_STATE=$WORK/state FLUXBOX_REPO=$REPO
# What apt pins: the lock, or, from exported inputs, exactly what the exporting build installed.
# FLUXBOX_UNPINNED=1 (image/lock.sh) pins nothing: the mirror's versions.
PINS=$LOCK
[ -z "${FLUXBOX_UNPINNED:-}" ] || { PINS=$WORK/unpinned.lock; : > "$PINS"; }
[ -z "$INPUTS" ] || PINS=$WORK/inputs.lock
[ -z "$INPUTS" ] || awk -F'\t' 'NF >= 2 { print $1, $2 }' "$INPUTS/debian/installed.tsv" > "$PINS"
export FLUXBOX_LOCK=$PINS
# The sources: a local flat repository (Packages and a Release naming its hash; trusted:
# these files were checked by apt when they were downloaded), then the mirror.
NET_SOURCES=("deb $SOURCE_OPTIONS$MIRROR $SUITE main" "deb $SOURCE_OPTIONS$MIRROR $SUITE-updates main"
             "deb $SOURCE_OPTIONS$SECURITY_MIRROR $SUITE-security main")
# The image's own apt sources name Debian's mirror, however it was built.
IMAGE_SOURCES=("deb http://deb.debian.org/debian $SUITE main" "deb http://deb.debian.org/debian $SUITE-updates main"
               "deb http://deb.debian.org/debian-security $SUITE-security main")
# (mmdebstrap takes the essential packages only from a source whose suite is $SUITE)
# The local repository (the exported inputs, or the .deb cache) is offered to apt at one fixed
# path whatever the build directory: mmdebstrap mounts a file:// source at its own path in
# the new root, and leaves that path behind (hooks/unmounted.sh removes it), so the image
# must not depend on where the build ran. One build at a time uses it (flock).
LOCAL_REPO=/srv/fluxbox-image-repo
mkdir -p /srv
exec 9> "$LOCAL_REPO.lock"
flock 9
ln -sfn "$([ -n "$INPUTS" ] && echo "$INPUTS" || echo "$CACHE")" "$LOCAL_REPO"
SOURCES=()
if [ -n "$INPUTS" ]; then
    echo "build.sh: from the exported inputs in $INPUTS alone (no network)"
    # The local index has the packages' own priorities, not the archive's (which make apt
    # and its few dependencies "required" for the minbase variant): name every one.
    SOURCES+=("deb [trusted=yes] file://$LOCAL_REPO debian/")
    mapfile -t pinned < <(awk '{ print $1 }' "$PINS")
    PACKAGES+=("${pinned[@]}")
else
    if compgen -G "$CACHE/debs/*.deb" > /dev/null; then
        # the cache's debs/ is indexed as repo/ (Filename: debs/...)
        "$HERE/apt-index.sh" "$CACHE" debs "$CACHE/repo" fluxbox-cache "$SUITE"
        SOURCES+=("deb [trusted=yes] file://$LOCAL_REPO repo/")
    fi
    SOURCES+=("${NET_SOURCES[@]}")
fi
FLUXBOX_SOURCES_LIST=$(printf '%s\n\n' "${IMAGE_SOURCES[@]}")
export FLUXBOX_LOCAL_REPO=$LOCAL_REPO
export FLUXBOX_SOURCES_LIST
[ -s "$LOCK" ] || echo "build.sh: no image/packages.lock: this build takes the mirror's versions (make image-lock writes the lock)"
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
    --customize-hook="$HERE/hooks/unmounted.sh" \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
    --customize-hook='touch -d "@$SOURCE_DATE_EPOCH" "$1"/var/cache/apt/archives/lock "$1"/var/cache/apt/archives/partial' \
    --customize-hook="$HERE/hooks/customize.sh" \
    "$SUITE" "$WORK/rootfs.tar" "${SOURCES[@]}" \
    > "$WORK/mmdebstrap.log" 2>&1 || {
        cp "$WORK/mmdebstrap.log" "$OUT/mmdebstrap.log"
        grep -v "^rm: cannot remove" "$WORK/mmdebstrap.log" | tail -40
        echo "build.sh: mmdebstrap failed; its whole log: $OUT/mmdebstrap.log" >&2
        echo "build.sh: (if apt could not resolve dependencies, a locked version may have left the" \
             "mirror while a package it needs is still pinned: \`make image-lock\` takes the mirror's versions)" >&2
        exit 1
    }
grep -E '^(pin|customize)\.sh:' "$WORK/mmdebstrap.log" || true
# The cache keeps .deb files only: apt's lock and partial/ from it would carry this build's
# times into the next build's /var/cache/apt/archives (sync-in keeps them).
rm -rf "$CACHE/debs/lock" "$CACHE/debs/partial"

[ -z "$INPUTS" ] || python3 "$HERE/imagetool.py" verify-installed "$INPUTS/debian/installed.tsv" "$WORK/state/dpkg.tsv"
[ -s "$LOCK" ] || : > "$WORK/empty.lock"
python3 "$HERE/imagetool.py" drift "$([ -s "$LOCK" ] && echo "$LOCK" || echo "$WORK/empty.lock")" \
    "$WORK/state/dpkg.tsv" "$WORK/drift.txt"

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
cp "$WORK/drift.txt" "$OUT/drift.txt"
cp "$WHL/install.txt" "$OUT/python.txt"
python3 "$HERE/imagetool.py" sbom "$OUT"

# ------------------------------------------------------------------ 5. inputs
if [ "$INPUTS" != "$OUT/inputs" ]; then
    step "inputs: $OUT/inputs"
    "$HERE/export-inputs.sh" "$OUT/inputs" "$([ -n "$INPUTS" ] && echo "$INPUTS/debian" || echo "$CACHE/debs")" \
        "$DIST" "$OUT/dpkg.tsv" "$FLUXBOX_RAUC_KEYRING" "$OUT/fluxbox.img"
fi
# Last: the image counts as built (make, check.sh) only with its inputs exported.
(cd "$OUT" && sha256sum fluxbox.img > fluxbox.img.sha256)
step "done: $OUT/fluxbox.img ($(du -h --apparent-size "$OUT/fluxbox.img" | cut -f1) sparse, $(du -h "$OUT/fluxbox.img" | cut -f1) used), sha256 $(cut -c1-16 "$OUT/fluxbox.img.sha256")"
