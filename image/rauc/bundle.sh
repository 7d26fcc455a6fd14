#!/bin/bash
# Make a signed RAUC bundle of the root file system slot image of the last build.
#
#   image/rauc/bundle.sh [OUTDIR]             (default build/image; needs OUTDIR/rootfs.ext4)
#   image/rauc/bundle.sh OUTDIR NAME          (the slot OUTDIR/NAME-rootfs.ext4, e.g. fluxbox-test:
#                                              the test image's slot, for the update test)
#
# Writes OUTDIR/fluxbox-VERSION.raucb (format verity; a link fluxbox.raucb to it), or
# OUTDIR/NAME.raucb of OUTDIR/NAME-rootfs.ext4, signed with the key in
# build/image/pki (image/rauc/pki.sh makes a test CA there; the image trusts its CA).
# FLUXBOX_RAUC_CERT / FLUXBOX_RAUC_KEY sign with another key. The version is the slot's
# (IMAGE_VERSION in its os-release).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$(dirname "$HERE")")
OUT=$(realpath -m "${1:-$REPO/build/image}")
NAME=${2:-fluxbox}
PKI=$REPO/build/image/pki
ROOTFS=$OUT/rootfs.ext4
[ "$NAME" = fluxbox ] || ROOTFS=$OUT/$NAME-rootfs.ext4
[ -s "$ROOTFS" ] || { echo "bundle.sh: $ROOTFS missing: run make image (or make image-test)" >&2; exit 1; }
"$HERE/pki.sh" "$PKI"
CERT=${FLUXBOX_RAUC_CERT:-$PKI/signing.cert.pem}
KEY=${FLUXBOX_RAUC_KEY:-$PKI/signing.key.pem}
# The bundle's version is the slot's own (os-release IMAGE_VERSION, set by the build).
slotver=$(debugfs -R "cat /usr/lib/os-release" "$ROOTFS" 2>/dev/null | sed -n 's/^IMAGE_VERSION=//p')
[ -n "$slotver" ] || { echo "bundle.sh: no IMAGE_VERSION in $ROOTFS's os-release" >&2; exit 1; }
VERSION=${FLUXBOX_BUNDLE_VERSION:-$slotver}
W=$(mktemp -d /dev/shm/fluxbox-bundle.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir "$W/content"
cp --sparse=always "$ROOTFS" "$W/content/rootfs.ext4"
cat > "$W/content/manifest.raucm" <<MF
[update]
compatible=fluxbox-x86_64
version=$VERSION
description=Flux Box root file system
build=$(sha256sum < "$ROOTFS" | cut -c1-16)

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
MF
# Verify as the box will: the CA, and the codeSigning purpose its system.conf asks for.
cat > "$W/system.conf" <<CONF
[system]
compatible=fluxbox-x86_64
bootloader=noop

[keyring]
path=$PKI/ca.cert.pem
check-purpose=codesign
CONF
B=$OUT/fluxbox-$VERSION.raucb
[ "$NAME" = fluxbox ] || B=$OUT/$NAME.raucb
rm -f "$B"
# zstd: measured on the 1.5 GB slot, level 9 made a bundle of 248 MB in 18 s where
# mksquashfs's default (gzip) took 150 to 220 s for 265 MB; the box unpacks it faster too.
rauc --conf="$W/system.conf" bundle --cert="$CERT" --key="$KEY" \
    --mksquashfs-args="-comp zstd -Xcompression-level 9" "$W/content" "$B" >/dev/null
rauc --conf="$W/system.conf" info "$B" >/dev/null
[ "$NAME" = fluxbox ] && ln -sf "$(basename "$B")" "$OUT/fluxbox.raucb"
echo "bundle.sh: $B ($(du -h "$B" | cut -f1)), version $VERSION, signature verified"
