#!/bin/sh
# mmdebstrap customize hook ($1: the new root; FLUXBOX_LOCAL_REPO: the local repository's
# directory on the host). mmdebstrap's file-mirror-automount hook unmounts a file:// mirror but leaves its
# mount point: remove that empty path, so that no build-host directory (which differs
# between a build from the cache and one from exported inputs) ends up in the image.
set -eu
R="$1"
d="$R${FLUXBOX_LOCAL_REPO:?}"
while [ "$d" != "$R" ] && [ "$d" != "/" ] && rmdir "$d" 2>/dev/null; do
    d=$(dirname "$d")
done
