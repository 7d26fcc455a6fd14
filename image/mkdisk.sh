#!/bin/bash
# Make the disk image from the root file system tarball.
#
#   image/mkdisk.sh ROOTFS.tar OUTDIR NAME       NAME: fluxbox | fluxbox-test
#
# Writes OUTDIR/NAME.img (GPT, 4 partitions), OUTDIR/NAME.img.bmap, and for NAME=fluxbox the
# slot image OUTDIR/rootfs.ext4 (what a RAUC bundle carries) and OUTDIR/esp/ (boot files);
# for NAME=fluxbox-test the slot image OUTDIR/fluxbox-test-rootfs.ext4.
#
#   partition  PARTLABEL  size    file system  contents
#   1          esp        256 MiB vfat         systemd-boot, kernel + initrd of slot A (and B)
#   2          rootfs-a   1536 MiB ext4, ro    the root file system
#   3          rootfs-b   1536 MiB (empty)     the other slot, written by an update
#   4          data       1 GiB+  ext4         /data: store, key, config; grown to fill the disk
#
# Bit for bit the same from the same tarball and SOURCE_DATE_EPOCH: the tree is unpacked
# in a tmpfs (readdir order follows the tarball's sorted order), file systems get fixed
# UUIDs and hash seeds, e2fsprogs a fake time, inode times are clamped, vfat is made
# with --invariant and a fixed serial, and the GPT has fixed disk and partition UUIDs.
# fluxbox-test differs only by a root autologin on the serial console and a test config
# on the data partition (image/test/fluxbox.toml): never ship it.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TAR=$(realpath "$1"); OUT=$(realpath -m "$2"); NAME=$3
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:?}
export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
export LC_ALL=C.UTF-8 TZ=UTC
umask 022

ROOT_SIZE=1536M
ESP_SIZE=256M
DATA_SIZE=1024M
# Fixed identities (the 6a1e... prefix is arbitrary; only fixed matters).
UUID_DISK=6a1e0b0c-0000-4000-8000-000000000d15
UUID_PART_ESP=6a1e0b0c-0000-4000-8000-0000000000e5
UUID_PART_A=6a1e0b0c-0000-4000-8000-00000000000a
UUID_PART_B=6a1e0b0c-0000-4000-8000-00000000000b
UUID_PART_DATA=6a1e0b0c-0000-4000-8000-0000000000da
UUID_FS_ROOT=6a1e0b0c-0000-4000-8000-00000000f500
SEED_FS_ROOT=6a1e0b0c-0000-4000-8000-00000000f501
UUID_FS_DATA=6a1e0b0c-0000-4000-8000-00000000f5da
SEED_FS_DATA=6a1e0b0c-0000-4000-8000-00000000f5db
TYPE_ROOT_X86_64=4f68bce3-e8cd-4db1-96e7-fbcaf984b709
TYPE_LINUX=0fc63daf-8483-4772-8e79-3d69d8477de4
# panic=10: a kernel that panics reboots (and a slot on trial falls back to the committed one)
CMDLINE_COMMON="ro rootwait panic=10 console=tty0 console=ttyS0,115200 systemd.gpt_auto=0"

