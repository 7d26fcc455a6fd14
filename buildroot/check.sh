#!/usr/bin/env bash
# Offline checks of the Buildroot external tree (run by `make buildroot-check`).
#
# usage: buildroot/check.sh BUILDROOT_DIR [OUTPUT_DIR]
#
# BUILDROOT_DIR is a Buildroot source tree (a release is best). Nothing is
# downloaded or built: the checks load the defconfig, list the packages and
# lint every file. With BUILDROOT_SOURCES=1 the PyPI sources of this tree's
# packages are downloaded too, which checks their URLs and hashes.
set -euo pipefail

EXT="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "${EXT}/.." && pwd)"
DEFCONFIG=fluxbox_x86_64_defconfig

usage() {
	cat <<'EOF'
buildroot-check: checks the Buildroot external tree in buildroot/ against a
Buildroot source tree, offline:
  1. every package of buildroot/package/ has a name Buildroot does not use;
  2. `make BR2_EXTERNAL=buildroot fluxbox_x86_64_defconfig` succeeds, with
     no Kconfig warning, and keeps every line of the defconfig;
  3. `make show-info` lists the appliance and every package it needs, and
     each dependency in pyproject.toml (with the hw extra) is enabled (a
     version outside pyproject.toml's range is reported);
  4. the files shared with image/ are there, the post-build script
     installs them into a scratch target directory, and the post-image
     script assembles disk.img from stand-in images with image/'s layout;
  5. `utils/check-package -b` passes on every file of buildroot/.

Give it a Buildroot source tree, for example a release tarball from
https://buildroot.org/downloads/ unpacked in /tmp/buildroot:

  make buildroot-check BUILDROOT=/tmp/buildroot

It needs python3-magic, flake8 and shellcheck (check-package), rsync and
cpio (Buildroot's own host checks): apt-get install python3-magic flake8
shellcheck rsync cpio. BUILDROOT_OUT=DIR keeps the output directory;
BUILDROOT_SOURCES=1 also downloads this tree's PyPI sources.
EOF
}

BR="${1:-}"
if [ -z "${BR}" ]; then
	usage
	exit 2
fi
if [ ! -f "${BR}/Makefile" ] || [ ! -x "${BR}/utils/check-package" ]; then
	echo "buildroot-check: ${BR} is not a Buildroot source tree" >&2
	exit 2
fi
BR="$(cd "${BR}" && pwd)"
OUT="${2:-}"
if [ -z "${OUT}" ]; then
	OUT="$(mktemp -d /tmp/fluxbox-br-out.XXXXXX)"
	trap 'rm -rf "${OUT}"' EXIT
fi
mkdir -p "${OUT}"
OUT="$(cd "${OUT}" && pwd)"

fails=0
pass() {
	echo "PASS  $*"
}
fail() {
	echo "FAIL  $*"
	fails=$((fails + 1))
}
warn() {
	echo "WARN  $*"
}

# check-package imports the python "magic" module: find a python3 that has it.
PY=""
for p in python3 /usr/bin/python3; do
	if command -v "${p}" >/dev/null 2>&1 && "${p}" -c 'import magic' 2>/dev/null; then
		PY="${p}"
		break
	fi
done
missing=""
[ -n "${PY}" ] || missing="${missing} python3-magic"
for tool in flake8 shellcheck rsync cpio; do
	command -v "${tool}" >/dev/null 2>&1 || missing="${missing} ${tool}"
done
if [ -n "${missing}" ]; then
	echo "buildroot-check: missing tools:${missing} (apt-get install${missing})" >&2
	exit 2
fi

BRMAKE=(make -s -C "${BR}" O="${OUT}" BR2_EXTERNAL="${EXT}")
echo "Buildroot $(make -s -C "${BR}" print-version 2>/dev/null || echo '(unknown version)') in ${BR}"
echo "output directory ${OUT}"

# 1. Package names: an external package with the name of one of Buildroot's
#    own makes `make` stop ("defined a second time"), and a Config.in symbol
#    of the same name is merged silently with Buildroot's.
clash=""
for d in "${EXT}"/package/*/; do
	name="$(basename "${d}")"
	if [ -e "${BR}/package/${name}" ]; then
		clash="${clash} ${name}"
	fi
done
if [ -z "${clash}" ]; then
	pass "package names are not used by Buildroot"
else
	fail "package names also used by Buildroot:${clash}"
fi

# 2. The defconfig loads offline, without Kconfig warnings, and keeps every
#    line (Kconfig drops a symbol whose dependencies are not met).
log="${OUT}/defconfig.log"
if "${BRMAKE[@]}" "${DEFCONFIG}" >"${log}" 2>&1; then
	pass "make ${DEFCONFIG}"
else
	fail "make ${DEFCONFIG}: see ${log}"
	cat "${log}"
fi
if grep -qi "warning" "${log}"; then
	fail "Kconfig warnings:"
	grep -i -A3 "warning" "${log}"
fi
dropped=0
while IFS= read -r line; do
	case "${line}" in
	"# BR2_"*" is not set")
		sym="${line#\# }"
		sym="${sym%% *}"
		if grep -q "^${sym}=" "${OUT}/.config"; then
			echo "      not kept: ${line}"
			dropped=$((dropped + 1))
		fi
		;;
	"" | "#"*) ;;
	*)
		if ! grep -qxF -- "${line}" "${OUT}/.config"; then
			echo "      not kept: ${line} (.config: $(grep "^${line%%=*}=" "${OUT}/.config" || echo unset))"
			dropped=$((dropped + 1))
		fi
		;;
	esac
done <"${EXT}/configs/${DEFCONFIG}"
if [ "${dropped}" -eq 0 ]; then
	pass "every line of the defconfig is in .config"
else
	fail "${dropped} line(s) of the defconfig were dropped"
fi

# 3. show-info lists the packages; pyproject.toml's dependencies are enabled.
if "${BRMAKE[@]}" show-info >"${OUT}/show-info.json" 2>"${OUT}/show-info.log"; then
	pass "make show-info"
else
	fail "make show-info: see ${OUT}/show-info.log"
	cat "${OUT}/show-info.log"
fi
"${PY}" - "${OUT}/show-info.json" "${OUT}/.config" "${REPO}/pyproject.toml" <<'PYEOF' || fails=$((fails + 1))
import json, re, sys
info_path, config_path, pyproject_path = sys.argv[1:4]
try:
    info = json.load(open(info_path))
except ValueError:
    print("FAIL  show-info did not give JSON")
    sys.exit(1)
config = open(config_path).read()
bad = 0
expected = [
    "fluxbox-appliance", "python-pydicom", "python-pynetdicom", "python-gpsd-py3",
    "python-pyjpegls", "python-pylibjpeg", "python-pylibjpeg-openjpeg",
    "python-prometheus-client", "python-lmdb", "python-pynacl", "python-psutil",
    "python-pyudev", "python-networkmanager", "dbus-python", "python-numpy", "python3",
    "gpsd", "network-manager", "modem-manager", "rauc", "host-rauc", "host-genimage",
    "systemd", "linux", "efibootmgr",
]
for name in expected:
    pkg = info.get(name)
    if pkg is None:
        print(f"FAIL  show-info does not list {name}")
        bad += 1
    else:
        print(f"      {name:28} {pkg.get('version', '')}")
print(f"{'PASS' if not bad else 'FAIL'}  show-info lists {len(info)} packages"
      f"{'' if not bad else f', {bad} expected one(s) missing'}")

# pyproject.toml: run-time dependencies and the hw extra -> Buildroot symbols.
text = open(pyproject_path).read()
def array(name, body):
    m = re.search(r"^" + name + r"\s*=\s*\[(.*?)\]", body, re.S | re.M)
    return re.findall(r'"([^"]+)"', m.group(1)) if m else []
project = text.split("[project]", 1)[1].split("\n[", 1)[0]
extras = text.split("[project.optional-dependencies]", 1)
deps = array("dependencies", project) + (array("hw", extras[1]) if len(extras) > 1 else [])
special = {"dbus_python": "BR2_PACKAGE_DBUS_PYTHON"}
def vtuple(v):
    return tuple(int(x) for x in re.findall(r"\d+", v)[:4])
def satisfies(version, spec):
    for op, want in re.findall(r"(>=|<=|==|!=|~=|<|>)\s*([0-9][0-9.]*)", spec):
        have, need = vtuple(version), vtuple(want)
        n = max(len(have), len(need))
        have, need = have + (0,) * (n - len(have)), need + (0,) * (n - len(need))
        ok = {">=": have >= need, "<=": have <= need, "==": have == need,
              "!=": have != need, "<": have < need, ">": have > need,
              "~=": have >= need}[op]
        if not ok:
            return False
    return True
missing, old = [], []
for req in deps:
    name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower()
    key = re.sub(r"[-_.]+", "_", name)
    sym = special.get(key) or "BR2_PACKAGE_PYTHON_" + re.sub(r"^python_", "", key).upper()
    if not re.search("^" + sym + "=y$", config, re.M):
        missing.append(f"{req} ({sym})")
        continue
    pkg = sym[len("BR2_PACKAGE_"):].lower().replace("_", "-")
    version = info.get(pkg, {}).get("version", "")
    if version and not satisfies(version, req[len(name):]):
        old.append(f"{req}: {pkg} is {version}")
if deps and not missing:
    print(f"PASS  the {len(deps)} dependencies of pyproject.toml (with hw) are enabled")
else:
    print("FAIL  pyproject.toml dependencies not enabled: " + (", ".join(missing) or "none found"))
    bad += 1
for line in old:
    print(f"WARN  version outside pyproject.toml's range: {line}")
sys.exit(1 if bad else 0)
PYEOF
version="$("${BRMAKE[@]}" printvars VARS=FLUXBOX_APPLIANCE_VERSION 2>/dev/null | sed -n 's/^FLUXBOX_APPLIANCE_VERSION=//p')"
want="$(sed -n 's/^version = "\([^"]*\)".*/\1/p' "${REPO}/pyproject.toml")"
if [ -n "${version}" ] && [ "${version}" = "${want}" ]; then
	pass "fluxbox-appliance version ${version} is pyproject.toml's"
else
	fail "fluxbox-appliance version '${version}', pyproject.toml '${want}'"
fi

# 4. Files shared with image/, and the post-build script on a scratch target.
for f in rootfs/usr/lib/systemd/system/fluxbox.service \
	rootfs/usr/lib/systemd/system/fluxbox-firstboot.service \
	rootfs/usr/lib/fluxbox/firstboot rootfs/etc/fstab; do
	if [ -f "${REPO}/image/${f}" ]; then
		pass "shared: image/${f}"
	else
		fail "shared file missing: image/${f}"
	fi
done
if grep -q '^FLUXBOX_UID=[0-9]' "${REPO}/image/hooks/customize.sh" 2>/dev/null; then
	pass "shared: the appliance's uid from image/hooks/customize.sh ($(sed -n 's/^FLUXBOX_UID=\([0-9]*\).*/\1/p' "${REPO}/image/hooks/customize.sh"))"
else
	warn "no FLUXBOX_UID in image/hooks/customize.sh: the Buildroot image uses uid 901"
fi
if [ -f "${REPO}/image/rauc/system.conf" ] || [ -f "${REPO}/image/rootfs/etc/rauc/system.conf" ]; then
	pass "shared: RAUC system.conf"
else
	warn "no RAUC system.conf in image/rauc/ or image/rootfs/etc/rauc/"
fi
scratch="${OUT}/post-build-target"
rm -rf "${scratch}"
mkdir -p "${scratch}/usr/bin" "${scratch}/usr/sbin" "${scratch}/etc"
printf '#!/usr/bin/python3\n' >"${scratch}/usr/bin/fluxbox"
printf '#!/bin/sh\n' >"${scratch}/usr/sbin/nft"
chmod 0755 "${scratch}/usr/bin/fluxbox" "${scratch}/usr/sbin/nft"
if BR2_EXTERNAL_FLUXBOX_PATH="${EXT}" "${EXT}/board/fluxbox/post-build.sh" "${scratch}" >"${OUT}/post-build.log" 2>&1 &&
	[ -s "${scratch}/usr/share/fluxbox/fluxbox.toml" ] &&
	[ -f "${scratch}/usr/lib/systemd/system/fluxbox.service" ] &&
	[ -f "${scratch}/usr/lib/systemd/system/nftables.service" ] &&
	[ -f "${scratch}/usr/lib/systemd/system/fluxbox-firewall.service" ] &&
	[ -f "${scratch}/etc/nftables.conf" ] &&
	[ -L "${scratch}/opt/fluxbox/bin/fluxbox" ]; then
	pass "post-build.sh installs the shared files into a scratch target"
else
	fail "post-build.sh on a scratch target:"
	cat "${OUT}/post-build.log"
fi

# The post-image script on stand-in images (a random kernel and boot
# loader, a small root file system): checks genimage.cfg and the layout
# read from image/mkdisk.sh. Needs genimage, mkdosfs, mcopy and mke2fs.
if command -v genimage >/dev/null 2>&1 && command -v mkdosfs >/dev/null 2>&1 &&
	command -v mcopy >/dev/null 2>&1 && command -v mke2fs >/dev/null 2>&1; then
	fake="${OUT}/post-image-test"
	rm -rf "${fake}"
	mkdir -p "${fake}/images/efi-part/EFI/BOOT" "${fake}/images/efi-part/loader/entries" \
		"${fake}/build" "${fake}/root/etc"
	head -c 65536 /dev/urandom >"${fake}/images/efi-part/EFI/BOOT/bootx64.efi"
	head -c 1048576 /dev/urandom >"${fake}/images/bzImage"
	echo fluxbox >"${fake}/root/etc/hostname"
	mke2fs -q -t ext4 -L rootfs -d "${fake}/root" "${fake}/images/rootfs.ext4" 16M >/dev/null
	if (cd "${BR}" && BR2_EXTERNAL_FLUXBOX_PATH="${EXT}" BUILD_DIR="${fake}/build" \
		BINARIES_DIR="${fake}/images" BR2_CONFIG="${OUT}/.config" TARGET_DIR="${fake}/target" \
		"${EXT}/board/fluxbox/post-image.sh" "${fake}/images") >"${OUT}/post-image.log" 2>&1 &&
		[ -f "${fake}/images/disk.img" ]; then
		pass "post-image.sh assembles disk.img from stand-in images"
		if grep -q "warning: no" "${OUT}/post-image.log"; then
			warn "layout values missing from image/mkdisk.sh (defaults used):"
			grep "warning: no" "${OUT}/post-image.log"
		else
			pass "shared: the disk layout from image/mkdisk.sh"
		fi
	else
		fail "post-image.sh on stand-in images:"
		tail -20 "${OUT}/post-image.log"
	fi
	rm -rf "${fake}"
else
	warn "post-image.sh not tried: needs genimage, dosfstools, mtools, e2fsprogs"
fi

# 5. check-package on every file of the external tree.
cd "${EXT}"
mapfile -t files < <(find . -type f ! -name '*.pyc' | LC_ALL=C sort)
if "${PY}" "${BR}/utils/check-package" -b "${files[@]}" >"${OUT}/check-package.log" 2>&1; then
	pass "utils/check-package -b on ${#files[@]} files ($(tr '\n' ' ' <"${OUT}/check-package.log"))"
else
	fail "utils/check-package -b:"
	cat "${OUT}/check-package.log"
fi
cd "${REPO}"

# Optional: download the PyPI sources (needs the network), checking hashes.
if [ "${BUILDROOT_SOURCES:-0}" = 1 ]; then
	pkgs=()
	for d in "${EXT}"/package/python-*/; do
		pkgs+=("$(basename "${d}")-source")
	done
	if "${BRMAKE[@]}" BR2_DL_DIR="${OUT}/dl" "${pkgs[@]}" >"${OUT}/sources.log" 2>&1; then
		pass "downloaded and hash-checked: ${pkgs[*]}"
		# The license files' hashes (Buildroot checks them in legal-info,
		# which needs host tools built from sources that are not on PyPI).
		lic_bad=0
		lic_n=0
		for d in "${EXT}"/package/python-*/; do
			pkg="$(basename "${d}")"
			hashfile="${d}${pkg}.hash"
			tarball="$(find "${OUT}/dl/${pkg}" -name '*.tar.gz' | head -n 1)"
			tmp="${OUT}/license-check"
			rm -rf "${tmp}"
			mkdir -p "${tmp}"
			tar -xzf "${tarball}" -C "${tmp}"
			top="$(find "${tmp}" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
			while read -r algo sum file; do
				[ "${algo}" = sha256 ] || continue
				[ "${file}" = "$(basename "${tarball}")" ] && continue
				lic_n=$((lic_n + 1))
				if [ "$(sha256sum "${top}/${file}" 2>/dev/null | cut -d' ' -f1)" != "${sum}" ]; then
					echo "      ${pkg}: ${file}: hash differs or file missing"
					lic_bad=$((lic_bad + 1))
				fi
			done < <(grep -v '^#' "${hashfile}")
			rm -rf "${tmp}"
		done
		if [ "${lic_bad}" -eq 0 ]; then
			pass "the ${lic_n} license file hashes match the sources"
		else
			fail "${lic_bad} license file hash(es) do not match"
		fi
	else
		fail "source download: see ${OUT}/sources.log"
		tail -20 "${OUT}/sources.log"
	fi
fi

if [ "${fails}" -eq 0 ]; then
	echo "buildroot-check: all checks passed"
else
	echo "buildroot-check: ${fails} check(s) failed"
	exit 1
fi
