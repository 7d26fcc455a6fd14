#!/bin/bash
# Make a variant of a slot image for the update test: another IMAGE_VERSION, and optionally
# an appliance that cannot start (its `fluxbox` command exits 1: the slot boots, the service
# fails, and the box must fall back to its old slot).
#
#   image/rauc/testslot.sh SRC.ext4 DST.ext4 VERSION [broken]
#
# VERSION starting with "-" is appended to SRC's version (e.g. -update: 0.1.0+gabc-update).
# Edits the copy offline with debugfs; never ship one.
set -euo pipefail
SRC=$1; DST=$2; VERSION=$3; KIND=${4:-good}
case $KIND in good|broken) ;; *) echo "testslot.sh: KIND is good or broken" >&2; exit 2 ;; esac
[ -s "$SRC" ] || { echo "testslot.sh: $SRC missing: run make image-test first" >&2; exit 1; }
W=$(mktemp -d "$(dirname "$(realpath -m "$DST")")/.testslot.XXXXXX")  # beside DST: 1.5 GiB sparse
trap 'rm -rf "$W"' EXIT
cp --sparse=always "$SRC" "$W/slot.ext4"
debugfs -R "cat /usr/lib/os-release" "$W/slot.ext4" 2>/dev/null > "$W/os-release.src"
base=$(sed -n 's/^IMAGE_VERSION=//p' "$W/os-release.src")
case $VERSION in -*) VERSION=$base$VERSION ;; esac
[ -n "$base" ] || { echo "testslot.sh: no IMAGE_VERSION in $SRC's os-release" >&2; exit 1; }
sed "s/^IMAGE_VERSION=.*/IMAGE_VERSION=$VERSION/" "$W/os-release.src" > "$W/os-release"
chmod 0644 "$W/os-release"
{
    echo "rm /usr/lib/os-release"
    echo "write $W/os-release /usr/lib/os-release"
    echo "sif /usr/lib/os-release uid 0"
    echo "sif /usr/lib/os-release gid 0"
} > "$W/cmds"
if [ "$KIND" = broken ]; then
    printf '#!/bin/sh\necho "fluxbox: deliberately broken build (update test)" >&2\nexit 1\n' \
        > "$W/fluxbox"
    chmod 0755 "$W/fluxbox"
    {
        echo "rm /opt/fluxbox/bin/fluxbox"
        echo "write $W/fluxbox /opt/fluxbox/bin/fluxbox"
        echo "sif /opt/fluxbox/bin/fluxbox uid 0"
        echo "sif /opt/fluxbox/bin/fluxbox gid 0"
    } >> "$W/cmds"
fi
debugfs -w -f "$W/cmds" "$W/slot.ext4" > "$W/debugfs.log" 2>&1
if grep -qiE "error|not found|no free" "$W/debugfs.log"; then cat "$W/debugfs.log" >&2; exit 1; fi
e2fsck -fn "$W/slot.ext4" > /dev/null 2>&1 || { echo "testslot.sh: e2fsck failed on the variant" >&2; exit 1; }
mv "$W/slot.ext4" "$DST"
echo "testslot.sh: $DST ($KIND, version $VERSION)"
