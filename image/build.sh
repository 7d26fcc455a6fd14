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
# rebuild downloads nothing. Set FLUXBOX_TEST_IMAGE=1 to also write fluxbox-test.img (the
# same root file system plus a root autologin on the serial console, and a test config).
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
for tool in mmdebstrap genimage mke2fs debugfs mkdosfs sfdisk; do
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

mkdir -p "$OUT" "$CACHE/debs" "$CACHE/pip"
rm -f "$OUT/fluxbox.img" "$OUT/fluxbox.img.sha256"   # no stale image if this build fails
WORK=$(mktemp -d /dev/shm/fluxbox-image.XXXXXX)   # tmpfs: fast, and a deterministic readdir order
trap 'rm -rf "$WORK"' EXIT
t0=$(date +%s)
step() { echo "== $(( $(date +%s) - t0 ))s: $*"; }

# ------------------------------------------------------------------ 1. wheels
step "wheels"
PYENV=$CACHE/pyenv
if ! cmp -s "$HERE/build-requirements.txt" "$PYENV/.requirements" 2>/dev/null; then
    rm -rf "$PYENV"
    /usr/bin/python3 -m venv "$PYENV"
    "$PYENV/bin/python" -m pip install -q --cache-dir "$CACHE/pip" --require-hashes --no-deps \
        -r "$HERE/build-requirements.txt"
    cp "$HERE/build-requirements.txt" "$PYENV/.requirements"
fi
PIP=("$PYENV/bin/python" -m pip)
WHL=$WORK/wheels
mkdir -p "$WHL" "$WORK/tools" "$WORK/src"
"${PIP[@]}" download -q --cache-dir "$CACHE/pip" --require-hashes --no-deps \
    -r "$HERE/build-requirements.txt" -d "$WORK/tools"
cp "$WORK"/tools/pip-*.whl "$WHL/"
# Wheels where PyPI has them for CPython 3.11 on x86_64 (this host's Debian python3 is the
# image's), wheels built from the pinned sdists otherwise; every download hash-checked.
"${PIP[@]}" wheel -q --cache-dir "$CACHE/pip" --require-hashes --no-deps --no-build-isolation \
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
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $CACHE/debs /var/cache/apt/archives/" \
    --setup-hook="$HERE/hooks/pin.sh" \
    --customize-hook="sync-out /var/cache/apt/archives $CACHE/debs" \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
    --customize-hook="$HERE/hooks/customize.sh" \
    "$SUITE" "$WORK/rootfs.tar" \
    "deb $MIRROR $SUITE main" \
    "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main" \
    > "$WORK/mmdebstrap.log" 2>&1 || { tail -60 "$WORK/mmdebstrap.log"; exit 1; }
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
