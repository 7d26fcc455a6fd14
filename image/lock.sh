#!/bin/bash
# Refresh the image's lock files from PyPI and the Debian mirror (security updates).
#
#   image/lock.sh        (make image-lock; make image-refresh also builds and tests the image)
#
#   image/requirements.txt        the appliance's Python dependencies (pyproject.toml, extra
#                                 hw; dbus-python comes from Debian), every file's hash
#   image/build-requirements.txt  pip, setuptools, wheel for the build
#   image/test-requirements.txt   what image/vmtest.py adds to the test venv
#   image/packages.lock           every Debian package and version of the root file system,
#                                 from a build that pins nothing, with the time it was taken
#                                 (the snapshot archive's timestamp for these versions)
# Review the diff, then commit the four files.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
for v in $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p'); do
    case $v in PIP_CERT|PIP_DEFAULT_TIMEOUT) ;; *) unset "$v" ;; esac
done
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
TOOLS=$REPO/build/image/cache/locktools
PIP_TOOLS=pip-tools==7.6.2
grep -qx "$PIP_TOOLS" "$TOOLS/.version" 2>/dev/null || {
    rm -rf "$TOOLS"; /usr/bin/python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q "$PIP_TOOLS"
    echo "$PIP_TOOLS" > "$TOOLS/.version"
}
cd "$REPO"
# --upgrade: the newest versions pyproject.toml allows, security updates included.
"$TOOLS/bin/pip-compile" -q --upgrade --generate-hashes --extra hw --unsafe-package dbus-python \
    --strip-extras --no-header -o image/requirements.txt pyproject.toml
(cd image && "$TOOLS/bin/pip-compile" -q --upgrade --generate-hashes --allow-unsafe --strip-extras \
    --no-header -o build-requirements.txt build-requirements.in)
(cd image && "$TOOLS/bin/pip-compile" -q --upgrade --generate-hashes --strip-extras --no-header \
    -o test-requirements.txt test-requirements.in)
# A build that pins nothing takes the mirror's current versions; its dpkg list is the lock.
taken=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$REPO/build/image/lock-build
# (none of the caller's build settings: no exported inputs, no snapshot, no strictness)
if ! env -u FLUXBOX_INPUTS -u FLUXBOX_OFFLINE -u FLUXBOX_SNAPSHOT -u FLUXBOX_LOCK_STRICT \
        FLUXBOX_UNPINNED=1 image/build.sh "$OUT"; then
    echo "lock.sh: the build failed; image/packages.lock left as it was" >&2; exit 1
fi
python3 image/imagetool.py lock "$OUT/dpkg.tsv" "$taken" > image/packages.lock
rm -rf "$OUT"
echo "lock.sh: image/packages.lock: $(grep -vc '^#' image/packages.lock) packages, snapshot $taken"
git -C "$REPO" diff --stat -- image/requirements.txt image/build-requirements.txt \
    image/test-requirements.txt image/packages.lock || true
echo "lock.sh: review the diff, then: git commit image/packages.lock image/*requirements.txt"
