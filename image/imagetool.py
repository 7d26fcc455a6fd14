#!/usr/bin/env python3
"""Small steps of the image build that are easier in Python than in shell.

    default-config appliance/default.toml    > the image's default config
    install-req WHEELDIR requirements.txt    > WHEELDIR/install.txt (name==version + hash)
    lock-check requirements.txt fluxbox.whl  the lock covers the appliance's requirements
    lock DPKG_TSV                            > packages.lock
    lock-verify packages.lock DPKG_TSV       the build installed exactly the lock
    e2clamp EXT4_IMAGE SOURCE_TREE           inode times := SOURCE_DATE_EPOCH
    sbom OUTDIR                              OUTDIR/fluxbox.spdx.json and OUTDIR/sbom.txt

Only the standard library: it runs on the build host's python3.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

HEADER = """\
# Flux Box configuration: the image's default, /etc/fluxbox/fluxbox.toml.
#
# On the image this file lives on the data partition (/data/etc/fluxbox/fluxbox.toml, bound
# to /etc/fluxbox): a new firmware keeps it, and an installer can change it on the box or by
# mounting the data partition. The first boot copies it from /usr/share/fluxbox/fluxbox.toml
# when it is missing. The box listens on port 104; studies live under /var/lib/fluxbox and
# the data key under /var/lib/fluxbox-key, both on the data partition.
#
# Installers: replace the "local" site below with the vehicle's sites, check the file with
# `fluxbox check-config /etc/fluxbox/fluxbox.toml`, then `systemctl restart fluxbox`.
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def default_config(src: str) -> None:
    text = Path(src).read_text()
    lines = text.splitlines()
    # drop the embedded default's own header (the leading comment block)
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    out, section, done = [], None, set()
    for line in lines:
        m = re.match(r"^\s*\[+([^\]]+)\]+", line)
        if m:
            section = m.group(1).strip()
        if section == "box":
            if re.match(r"^port\s*=", line):
                line = re.sub(
                    r"^port\s*=\s*\d+(\s*)",
                    lambda m: "port = 104" + " " * (len(m.group(0)) - len("port = 104")),
                    line,
                )
                done.add("port")
            elif re.match(r"^data_dir\s*=", line):
                line = ('data_dir = "/var/lib/fluxbox"     '
                        "# encrypted studies and the index (the data partition)")
                done.add("data_dir")
            elif re.match(r"^#\s*key_dir\s*=", line):
                line = ('key_dir = "/var/lib/fluxbox-key"  '
                        "# the data key, created on first start (the data partition)")
                done.add("key_dir")
        out.append(line)
    missing = {"port", "data_dir", "key_dir"} - done
    if missing:
        sys.exit(
            f"imagetool: {src}: did not find {sorted(missing)} in [box]; update default_config()"
        )
    # the data_dir comment continued on the next line in the embedded default: drop a
    # continuation that now dangles ("relative to the working directory")
    text = "\n".join(out) + "\n"
    text = re.sub(r"\n\s+# relative to the working directory\n", "\n", text)
    sys.stdout.write(HEADER + "\n" + text)


def _wheel_meta(path: Path) -> tuple[str, str, email.message.Message]:
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(name).decode())
    return meta["Name"], meta["Version"], meta


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def install_req(wheeldir: str, reqfile: str) -> None:
    """install.txt: each wheel of the wheelhouse pinned by name, version and sha256, with
    where it came from (a PyPI wheel whose hash the lock names, or a wheel built here)."""
    locked_hashes = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", Path(reqfile).read_text()))
    pins = _locked(reqfile)
    rows = []
    for whl in sorted(Path(wheeldir).glob("*.whl")):
        name, version, _ = _wheel_meta(whl)
        if _norm(name) in {"pip", "setuptools", "wheel", "packaging"}:
            continue  # build tools, not installed in the image
        sha = _sha256(whl)
        if sha in locked_hashes:
            origin = "PyPI wheel, hash in image/requirements.txt"
        elif pins.get(_norm(name)) == version:
            origin = "built here from the PyPI sdist pinned in image/requirements.txt"
        else:
            origin = "the appliance, built from this source tree"
        rows.append(f"{_norm(name)}=={version} --hash=sha256:{sha}  # {origin}")
    Path(wheeldir, "install.txt").write_text("\n".join(rows) + "\n")