case $NAME in fluxbox|fluxbox-test) ;; *) echo "mkdisk.sh: NAME is fluxbox or fluxbox-test" >&2; exit 2 ;; esac
W=$(mktemp -d /dev/shm/fluxbox-disk.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/root" "$W/esp" "$W/data" "$W/empty" "$OUT"
ROOT=$W/root
tar -xpf "$TAR" -C "$ROOT" --numeric-owner --xattrs --xattrs-include='*'

if [ "$NAME" = fluxbox-test ]; then
    # Test image only: root logs in on the serial console without a password.
    install -d -m 0755 "$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d"
    printf '%s\n' '[Service]' 'ExecStart=' \
        'ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 - $TERM' \
        > "$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"
    sed -i 's/^root:[^:]*:/root::/' "$ROOT/etc/shadow"
    # the test config, where the first boot would otherwise put the default one
    install -d -m 0755 "$W/data/etc" "$W/data/etc/fluxbox"
    install -m 0644 "$HERE/test/fluxbox.toml" "$W/data/etc/fluxbox/fluxbox.toml"
    find "$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d" "$ROOT/etc/shadow" "$W/data" \
        -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    touch -h -d "@$SOURCE_DATE_EPOCH" "$ROOT/etc/systemd/system" "$ROOT/etc"
fi

# The ESP: systemd-boot (from the image's own pinned systemd-boot-efi), slot A's kernel.
KVER=$(ls "$ROOT/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -1)
[ -n "$KVER" ] || { echo "mkdisk.sh: no kernel in the root file system" >&2; exit 1; }
mkdir -p "$W/esp/EFI/BOOT" "$W/esp/loader/entries" "$W/esp/fluxbox/a"
cp "$ROOT/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$W/esp/EFI/BOOT/BOOTX64.EFI"
cp "$ROOT/boot/vmlinuz-$KVER" "$W/esp/fluxbox/a/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$W/esp/fluxbox/a/initrd.img"
printf 'default fluxbox-a.conf\ntimeout 0\neditor no\n' > "$W/esp/loader/loader.conf"
cat > "$W/esp/loader/entries/fluxbox-a.conf" <<EOF
title Flux Box (slot A)
version $KVER
linux /fluxbox/a/vmlinuz
initrd /fluxbox/a/initrd.img
options root=PARTLABEL=rootfs-a rauc.slot=A $CMDLINE_COMMON
EOF
find "$W/esp" "$W/data" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# The root file system: ext4, fixed UUID and hash seed, times clamped.
mke2fs -q -t ext4 -L rootfs -U "$UUID_FS_ROOT" -E "hash_seed=$SEED_FS_ROOT" -O ^has_journal \
    -m 0 -d "$ROOT" "$W/rootfs.ext4" "$ROOT_SIZE" > /dev/null
python3 "$HERE/imagetool.py" e2clamp "$W/rootfs.ext4" "$ROOT"
e2fsck -fn "$W/rootfs.ext4" >/dev/null 2>&1 || { echo "mkdisk.sh: e2fsck found errors in rootfs.ext4" >&2; exit 1; }

# The data partition: ext4 with a journal (it is written), empty or with the test config.
mke2fs -q -t ext4 -L data -U "$UUID_FS_DATA" -E "hash_seed=$SEED_FS_DATA,root_owner=0:0" \
    -d "$W/data" "$W/data.ext4" "$DATA_SIZE" > /dev/null
python3 "$HERE/imagetool.py" e2clamp "$W/data.ext4" "$W/data"

cat > "$W/genimage.cfg" <<EOF
image esp.vfat {
  vfat {
    extraargs = "--invariant -i 464c5842 -n ESP"
    files = { "EFI", "loader", "fluxbox" }
  }
  size = $ESP_SIZE
}
image $NAME.img {
  hdimage {
    partition-table-type = "gpt"
    align = 1M
    disk-uuid = "$UUID_DISK"
  }
  partition esp {
    partition-type-uuid = "U"
    partition-uuid = "$UUID_PART_ESP"
    image = "esp.vfat"
    bootable = true
  }
  partition rootfs-a {
    partition-type-uuid = "$TYPE_ROOT_X86_64"
    partition-uuid = "$UUID_PART_A"
    image = "$W/rootfs.ext4"
    size = $ROOT_SIZE
  }
  partition rootfs-b {
    partition-type-uuid = "$TYPE_ROOT_X86_64"
    partition-uuid = "$UUID_PART_B"
    size = $ROOT_SIZE
  }
  partition data {
    partition-type-uuid = "$TYPE_LINUX"
    partition-uuid = "$UUID_PART_DATA"
    image = "$W/data.ext4"
  }
}
EOF
rm -f "$OUT/$NAME.img"
genimage --config "$W/genimage.cfg" --rootpath "$W/empty" --inputpath "$W/esp" \
    --outputpath "$W/out" --tmppath "$W/tmp" > "$W/genimage.log" 2>&1 \
    || { cat "$W/genimage.log" >&2; exit 1; }
mv "$W/out/$NAME.img" "$OUT/$NAME.img"
if command -v bmaptool >/dev/null; then
    bmaptool create -o "$OUT/$NAME.img.bmap" "$OUT/$NAME.img"
    # the bmap's own checksum is over its text, which is deterministic; nothing to strip
fi
if [ "$NAME" = fluxbox ]; then
    mv "$W/rootfs.ext4" "$OUT/rootfs.ext4"
    rm -rf "$OUT/esp" && cp -a "$W/esp" "$OUT/esp"
else
    mv "$W/rootfs.ext4" "$OUT/$NAME-rootfs.ext4"   # what a test bundle carries
fi
