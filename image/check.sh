#!/bin/bash
# Build the image twice from the same inputs and compare the results bit for bit.
#
#   image/check.sh [OUTDIR]      (default build/image; the builds go to OUTDIR/check/{1,2})
#
# Both builds share the caches (.deb files, pip downloads), start from scratch otherwise,
# and use the same SOURCE_DATE_EPOCH. The second one is offline (FLUXBOX_OFFLINE=1, in a
# network namespace of its own): it proves the caches alone rebuild the image. On a difference it says which partition, and which
# files of the root file system, differ. Each build writes its SBOM next to its image; the
# first build's image, bmap and SBOM are kept, the second's large files are removed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
OUT=$(realpath -m "${1:-$REPO/build/image}")
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 1735689600)}
C=$OUT/check
rm -rf "$C"; mkdir -p "$C"
t0=$(date +%s)
for n in 1 2; do
    s=$(date +%s)
    if [ $n = 1 ]; then build=("$HERE/build.sh"); else build=(env FLUXBOX_OFFLINE=1 unshare --net "$HERE/build.sh"); fi
    "${build[@]}" "$C/$n" > "$C/build-$n.log" 2>&1 || { tail -40 "$C/build-$n.log"; echo "check.sh: build $n failed" >&2; exit 1; }
    echo "build $n$([ $n = 2 ] && echo ' (offline)'): $(( $(date +%s) - s )) s, $(cut -c1-64 "$C/$n/fluxbox.img.sha256")"
done

status=0
for f in fluxbox.img fluxbox.img.bmap rootfs.ext4 rootfs.tar fluxbox.spdx.json sbom.txt; do
    if cmp -s "$C/1/$f" "$C/2/$f"; then
        echo "same: $f ($(sha256sum < "$C/1/$f" | cut -c1-16))"
    else
        echo "DIFFERENT: $f"; status=1
    fi
done
if [ $status != 0 ]; then
    echo "-- differences in the root file system tarballs:"
    python3 - "$C/1/rootfs.tar" "$C/2/rootfs.tar" <<'PY' | head -40
import hashlib, sys, tarfile
def load(p):
    d = {}
    with tarfile.open(p) as t:
        for m in t:
            h = hashlib.sha256(t.extractfile(m).read()).hexdigest()[:16] if m.isfile() else None
            d[m.name] = (m.type, oct(m.mode), m.uid, m.gid, m.mtime, m.size, m.linkname, h)
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
print("same member order:", list(a) == list(b))
for k in sorted(set(a) | set(b)):
    if a.get(k) != b.get(k):
        print("  ", k, a.get(k), b.get(k))
PY
    echo "-- differing 1 MiB blocks of the disk image, by partition:"
    python3 - "$C/1/fluxbox.img" "$C/2/fluxbox.img" <<'PY'
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
rm -f "$C/2/fluxbox.img" "$C/2/rootfs.ext4" "$C/2/rootfs.tar" "$C/2/fluxbox-test.img"
echo "check: $(( $(date +%s) - t0 )) s; SBOM: $C/1/fluxbox.spdx.json, $C/1/sbom.txt"
[ $status = 0 ] && echo "image-check: the two builds are bit-for-bit identical" || echo "image-check: the builds DIFFER" >&2
exit $status
