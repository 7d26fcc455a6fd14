#!/bin/sh
# mmdebstrap setup hook ($1: the new root): pin every Debian package to the version in
# FLUXBOX_LOCK (image/packages.lock, or what exported inputs installed), through apt
# preferences (priority 1001 also allows a downgrade). A pinned version that no source has
# is passed over by apt: the build then names it as drift. An empty lock pins nothing
# (image/lock.sh takes the mirror's versions that way).
set -eu
R="$1"
LOCK="${FLUXBOX_LOCK:?}"
mkdir -p "$R/etc/apt/preferences.d"
[ -s "$LOCK" ] || exit 0
awk '!/^#/ && NF == 2 { printf "Package: %s\nPin: version %s\nPin-Priority: 1001\n\n", $1, $2 }' \
    "$LOCK" > "$R/etc/apt/preferences.d/fluxbox-lock"
echo "pin.sh: $(grep -c '^Package:' "$R/etc/apt/preferences.d/fluxbox-lock") packages pinned"
