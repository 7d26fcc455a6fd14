#!/usr/bin/env python3
"""Small steps of the image build that are easier in Python than in shell.

    default-config appliance/default.toml    > the image's default config
    install-req WHEELDIR requirements.txt    > WHEELDIR/install.txt (name==version + hash)
    lock-check requirements.txt fluxbox.whl  the lock covers the appliance's requirements
    lock DPKG_TSV [SNAPSHOT]                 > packages.lock
    lock-snapshot packages.lock              > the lock's snapshot timestamp, if any
    drift packages.lock DPKG_TSV OUT         OUT: how the build differs from the lock
    verify-installed EXPECTED DPKG_TSV       a build from exported inputs installed them
    select-debs DEBDIR DPKG_TSV DEST         DEST: the .deb of every installed package
    select-dists DISTDIR DEST REQ...         DEST: every file a requirements file pins
    inputs-check INPUTS COMMIT               exported inputs whole, and of this commit
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
            elif re.match(r"^allowed_calling_aets\s*=", line):
                line = ('allowed_calling_aets = []          '
                        '# the modalities\' AE titles, e.g. ["CT1", "US_2"]')
                done.add("allowed_calling_aets")
            elif re.match(r"^#\s*unknown_callers\s*=", line):
                line = ('unknown_callers = "refuse"         '
                        "# only the modalities named here (and commitment reports")
                out += [line, " " * 35 + "# of a PACS asked for them) may connect"]
                done.add("unknown_callers")
                continue
            elif re.match(r"^listen\s*=", line):
                line = ('listen = ["lan0"]                  '
                        "# the vehicle LAN: its interface name (`ip -br link`) or")
                out += [line, " " * 35 + "# the box's LAN address; see IMAGE.md"]
                done.add("listen")
                continue
            elif re.match(r"^#\s*key_dir\s*=", line):
                line = ('key_dir = "/var/lib/fluxbox-key"  '
                        "# the data key, created on first start (the data partition)")
                done.add("key_dir")
        out.append(line)
    missing = {"port", "data_dir", "key_dir", "unknown_callers", "listen",
               "allowed_calling_aets"} - done
    if missing:
        sys.exit(
            f"imagetool: {src}: did not find {sorted(missing)} in [box]; update default_config()"
        )
    # the data_dir comment continued on the next line in the embedded default: drop a
    # continuation that now dangles ("relative to the working directory")
    text = "\n".join(out) + "\n"
    text = re.sub(r"\n\s+# relative to the working directory\n", "\n", text)
    # the embedded default's own comments of the two keys replaced above
    text = re.sub(r"(# of a PACS asked for them\) may connect\n)(\s+#[^\n]*\n){2}", r"\1", text)
    text = re.sub(r"(# the box's LAN address; see IMAGE.md\n)\s+#[^\n]*\n", r"\1", text)
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


def lock(dpkg_tsv: str, snapshot: str = "") -> None:
    """packages.lock from what a build installed; `snapshot` (YYYYMMDDTHHMMSSZ) is when the
    mirror served these versions, the timestamp of a snapshot archive that still has them."""
    rows = [line.split("\t") for line in Path(dpkg_tsv).read_text().splitlines() if line]
    print("# Debian packages of the Flux Box image: name and version, one a line.")
    print("# Written by `make image-lock` (image/lock.sh); builds pin these versions (apt")
    print("# preferences), name every difference as drift, and never rewrite this file.")
    if snapshot:
        print(f"# snapshot: {snapshot}")
    for pkg, version, *_ in rows:
        print(f"{pkg} {version}")


def _versions(path: str) -> dict[str, str]:
    """name -> version from a lock file ("name version") or a dpkg.tsv (tab-separated)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            fields = line.split("\t") if "\t" in line else line.split()
            out[fields[0]] = fields[1]
    return out


def lock_snapshot(lockfile: str) -> None:
    """Print the lock's snapshot timestamp (empty if it has none)."""
    for line in Path(lockfile).read_text().splitlines():
        m = re.match(r"^#\s*snapshot:\s*(\d{8}T\d{6}Z)\s*$", line)
        if m:
            print(m.group(1))
            return