def _locked(reqfile: str) -> dict[str, str]:
    pins = {}
    for line in Path(reqfile).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if m:
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def lock_check(reqfile: str, app_wheel: str) -> None:
    """Every requirement of the appliance (and of its hw extra) is pinned in the lock."""
    pins = _locked(reqfile)
    _, _, meta = _wheel_meta(Path(app_wheel))
    missing = []
    for req in meta.get_all("Requires-Dist") or []:
        spec, _, marker = req.partition(";")
        if marker and "extra" in marker and "hw" not in marker:
            continue
        name = _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec).group(1))
        if name == "dbus-python":
            continue  # Debian's python3-dbus, through the venv's system site packages
        if name not in pins:
            missing.append(name)
    if missing:
        sys.exit(f"imagetool: {reqfile} lacks {', '.join(sorted(missing))}: run `make image-lock`")


def lock(dpkg_tsv: str) -> None:
    rows = [line.split("\t") for line in Path(dpkg_tsv).read_text().splitlines() if line]
    print("# Debian packages of the Flux Box image: name and version, one a line.")
    print("# Written by the first `make image` (or `make image-lock`); every later build pins")
    print("# these versions (apt preferences) and fails if it installed anything else.")
    for pkg, version, *_ in rows:
        print(f"{pkg} {version}")


def lock_verify(lockfile: str, dpkg_tsv: str) -> None:
    """The build installed the locked versions. Packages only added or only removed (the
    package list in build.sh changed) update the lock file; a different version fails."""
    want = {}
    for line in Path(lockfile).read_text().splitlines():
        if line and not line.startswith("#"):
            pkg, version = line.split()
            want[pkg] = version
    have = {
        row.split("\t")[0]: row.split("\t")[1]
        for row in Path(dpkg_tsv).read_text().splitlines()
        if row
    }
    problems = [
        f"  {pkg}: lock {want[pkg]}, installed {have[pkg]}"
        for pkg in sorted(set(want) & set(have))
        if want[pkg] != have[pkg]
    ]
    if problems:
        sys.exit(
            "imagetool: the build did not install what image/packages.lock says "
            "(a version left the mirror):\n"
            + "\n".join(problems)
            + "\nrun `make image-lock` to take the mirror's versions"
        )
    added, removed = sorted(set(have) - set(want)), sorted(set(want) - set(have))
    if (added or removed) and os.environ.get("FLUXBOX_OFFLINE"):
        sys.exit(
            "imagetool: an offline build installed other packages than image/packages.lock: "
            f"added {' '.join(added) or '-'}; missing {' '.join(removed) or '-'}"
        )
    if added or removed:
        header = [ln for ln in Path(lockfile).read_text().splitlines() if ln.startswith("#")]
        Path(lockfile).write_text(
            "\n".join(header + [f"{p} {have[p]}" for p in sorted(have)]) + "\n"
        )
        print(
            f"imagetool: image/packages.lock updated: added {' '.join(added) or '-'}; "
            f"removed {' '.join(removed) or '-'}: commit it"
        )


def e2clamp(image: str, tree: str) -> None:
    """mke2fs -d copies atime and ctime from the source tree, and stamps crtime with the
    time of the build: set them all to SOURCE_DATE_EPOCH (mtime is already clamped)."""
    sde = os.environ["SOURCE_DATE_EPOCH"]
    cmds = []
    for dirpath, dirnames, filenames in os.walk(tree):
        rel = "/" + os.path.relpath(dirpath, tree)
        rel = "/" if rel == "/." else rel
        for path in [rel] + [os.path.join(rel, n) for n in dirnames + filenames]:
            q = '"' + path + '"'
            for field in ("atime", "ctime", "crtime"):
                cmds.append(f"sif {q} {field} @{sde}")
                cmds.append(f"sif {q} {field}_extra 0")
            cmds.append(f"sif {q} mtime_extra 0")
    for field in ("atime", "ctime", "mtime", "crtime"):
        cmds.append(f"sif /lost+found {field} @{sde}")
        cmds.append(f"sif /lost+found {field}_extra 0")
    for field in ("mtime", "wtime", "lastcheck", "mkfs_time"):
        cmds.append(f"ssv {field} @{sde}")
    script = image + ".debugfs"
    Path(script).write_text("\n".join(cmds) + "\n")
    try:
        r = subprocess.run(["debugfs", "-w", "-f", script, image], capture_output=True, text=True)
    finally:
        os.unlink(script)
    errors = [line for line in r.stderr.splitlines() if not line.startswith("debugfs ")]
    if r.returncode or errors:
        sys.exit(f"imagetool: debugfs on {image}: {errors[:5]}")


