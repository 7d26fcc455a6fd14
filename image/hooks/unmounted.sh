#!/bin/sh
# mmdebstrap customize hook ($1: the new root; FLUXBOX_LOCAL_REPO: the fixed path at which
# image/build.sh offers its local repository). mmdebstrap's file-mirror-automount hook
# unmounts a file:// mirror but leaves its mount point: remove it, and only it (its parent
# is Debian's /srv), so the image is the same whether a local repository was used or not.
set -eu
R="$1"
rmdir "$R${FLUXBOX_LOCAL_REPO:?}" 2>/dev/null || true