def drift_rows(want: dict[str, str], have: dict[str, str]) -> list[str]:
    """Every difference between the lock and the build, one line each:
    `changed NAME LOCKED BUILT`, `added NAME - BUILT`, `missing NAME LOCKED -`."""
    rows = []
    for pkg in sorted(set(want) | set(have)):
        locked, built = want.get(pkg), have.get(pkg)
        if locked == built:
            continue
        kind = "changed" if locked and built else ("added" if built else "missing")
        rows.append(f"{kind} {pkg} {locked or '-'} {built or '-'}")
    return rows


def drift(lockfile: str, dpkg_tsv: str, outfile: str) -> None:
    """Compare the build with image/packages.lock: write every difference to `outfile`
    (empty when none) and name it in the build log. The lock is never rewritten. With
    FLUXBOX_LOCK_STRICT=1 a difference fails the build."""
    rows = drift_rows(_versions(lockfile), _versions(dpkg_tsv))
    Path(outfile).write_text("".join(row + "\n" for row in rows))
    if not rows:
        print("imagetool: the build installed exactly image/packages.lock")
        return
    lines = "\n".join("  " + row for row in rows)
    message = (
        f"imagetool: DRIFT: {len(rows)} package(s) differ from image/packages.lock "
        "(a locked version left the mirror, or build.sh's package list changed):\n"
        f"{lines}\n"
        "  the image and its SBOM name this drift; `make image-lock` takes the mirror's versions"
        " into the lock (then commit it), or build from a release's exported inputs"
        " (FLUXBOX_INPUTS=...) for the locked bits"
    )
    if os.environ.get("FLUXBOX_LOCK_STRICT"):
        sys.exit(message + "\nimagetool: FLUXBOX_LOCK_STRICT is set: the build fails")
    print(message)


def verify_installed(expected_tsv: str, dpkg_tsv: str) -> None:
    """A build from exported inputs installed exactly what the exporting build did."""
    rows = drift_rows(_versions(expected_tsv), _versions(dpkg_tsv))
    if rows:
        sys.exit(
            "imagetool: this build from exported inputs installed something else than the build"
            " that exported them:\n" + "\n".join("  " + row for row in rows)
        )
    print("imagetool: installed exactly the exported inputs' packages")


def _deb_key(filename: str) -> tuple[str, str, str] | None:
    """(name, version, arch) of an apt archive file name: name_version_arch.deb, with the
    epoch's colon written %3a."""
    m = re.match(r"^([^_]+)_([^_]+)_([^_]+)\.deb$", filename)
    if not m:
        return None
    return m.group(1), m.group(2).replace("%3a", ":").replace("%3A", ":"), m.group(3)


def select_debs(debs_dir: str, dpkg_tsv: str, dest: str) -> None:
    """Link (or copy) into `dest` the .deb file of every package the build installed; fail
    naming any that the cache lacks."""
    rows = [line.split("\t") for line in Path(dpkg_tsv).read_text().splitlines() if line]
    wanted = {(r[0], r[1], r[2]) for r in rows}
    found = {}
    for path in Path(debs_dir).glob("*.deb"):
        key = _deb_key(path.name)
        if key in wanted:
            found[key] = path
    missing = sorted(wanted - set(found))
    if missing:
        sys.exit(
            "imagetool: cannot export the inputs: no .deb for "
            + ", ".join(f"{n} {v} {a}" for n, v, a in missing[:10])
        )
    Path(dest).mkdir(parents=True, exist_ok=True)
    for path in found.values():
        _link_or_copy(path, Path(dest, path.name))


def select_dists(dist_dir: str, dest: str, *reqfiles: str) -> None:
    """Link (or copy) into `dest` every distribution file whose sha256 a requirements file
    pins; fail naming any requirement none of whose files is at hand."""
    wanted = set()
    for req in reqfiles:
        wanted |= set(re.findall(r"--hash=sha256:([0-9a-f]{64})", Path(req).read_text()))
    Path(dest).mkdir(parents=True, exist_ok=True)
    have = set()
    for path in sorted(Path(dist_dir).iterdir()):
        if path.is_file():
            sha = _sha256(path)
            if sha in wanted:
                have.add(sha)
                _link_or_copy(path, Path(dest, path.name))
    for req in reqfiles:
        for name, hashes in _pins_with_hashes(req).items():
            if not hashes & have:
                sys.exit(f"imagetool: cannot export the inputs: no file of {name} ({req})")