def sbom(outdir: str) -> None:
    """An SPDX 2.3 document of the image: every Debian package and every Python
    distribution of /opt/fluxbox (with the sha256 of the wheel it came from)."""
    out = Path(outdir)
    sde = int(os.environ["SOURCE_DATE_EPOCH"])
    import datetime

    created = datetime.datetime.fromtimestamp(sde, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    image = out / "fluxbox.img"
    image_sha = _sha256(image)
    debs = [line.split("\t") for line in (out / "dpkg.tsv").read_text().splitlines() if line]
    wheels = []
    for line in (out / "python.txt").read_text().splitlines():
        m = re.match(r"^(\S+)==(\S+) --hash=sha256:([0-9a-f]{64})(?:\s+#\s*(.*))?$", line)
        if m:
            wheels.append(m.groups())
    packages = [
        {
            "SPDXID": "SPDXRef-image",
            "name": "fluxbox-image",
            "versionInfo": os.environ.get("FLUXBOX_VERSION", "0"),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "checksums": [{"algorithm": "SHA256", "checksumValue": image_sha}],
            "primaryPackagePurpose": "OPERATING-SYSTEM",
        }
    ]
    rels = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": "SPDXRef-image",
        }
    ]
    for pkg, version, arch, src, src_version in debs:
        sid = "SPDXRef-deb-" + re.sub(r"[^A-Za-z0-9.-]", "-", f"{pkg}-{arch}")
        packages.append(
            {
                "SPDXID": sid,
                "name": pkg,
                "versionInfo": version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "sourceInfo": (
                    f"built from Debian source package {src or pkg} {src_version or version}"
                ),
                "externalRefs": [
                    {
                        "referenceCategory": "PACKAGE-MANAGER",
                        "referenceType": "purl",
                        "referenceLocator": (
                            f"pkg:deb/debian/{pkg}@{version}?arch={arch}&distro=bookworm"
                        ),
                    }
                ],
            }
        )
        rels.append(
            {
                "spdxElementId": "SPDXRef-image",
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": sid,
            }
        )
    for name, version, sha, origin in wheels:
        sid = "SPDXRef-pypi-" + re.sub(r"[^A-Za-z0-9.-]", "-", name)
        packages.append(
            {
                "SPDXID": sid,
                "name": name,
                "versionInfo": version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "checksums": [{"algorithm": "SHA256", "checksumValue": sha}],
                "sourceInfo": origin or "wheel from PyPI, hash pinned in image/requirements.txt",
                "externalRefs": [
                    {
                        "referenceCategory": "PACKAGE-MANAGER",
                        "referenceType": "purl",
                        "referenceLocator": f"pkg:pypi/{name}@{version}",
                    }
                ],
            }
        )
        rels.append(
            {
                "spdxElementId": "SPDXRef-image",
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": sid,
            }
        )
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "fluxbox-image",
        "documentNamespace": f"urn:fluxbox:image:sha256:{image_sha}",
        "creationInfo": {"created": created, "creators": ["Tool: fluxbox image/imagetool.py"]},
        "packages": packages,
        "relationships": rels,
    }
    (out / "fluxbox.spdx.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    with open(out / "sbom.txt", "w") as f:
        f.write(f"# Flux Box image {image.name} sha256 {image_sha}\n")
        f.write(f"# Debian packages ({len(debs)}): name version architecture\n")
        for pkg, version, arch, *_ in debs:
            f.write(f"deb {pkg} {version} {arch}\n")
        f.write(
            f"# Python distributions in /opt/fluxbox ({len(wheels)}): "
            "name version sha256-of-wheel\n"
        )
        for name, version, sha, origin in wheels:
            f.write(f"python {name} {version} sha256:{sha}{'  # ' + origin if origin else ''}\n")


def main(argv: list[str]) -> None:
    cmd, args = argv[1], argv[2:]
    {
        "default-config": default_config,
        "install-req": install_req,
        "lock-check": lock_check,
        "lock": lock,
        "lock-verify": lock_verify,
        "e2clamp": e2clamp,
        "sbom": sbom,
    }[cmd](*args)


if __name__ == "__main__":
    main(sys.argv)
