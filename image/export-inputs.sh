#!/bin/bash
# Export every input of an image build, so that the same commit rebuilds the same image bit
# for bit, offline, on another machine, whatever has left Debian's mirror or PyPI since:
#
#   image/export-inputs.sh DEST DEBS DIST DPKG_TSV RAUC_CA IMAGE   (called by image/build.sh)
#
# DEST/debian/     the .deb of every installed package, as a flat apt repository
#                  (Packages, Release), and installed.tsv: what the build installed
# DEST/python/     every Python distribution file the hash-pinned lock files name
# DEST/locks/      the lock files the build used
# DEST/rauc-ca.cert.pem   the CA the image trusts for updates
# DEST/MANIFEST    commit, SOURCE_DATE_EPOCH, versions, host tools, sha256 of every file
#
# Rebuild: `make image FLUXBOX_INPUTS=DEST` at the commit the MANIFEST names.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
DEST=$1 DEBS=$2 DIST=$3 TSV=$4 CA=$5 IMAGE=$6
SUITE=bookworm
NEW=$DEST.new
rm -rf "$NEW"
mkdir -p "$NEW/debian" "$NEW/python" "$NEW/locks"
python3 "$HERE/imagetool.py" select-debs "$DEBS" "$TSV" "$NEW/debian"
cp "$TSV" "$NEW/debian/installed.tsv"
"$HERE/apt-index.sh" "$NEW" debian "$NEW/debian" fluxbox-inputs "$SUITE"
python3 "$HERE/imagetool.py" select-dists "$DIST" "$NEW/python" \
    "$HERE/build-requirements.txt" "$HERE/requirements.txt"
cp "$HERE/packages.lock" "$HERE/requirements.txt" "$HERE/build-requirements.txt" "$NEW/locks/"
cp "$CA" "$NEW/rauc-ca.cert.pem"
{
    echo "# Flux Box image inputs. Rebuild, offline: make image FLUXBOX_INPUTS=<this directory>"
    echo "commit $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "source_date_epoch ${SOURCE_DATE_EPOCH:?}"
    echo "image_version ${FLUXBOX_IMAGE_VERSION:-unknown}"
    echo "image_sha256 $(sha256sum < "$IMAGE" | cut -d' ' -f1)"
    echo "host $(. /etc/os-release && echo "$ID-$VERSION_ID") $(uname -m)"
    for p in mmdebstrap apt dpkg tar genimage e2fsprogs dosfstools mtools fdisk dpkg-dev python3; do
        echo "tool $p $(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo unknown)"
    done
    (cd "$NEW" && find . -type f ! -name MANIFEST -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) \
        | sed 's/^/sha256 /'
} > "$NEW/MANIFEST"
rm -rf "$DEST"
mv "$NEW" "$DEST"
echo "export-inputs.sh: $DEST: $(ls "$DEST/debian" | grep -c '\.deb$') .deb files, $(ls "$DEST/python" | wc -l) Python files, $(du -sh --apparent-size "$DEST" | cut -f1)"
