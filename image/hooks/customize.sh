#!/bin/sh
# mmdebstrap customize hook ($1: the new root, all packages installed). Adds the appliance:
# the image's own files (image/rootfs/), the `fluxbox` user, the venv in /opt/fluxbox from
# the hash-checked wheelhouse, the default config, the units, and the initramfs.
# Environment (set by image/build.sh): FLUXBOX_IMAGE (image/), FLUXBOX_WHEELS (wheelhouse
# with install.txt), FLUXBOX_REPO (the source tree), FLUXBOX_STATE (where to leave lists).
set -eu
R="$1"
IMG="${FLUXBOX_IMAGE:?}"; WHL="${FLUXBOX_WHEELS:?}"; STATE="${FLUXBOX_STATE:?}"; REPO="${FLUXBOX_REPO:?}"
FLUXBOX_UID=901

# The image's own files: modes from the tree (only the executable bit counts), owned by root.
(cd "$IMG/rootfs" && find . -mindepth 1 | LC_ALL=C sort) | while read -r p; do
    src="$IMG/rootfs/$p"; dst="$R/$p"
    if [ -d "$src" ]; then install -d -m 0755 "$dst"
    elif [ -x "$src" ]; then install -m 0755 "$src" "$dst"
    else install -m 0644 "$src" "$dst"; fi
done

# The appliance's user, with fixed ids: the data partition outlives any one root file system.
chroot "$R" groupadd --system --gid "$FLUXBOX_UID" fluxbox
chroot "$R" useradd --system --uid "$FLUXBOX_UID" --gid fluxbox --home-dir /var/lib/fluxbox \
    --no-create-home --shell /usr/sbin/nologin --comment "Flux Box appliance" fluxbox

