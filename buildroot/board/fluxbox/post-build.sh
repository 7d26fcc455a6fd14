#!/usr/bin/env bash
# Buildroot post-build script: put the appliance's system files into the
# target, taking them from image/ (shared with the image built from
# distribution packages) so that both images boot the same units,
# mounts and default configuration.
#
# $1: the target directory. Buildroot exports BR2_EXTERNAL_FLUXBOX_PATH.
set -euo pipefail

TARGET="${1:?usage: post-build.sh TARGET_DIR}"
EXT="${BR2_EXTERNAL_FLUXBOX_PATH:-$(cd "$(dirname "$0")/../.." && pwd)}"
REPO="$(cd "${EXT}/.." && pwd)"
IMAGE="${REPO}/image"

die() {
	echo "post-build.sh: $*" >&2
	exit 1
}
note() {
	echo "post-build.sh: $*"
}

[ -d "${IMAGE}/rootfs" ] || die "${IMAGE}/rootfs is missing: the units, fstab and first-boot script come from there"

# 1. image/rootfs/: the image's own files, mode from the tree (only the
#    executable bit counts). The initramfs hooks are for the distribution
#    image; here the read-only root gets its RAM /var from systemd
#    (BR2_INIT_SYSTEMD_VAR_OVERLAYFS) instead.
(cd "${IMAGE}/rootfs" && find . -mindepth 1 | LC_ALL=C sort) | while read -r p; do
	case "${p}" in
	./etc/initramfs-tools | ./etc/initramfs-tools/*) continue ;;
	esac
	src="${IMAGE}/rootfs/${p}"
	dst="${TARGET}/${p}"
	if [ -d "${src}" ]; then
		install -d -m 0755 "${dst}"
	elif [ -x "${src}" ]; then
		install -m 0755 "${src}" "${dst}"
	else
		install -m 0644 "${src}" "${dst}"
	fi
done

for f in usr/lib/systemd/system/fluxbox.service \
	usr/lib/systemd/system/fluxbox-firstboot.service \
	usr/lib/fluxbox/firstboot etc/fstab; do
	[ -e "${TARGET}/${f}" ] || die "image/rootfs/${f} is missing"
done

# 2. The units run /opt/fluxbox/bin/fluxbox (the virtual environment of the
#    distribution image); here the appliance is installed in the system
#    Python, its command in /usr/bin.
[ -x "${TARGET}/usr/bin/fluxbox" ] || die "/usr/bin/fluxbox is missing: is BR2_PACKAGE_FLUXBOX_APPLIANCE enabled?"
install -d -m 0755 "${TARGET}/opt/fluxbox/bin"
ln -sfn ../../../usr/bin/fluxbox "${TARGET}/opt/fluxbox/bin/fluxbox"

# 3. The default configuration, copied to /etc/fluxbox/fluxbox.toml on the
#    data partition at the first boot (usr/lib/fluxbox/firstboot). It is
#    made from the appliance's embedded default by image/'s own tool, or
#    taken as a file if image/ ships one.
install -d -m 0755 "${TARGET}/usr/share/fluxbox"
if [ -f "${IMAGE}/rootfs/usr/share/fluxbox/fluxbox.toml" ]; then
	: # already copied with image/rootfs/
elif [ -f "${IMAGE}/fluxbox.toml" ]; then
	install -m 0644 "${IMAGE}/fluxbox.toml" "${TARGET}/usr/share/fluxbox/fluxbox.toml"
elif [ -f "${IMAGE}/imagetool.py" ]; then
	python3 "${IMAGE}/imagetool.py" default-config "${REPO}/appliance/default.toml" \
		>"${TARGET}/usr/share/fluxbox/fluxbox.toml.tmp"
	mv "${TARGET}/usr/share/fluxbox/fluxbox.toml.tmp" "${TARGET}/usr/share/fluxbox/fluxbox.toml"
else
	die "no default config: image/ has neither fluxbox.toml nor imagetool.py"
fi
[ -s "${TARGET}/usr/share/fluxbox/fluxbox.toml" ] || die "the default config is empty"
install -m 0644 "${REPO}/README.md" "${TARGET}/usr/share/fluxbox/README.md"
if [ -f "${IMAGE}/README.md" ]; then
	install -m 0644 "${IMAGE}/README.md" "${TARGET}/usr/share/fluxbox/IMAGE.md"
fi

# 4. Mount points on the read-only root (see image/rootfs/etc/fstab).
install -d -m 0755 "${TARGET}/data" "${TARGET}/var/lib/fluxbox" \
	"${TARGET}/var/lib/fluxbox-key" "${TARGET}/etc/fluxbox" \
	"${TARGET}/var/lib/NetworkManager" \
	"${TARGET}/etc/NetworkManager/system-connections"

# 5. RAUC: the system configuration and keyring, if image/ has them.
for dir in "${IMAGE}/rauc" "${IMAGE}/rootfs/etc/rauc"; do
	if [ -f "${dir}/system.conf" ]; then
		install -d -m 0755 "${TARGET}/etc/rauc"
		install -m 0644 "${dir}/system.conf" "${TARGET}/etc/rauc/system.conf"
		for pem in "${dir}"/*.cert.pem "${dir}"/*.crt; do
			if [ -f "${pem}" ]; then
				install -m 0644 "${pem}" "${TARGET}/etc/rauc/"
			fi
		done
		break
	fi
done
[ -f "${TARGET}/etc/rauc/system.conf" ] ||
	note "warning: no RAUC system.conf in image/rauc or image/rootfs/etc/rauc: the image cannot install updates"

# 6. Read-only root: resolv.conf from NetworkManager in /run (see
#    image/rootfs/etc/NetworkManager/conf.d/), no machine id in the image.
ln -sfn /run/NetworkManager/resolv.conf "${TARGET}/etc/resolv.conf"
: >"${TARGET}/etc/machine-id"

# 7. The firewall: fluxbox-firewall.service needs nftables.service to load
#    /etc/nftables.conf first. Debian ships that unit; Buildroot's nftables
#    package does not, so the board gives one.
[ -x "${TARGET}/usr/sbin/nft" ] || die "/usr/sbin/nft is missing: is BR2_PACKAGE_NFTABLES enabled?"
if [ ! -e "${TARGET}/usr/lib/systemd/system/nftables.service" ]; then
	install -m 0644 "${EXT}/board/fluxbox/nftables.service" \
		"${TARGET}/usr/lib/systemd/system/nftables.service"
fi

note "installed the appliance's system files from ${IMAGE}"