def _pins_with_hashes(reqfile: str) -> dict[str, set[str]]:
    """name -> the sha256s a hash-pinned requirements file allows for it."""
    pins: dict[str, set[str]] = {}
    name = None
    for line in Path(reqfile).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if m:
            name = _norm(m.group(1))
            pins[name] = set()
        if name:
            pins[name] |= set(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
        if not line.rstrip().endswith("\\"):
            name = None
    return pins


def inputs_check(inputs: str, head: str) -> None:
    """Exported inputs are whole and unchanged (every file's sha256 as the MANIFEST says)
    and of the commit being built. Inputs of another commit cannot give the released image:
    refused, unless FLUXBOX_INPUTS_OTHER_COMMIT=1 (then the tree's own version and time)."""
    root = Path(inputs)
    fields: dict[str, str] = {}
    listed, bad = set(), []
    for line in (root / "MANIFEST").read_text().splitlines():
        parts = line.split(maxsplit=2)
        if parts[:1] == ["sha256"] and len(parts) == 3:
            sha, rel = parts[1], parts[2].strip()
            listed.add(rel)
            path = root / rel
            if not path.is_file() or _sha256(path) != sha:
                bad.append(rel)
        elif len(parts) >= 2 and not line.startswith("#"):
            fields.setdefault(parts[0], parts[1])
    lacking = [k for k in ("commit", "source_date_epoch", "image_version") if k not in fields]
    if bad or not listed or lacking:
        sys.exit(
            f"imagetool: the exported inputs in {inputs} are damaged or incomplete: "
            f"{bad[:5] or lacking or 'no files listed'}"
        )
    commit = fields["commit"]
    if commit != head:
        message = (
            f"the inputs were exported at commit {commit[:12]}, this tree is {head[:12]}: "
            f"`git checkout {commit[:12]}` to rebuild that release bit for bit"
        )
        if not os.environ.get("FLUXBOX_INPUTS_OTHER_COMMIT"):
            sys.exit(f"imagetool: {message} (FLUXBOX_INPUTS_OTHER_COMMIT=1 builds anyway)")
        print(f"imagetool: WARNING: {message}; building this tree from them anyway")
    print(f"imagetool: exported inputs checked: {len(listed)} files")


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        import shutil

        shutil.copy2(src, dst)


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


def _drift_of(path: Path) -> dict[str, str]:
    """package -> a sentence on how it differs from image/packages.lock (drift.txt)."""
    notes = {}
    if path.exists():
        for row in path.read_text().splitlines():
            kind, pkg, locked, built = row.split()
            notes[pkg] = {
                "changed": f"{pkg}: image/packages.lock has {locked}, the image has {built}",
                "added": f"{pkg}: not in image/packages.lock, the image has {built}",
                "missing": f"{pkg}: image/packages.lock has {locked}, the image has none",
            }[kind]
    return notes


def _drift_summary(drifted: dict[str, str]) -> str:
    if not drifted:
        return "Debian packages exactly as image/packages.lock"
    return (
        f"DRIFT: {len(drifted)} Debian package(s) differ from image/packages.lock: "
        + "; ".join(drifted.values())
    )


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
    drifted = _drift_of(out / "drift.txt")
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
        note = {"comment": drifted[pkg]} if pkg in drifted else {}
        packages.append(
            {
                **note,
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
        "creationInfo": {
            "created": created,
            "creators": ["Tool: fluxbox image/imagetool.py"],
            "comment": _drift_summary(drifted),
        },
        "packages": packages,
        "relationships": rels,
    }
    (out / "fluxbox.spdx.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    with open(out / "sbom.txt", "w") as f:
        f.write(f"# Flux Box image {image.name} sha256 {image_sha}\n")
        f.write(
            f"# drift from image/packages.lock: {len(drifted)} package(s)\n"
            if drifted
            else "# Debian packages exactly as image/packages.lock\n"
        )
        for note in drifted.values():
            f.write(f"# drift: {note}\n")
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
        "lock-snapshot": lock_snapshot,
        "drift": drift,
        "verify-installed": verify_installed,
        "select-debs": select_debs,
        "select-dists": select_dists,
        "inputs-check": inputs_check,
        "e2clamp": e2clamp,
        "sbom": sbom,
    }[cmd](*args)


if __name__ == "__main__":
    main(sys.argv)