# The venv: Debian's python3, its python3-dbus through the system site packages, and the
# pinned wheels, installed offline with every hash checked, by the pinned pip.
mkdir -p "$R/tmp/wheels"
cp "$WHL"/*.whl "$WHL/install.txt" "$R/tmp/wheels/"
chroot "$R" /usr/bin/python3 -m venv --system-site-packages --without-pip /opt/fluxbox
PIPWHL=$(cd "$R/tmp/wheels" && ls pip-*.whl)
chroot "$R" /opt/fluxbox/bin/python "/tmp/wheels/$PIPWHL/pip" install --quiet --no-index \
    --no-cache-dir --disable-pip-version-check --find-links /tmp/wheels --require-hashes \
    --no-deps --no-compile --only-binary=:all: -r /tmp/wheels/install.txt
chroot "$R" /opt/fluxbox/bin/python "/tmp/wheels/$PIPWHL/pip" check --disable-pip-version-check \
    || { echo "customize.sh: pip check failed" >&2; exit 1; }
chroot "$R" /opt/fluxbox/bin/python -m compileall -q -j1 --invalidation-mode checked-hash /opt/fluxbox/lib
chroot "$R" /opt/fluxbox/bin/python - <<'PY'
import appliance.cli, hw.gps, hw.network, hw.modem, hw.udev, dbus, gpsd, pydicom, pynetdicom
print("customize.sh: the appliance and its hardware adapters import")
PY
rm -rf "$R/tmp/wheels"
ln -s /opt/fluxbox/bin/fluxbox "$R/usr/local/bin/fluxbox"

# The default config: the appliance's embedded default, on port 104 with data in /var/lib.
mkdir -p "$R/usr/share/fluxbox"
python3 "$IMG/imagetool.py" default-config "$REPO/appliance/default.toml" > "$R/usr/share/fluxbox/fluxbox.toml"
chroot "$R" /opt/fluxbox/bin/fluxbox check-config /usr/share/fluxbox/fluxbox.toml
install -m 0644 "$REPO/README.md" "$R/usr/share/fluxbox/README.md"
install -m 0644 "$IMG/README.md" "$R/usr/share/fluxbox/IMAGE.md"

# The firewall: /etc/nftables.conf (from image/rootfs/) closes everything but loopback;
# fluxbox-firewall.service opens the ports where the config listens. Check both here.
chroot "$R" /usr/sbin/nft -c -f /etc/nftables.conf
chroot "$R" /opt/fluxbox/bin/fluxbox firewall --config /usr/share/fluxbox/fluxbox.toml >/dev/null

# Mount points on the read-only root.
install -d -m 0755 "$R/data" "$R/var/lib/fluxbox" "$R/var/lib/fluxbox-key" "$R/etc/fluxbox" \
    "$R/var/lib/NetworkManager" "$R/etc/NetworkManager/system-connections"

# apt's sources name the mirror, not the build's local repository of its .deb cache.
printf '%s\n' "${FLUXBOX_SOURCES_LIST:?}" > "$R/etc/apt/sources.list"

# The firmware's name and version in os-release: `fluxbox status` and `rauc status` show it.
# (Debian's file has no final newline.)
[ -z "$(tail -c1 "$R/usr/lib/os-release")" ] || echo >> "$R/usr/lib/os-release"
printf 'IMAGE_ID=fluxbox\nIMAGE_VERSION=%s\n' "${FLUXBOX_IMAGE_VERSION:?}" >> "$R/usr/lib/os-release"

# RAUC: the CA whose bundles this image installs.
install -m 0644 "${FLUXBOX_RAUC_KEYRING:?}" "$R/etc/rauc/ca.cert.pem"

# Services.
chroot "$R" systemctl enable fluxbox.service NetworkManager.service ModemManager.service \
    gpsd.service gpsd.socket systemd-timesyncd.service fluxbox-mark-good.service \
    fluxbox-led.service fluxbox-console@tty1.service nftables.service fluxbox-firewall.service
# tty1 is the front panel: no login prompt there (tty2 and the serial console have one).
chroot "$R" systemctl disable getty@tty1.service 2>/dev/null || true
chroot "$R" systemctl mask getty@tty1.service autovt@tty1.service
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
    chroot "$R" systemctl disable "$unit" 2>/dev/null || true
done

# Read-only root: no machine id in the image (systemd makes a transient one at each boot),
# resolv.conf from NetworkManager in /run, and /etc and /var already "updated" so that no
# unit tries to write them at boot.
: > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"
ln -sf /run/NetworkManager/resolv.conf "$R/etc/resolv.conf"
for d in etc var; do
    printf 'TIMESTAMP_NSEC=%s000000000\n' "$SOURCE_DATE_EPOCH" > "$R/$d/.updated"
    touch -d "@$SOURCE_DATE_EPOCH" "$R/$d/.updated"
done
passwd_lock=$(chroot "$R" passwd -S root | awk '{print $2}')
[ "$passwd_lock" = L ] || chroot "$R" passwd -l root >/dev/null

# Initramfs: the overlay module, and the /var overlay script.
grep -qx overlay "$R/etc/initramfs-tools/modules" || echo overlay >> "$R/etc/initramfs-tools/modules"
chroot "$R" update-initramfs -u -k all

# Lists for the lock file and the SBOM; nothing else of the build stays in the image.
chroot "$R" dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n' \
    | LC_ALL=C sort > "$STATE/dpkg.tsv"
rm -f "$R/etc/apt/preferences.d/fluxbox-lock"
# (apt's auto-installed marks too: they depend on how the packages were named to apt, which
# an offline build does differently, and nothing installs packages on the read-only root)
rm -rf "$R/var/lib/apt/extended_states" "$R/var/log/apt" "$R/var/log/dpkg.log" "$R/var/log/alternatives.log" "$R/var/log/bootstrap.log" \
    "$R/var/cache/ldconfig/aux-cache" "$R/var/lib/dpkg/"*-old "$R/var/cache/debconf/"*-old
find "$R/opt/fluxbox" -name direct_url.json -delete
