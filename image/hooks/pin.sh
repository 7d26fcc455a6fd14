#!/bin/sh
# mmdebstrap setup hook ($1: the new root): pin every Debian package to the version in
# image/packages.lock, through apt preferences (priority 1001 also allows a downgrade).
# Without a lock file (the first build) nothing is pinned and the build writes one.
set -eu
R="$1"
LOCK="${FLUXBOX_LOCK:?}"
mkdir -p "$R/etc/apt/preferences.d"
[ -s "$LOCK" ] || exit 0
awk '!/^#/ && NF == 2 { printf "Package: %s\nPin: version %s\nPin-Priority: 1001\n\n", $1, $2 }' \
    "$LOCK" > "$R/etc/apt/preferences.d/fluxbox-lock"
echo "pin.sh: $(grep -c '^Package:' "$R/etc/apt/preferences.d/fluxbox-lock") packages pinned"
