#!/usr/bin/env bash
# Buildroot post-image script: lay out the EFI system partition and
# assemble disk.img with board/fluxbox/genimage.cfg, in the layout of the
# image built from distribution packages (image/mkdisk.sh). With
# FLUXBOX_RAUC_CERT and FLUXBOX_RAUC_KEY set, also sign an update bundle.
#
# $1: the images directory. Run from the Buildroot source tree, with
# BR2_EXTERNAL_FLUXBOX_PATH, BUILD_DIR and TARGET_DIR from Buildroot.
set -euo pipefail

BOARD_DIR="$(cd "$(dirname "$0")" && pwd)"
EXT="${BR2_EXTERNAL_FLUXBOX_PATH:-$(cd "${BOARD_DIR}/../.." && pwd)}"
REPO="$(cd "${EXT}/.." && pwd)"
MKDISK="${REPO}/image/mkdisk.sh"
BIN="${1:?usage: post-image.sh BINARIES_DIR}"
ESP="${BIN}/efi-part"

die() {
	echo "post-image.sh: $*" >&2
	exit 1
}

# The layout's values, read (not run) from image/mkdisk.sh: only plain
# NAME=value assignments at the start of a line. The defaults here are
# the values it had when this script was written.
declare -A LAYOUT=(
	[ROOT_SIZE]=1536M
	[ESP_SIZE]=256M
	[DATA_SIZE]=1024M
	[UUID_DISK]=6a1e0b0c-0000-4000-8000-000000000d15
	[UUID_PART_ESP]=6a1e0b0c-0000-4000-8000-0000000000e5
	[UUID_PART_A]=6a1e0b0c-0000-4000-8000-00000000000a
	[UUID_PART_B]=6a1e0b0c-0000-4000-8000-00000000000b
	[UUID_PART_DATA]=6a1e0b0c-0000-4000-8000-0000000000da
	[UUID_FS_DATA]=6a1e0b0c-0000-4000-8000-00000000f5da
	[SEED_FS_DATA]=6a1e0b0c-0000-4000-8000-00000000f5db
	[TYPE_ROOT_X86_64]=4f68bce3-e8cd-4db1-96e7-fbcaf984b709
	[TYPE_LINUX]=0fc63daf-8483-4772-8e79-3d69d8477de4
	[CMDLINE_COMMON]="ro rootwait panic=10 console=tty0 console=ttyS0,115200 systemd.gpt_auto=0"
)
for name in "${!LAYOUT[@]}"; do
	value=""
	if [ -f "${MKDISK}" ]; then
		value="$(sed -n "s/^${name}=\(.*\)$/\1/p" "${MKDISK}" | tail -n 1)"
		value="${value#\"}"
		value="${value%\"}"
	fi
	case "${value}" in
	"")
		echo "post-image.sh: warning: no ${name} in ${MKDISK}: using ${LAYOUT[${name}]}"
		value="${LAYOUT[${name}]}"
		;;
	*'$'* | *'`'*) die "${name} in ${MKDISK} is not a plain value: ${value}" ;;
	esac
	export "FLUXBOX_${name}=${value}"
done

[ -f "${ESP}/EFI/BOOT/bootx64.efi" ] ||
	die "no systemd-boot in ${ESP}: enable BR2_PACKAGE_SYSTEMD_BOOT"
[ -f "${BIN}/bzImage" ] || die "no kernel image ${BIN}/bzImage"
[ -f "${BIN}/rootfs.ext4" ] || die "no root file system ${BIN}/rootfs.ext4"

# The ESP: systemd-boot (put there by the systemd package), the loader
# configuration and slot A's entry as image/mkdisk.sh writes them, and
# slot A's kernel (no initrd: the kernel has what it needs built in).
rm -f "${ESP}/loader/entries/buildroot.conf"
install -d -m 0755 "${ESP}/loader/entries" "${ESP}/fluxbox/a"
install -m 0644 "${BIN}/bzImage" "${ESP}/fluxbox/a/vmlinuz"
printf 'default fluxbox-a.conf\ntimeout 0\neditor no\n' >"${ESP}/loader/loader.conf"
cat >"${ESP}/loader/entries/fluxbox-a.conf" <<ENTRY
title Flux Box (slot A)
linux /fluxbox/a/vmlinuz
options root=PARTLABEL=rootfs-a rauc.slot=A ${FLUXBOX_CMDLINE_COMMON}
ENTRY

support/scripts/genimage.sh -c "${BOARD_DIR}/genimage.cfg"

# An update bundle, only when a signing certificate and key are given.
if [ -n "${FLUXBOX_RAUC_CERT:-}" ] && [ -n "${FLUXBOX_RAUC_KEY:-}" ]; then
	conf="${TARGET_DIR}/etc/rauc/system.conf"
	[ -f "${conf}" ] || die "no ${conf}: cannot tell the bundle's compatible string"
	compatible="$(sed -n 's/^compatible=//p' "${conf}")"
	version="$(sed -n 's/^version = "\([^"]*\)".*/\1/p' "${REPO}/pyproject.toml")"
	work="${BUILD_DIR}/fluxbox-bundle"
	rm -rf "${work}"
	mkdir -p "${work}"
	cp "${BIN}/rootfs.ext4" "${BIN}/esp.vfat" "${work}/"
	cat >"${work}/manifest.raucm" <<MANIFEST
[update]
compatible=${compatible}
version=${version}

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4

[image.efi]
filename=esp.vfat
MANIFEST
	rm -f "${BIN}/fluxbox-${version}.raucb"
	rauc bundle --cert="${FLUXBOX_RAUC_CERT}" --key="${FLUXBOX_RAUC_KEY}" \
		"${work}" "${BIN}/fluxbox-${version}.raucb"
	rm -rf "${work}"
fi
