#!/bin/bash
# Build the image twice from the same inputs and compare the results bit for bit.
#
#   image/check.sh [OUTDIR]      (default build/image; the builds go to OUTDIR/check/{1,2})
#
# The first build is an ordinary one (the network, the caches) and exports its inputs: the
# image in OUTDIR that `make image` made (the Makefile builds it first), or, without one, a
# build into OUTDIR/check/1. The second is what an installer does years later on another
# machine: a clean build directory (an empty cache), the exported inputs alone
# (FLUXBOX_INPUTS), and no network at all (a network namespace of its own). Both use the same
# SOURCE_DATE_EPOCH (the second takes it from the inputs' MANIFEST). On a difference it says which partition, and which files of the root
# file system, differ. Each build writes its SBOM next to its image; the first build's
# image, bmap, SBOM and inputs are kept, the second's large files are removed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
OUT=$(realpath -m "${1:-$REPO/build/image}")
C=$OUT/check
rm -rf "$C"; mkdir -p "$C"
t0=$(date +%s)
lock_before=$(sha256sum < "$HERE/packages.lock")
REF=$OUT
if [ -s "$OUT/fluxbox.img.sha256" ] && [ -s "$OUT/inputs/MANIFEST" ]; then
    echo "build 1: $OUT (make image), $(cut -c1-64 "$OUT/fluxbox.img.sha256")"
    first=2
else
    REF=$C/1
    first=1
fi
for n in $(seq $first 2); do
    s=$(date +%s)
    if [ $n = 1 ]; then
        build=("$HERE/build.sh")
    else
        build=(env FLUXBOX_INPUTS="$REF/inputs" FLUXBOX_CACHE="$C/2-cache" unshare --net "$HERE/build.sh")
    fi
    "${build[@]}" "$C/$n" > "$C/build-$n.log" 2>&1 || { tail -40 "$C/build-$n.log"; echo "check.sh: build $n failed" >&2; exit 1; }
    echo "build $n$([ $n = 2 ] && echo ' (exported inputs only, empty cache, no network)'): $(( $(date +%s) - s )) s, $(cut -c1-64 "$C/$n/fluxbox.img.sha256")"
done

status=0
for f in fluxbox.img fluxbox.img.bmap rootfs.ext4 rootfs.tar fluxbox.spdx.json sbom.txt drift.txt; do
    if cmp -s "$REF/$f" "$C/2/$f"; then
        echo "same: $f ($(sha256sum < "$REF/$f" | cut -c1-16))"
    else
        echo "DIFFERENT: $f"; status=1
    fi
done
if [ $status != 0 ]; then
    echo "-- differences in the root file system tarballs:"
    python3 - "$REF/rootfs.tar" "$C/2/rootfs.tar" <<'PY' | head -40
import hashlib, sys, tarfile
def load(p):
    d = {}
    with tarfile.open(p) as t:
        for m in t:
            h = hashlib.sha256(t.extractfile(m).read()).hexdigest()[:16] if m.isfile() else None
            d[m.name] = (m.type, oct(m.mode), m.uid, m.gid, m.uname, m.gname, m.mtime, m.size,
                         m.linkname, m.devmajor, m.devminor, sorted(m.pax_headers.items()), h)
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
print("same member order:", list(a) == list(b))
for k in sorted(set(a) | set(b)):
    if a.get(k) != b.get(k):
        print("  ", k, a.get(k), b.get(k))
PY
    echo "-- differing 1 MiB blocks of the disk image, by partition:"
    python3 - "$REF/fluxbox.img" "$C/2/fluxbox.img" <<'PY'
import subprocess, sys, json
parts = json.loads(subprocess.run(["sfdisk", "-J", sys.argv[1]], capture_output=True, text=True).stdout)["partitiontable"]["partitions"]
diff = {}
with open(sys.argv[1], "rb") as a, open(sys.argv[2], "rb") as b:
    n = 0
    while (x := a.read(1 << 20)) or b.read(0):
        y = b.read(1 << 20)
        if x != y:
            sector = n * 2048
            name = next((p["name"] for p in parts if p["start"] <= sector < p["start"] + p["size"]), "outside partitions")
            diff[name] = diff.get(name, 0) + 1
        if not x:
            break
        n += 1
print("  ", diff or "none")
PY
fi
[ "$(sha256sum < "$HERE/packages.lock")" = "$lock_before" ] \
    || { echo "check.sh: a build rewrote image/packages.lock" >&2; status=1; }
grep -q 'from the exported inputs in' "$C/build-2.log" || { echo "check.sh: build 2 did not build from the exported inputs" >&2; status=1; }
rm -rf "$C/2-cache"
# the second build's large files are kept only when they differ (to look into)
[ $status != 0 ] || rm -f "$C/2/fluxbox.img" "$C/2/rootfs.ext4" "$C/2/rootfs.tar" "$C/2/fluxbox-test.img"
echo "check: $(( $(date +%s) - t0 )) s; SBOM: $REF/fluxbox.spdx.json, $REF/sbom.txt; inputs: $REF/inputs"
[ $status = 0 ] && echo "image-check: the two builds are bit-for-bit identical" || echo "image-check: the builds DIFFER" >&2
exit $status
