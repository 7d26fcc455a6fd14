#!/usr/bin/env bash
# Index a directory of .deb files as a flat apt repository: Packages, and a Release naming
# its SHA256 (the repository is offered as trusted: apt checked each file when it was
# downloaded). Used for the build's .deb cache and for the exported inputs.
#
#   image/apt-index.sh ROOT DEB_DIR OUT_DIR LABEL SUITE
#
# Packages' Filename fields are DEB_DIR/...: the repository's root is ROOT.
set -euo pipefail
ROOT=$1 DEB_DIR=$2 OUT=$3 LABEL=$4 SUITE=$5
(cd "$ROOT" && dpkg-scanpackages --multiversion "$DEB_DIR" /dev/null 2>/dev/null) > "$OUT/Packages"
printf 'Origin: %s\nLabel: %s\nSuite: %s\nCodename: %s\nSHA256:\n %s %s Packages\n' \
    "$LABEL" "$LABEL" "$SUITE" "$SUITE" \
    "$(sha256sum < "$OUT/Packages" | cut -d' ' -f1)" "$(stat -c %s "$OUT/Packages")" \
    > "$OUT/Release"
