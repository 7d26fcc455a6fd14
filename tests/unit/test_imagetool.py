"""The image build's lock, drift and exported-inputs steps (image/imagetool.py), on small
files: what a build does when a locked version left the mirror, and how exported inputs are
chosen and checked."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "image" / "imagetool.py"
_spec = importlib.util.spec_from_file_location("imagetool", TOOL)
imagetool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(imagetool)

LOCK = """\
# Debian packages of the Flux Box image
# snapshot: 20261128T061500Z
base-files 12.4+deb12u15
bsdutils 1:2.38.1-5+deb12u3
linux-image-amd64 6.1.192-2
"""


def _tsv(rows: list[tuple[str, str]]) -> str:
    return "".join(f"{name}\t{version}\tamd64\t\t\n" for name, version in rows)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_a_version_that_left_the_mirror_is_drift_named_in_the_log_and_the_lock_kept(tmp_path):
    lock = tmp_path / "packages.lock"
    lock.write_text(LOCK)
    dpkg = tmp_path / "dpkg.tsv"
    dpkg.write_text(
        _tsv(
            [
                ("base-files", "12.4+deb12u15"),
                ("bsdutils", "1:2.38.1-5+deb12u3"),
                ("linux-image-amd64", "6.1.192-3"),
                ("zstd", "1.5.4+dfsg2-5"),
            ]
        )
    )
    out = tmp_path / "drift.txt"
    r = _run("drift", str(lock), str(dpkg), str(out))
    assert r.returncode == 0, r.stderr
    assert "DRIFT: 2 package(s)" in r.stdout
    assert "changed linux-image-amd64 6.1.192-2 6.1.192-3" in r.stdout
    assert out.read_text() == (
        "changed linux-image-amd64 6.1.192-2 6.1.192-3\nadded zstd - 1.5.4+dfsg2-5\n"
    )
    assert lock.read_text() == LOCK  # a build never rewrites the lock


def test_strict_lock_fails_on_drift_and_passes_without(tmp_path):
    lock = tmp_path / "packages.lock"
    lock.write_text(LOCK)
    dpkg = tmp_path / "dpkg.tsv"
    dpkg.write_text(_tsv([("base-files", "12.4+deb12u15"), ("bsdutils", "1:2.38.1-5+deb12u3")]))
    r = _run("drift", str(lock), str(dpkg), str(tmp_path / "d"), env={"FLUXBOX_LOCK_STRICT": "1"})
    assert r.returncode != 0
    assert "missing linux-image-amd64 6.1.192-2 -" in r.stderr
    dpkg.write_text(
        _tsv(
            [
                ("base-files", "12.4+deb12u15"),
                ("bsdutils", "1:2.38.1-5+deb12u3"),
                ("linux-image-amd64", "6.1.192-2"),
            ]
        )
    )
    r = _run("drift", str(lock), str(dpkg), str(tmp_path / "d"), env={"FLUXBOX_LOCK_STRICT": "1"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "d").read_text() == ""


def test_the_lock_keeps_its_snapshot_timestamp(tmp_path, capsys):
    dpkg = tmp_path / "dpkg.tsv"
    dpkg.write_text(_tsv([("bash", "5.2.15-2+b13")]))
    imagetool.lock(str(dpkg), "20261203T080000Z")
    lock = tmp_path / "packages.lock"
    lock.write_text(capsys.readouterr().out)
    assert lock.read_text().splitlines()[-1] == "bash 5.2.15-2+b13"
    imagetool.lock_snapshot(str(lock))
    assert capsys.readouterr().out.strip() == "20261203T080000Z"


def test_the_sbom_names_the_drift(tmp_path):
    (tmp_path / "fluxbox.img").write_bytes(b"image")
    (tmp_path / "dpkg.tsv").write_text(
        "linux-image-amd64\t6.1.192-3\tamd64\tlinux-signed-amd64\t6.1.192+3\n"
    )
    (tmp_path / "python.txt").write_text(f"numpy==1.26.4 --hash=sha256:{'a' * 64}  # PyPI\n")
    (tmp_path / "drift.txt").write_text("changed linux-image-amd64 6.1.192-2 6.1.192-3\n")
    r = _run("sbom", str(tmp_path), env={"SOURCE_DATE_EPOCH": "1764000000"})
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "fluxbox.spdx.json").read_text())
    assert "DRIFT: 1 Debian package(s)" in doc["creationInfo"]["comment"]
    kernel = next(p for p in doc["packages"] if p["name"] == "linux-image-amd64")
    assert "image/packages.lock has 6.1.192-2, the image has 6.1.192-3" in kernel["comment"]
    text = (tmp_path / "sbom.txt").read_text()
    assert "# drift: linux-image-amd64: image/packages.lock has 6.1.192-2" in text
    (tmp_path / "drift.txt").write_text("")
    assert _run("sbom", str(tmp_path), env={"SOURCE_DATE_EPOCH": "1764000000"}).returncode == 0
    assert "exactly as image/packages.lock" in (tmp_path / "sbom.txt").read_text()


def test_export_takes_exactly_the_installed_debs_and_fails_on_a_missing_one(tmp_path):
    debs = tmp_path / "debs"
    debs.mkdir()
    for name in (
        "bsdutils_1%3a2.38.1-5+deb12u3_amd64.deb",
        "bsdutils_1%3a2.38.1-5+deb12u2_amd64.deb",  # an older version the cache also kept
        "bash_5.2.15-2+b13_amd64.deb",
    ):
        (debs / name).write_bytes(name.encode())
    dpkg = tmp_path / "dpkg.tsv"
    dpkg.write_text(_tsv([("bsdutils", "1:2.38.1-5+deb12u3"), ("bash", "5.2.15-2+b13")]))
    dest = tmp_path / "out"
    imagetool.select_debs(str(debs), str(dpkg), str(dest))
    assert sorted(p.name for p in dest.iterdir()) == [
        "bash_5.2.15-2+b13_amd64.deb",
        "bsdutils_1%3a2.38.1-5+deb12u3_amd64.deb",
    ]
    dpkg.write_text(_tsv([("dash", "0.5.12-2")]))
    with pytest.raises(SystemExit, match="no .deb for dash 0.5.12-2 amd64"):
        imagetool.select_debs(str(debs), str(dpkg), str(tmp_path / "out2"))


def test_export_takes_the_pinned_python_files_and_names_one_it_lacks(tmp_path):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"six")
    (dist / "six-1.15.0-py2.py3-none-any.whl").write_bytes(b"old six")
    sha = hashlib.sha256(b"six").hexdigest()
    req = tmp_path / "requirements.txt"
    req.write_text(f"six==1.16.0 \\\n    --hash=sha256:{sha}\n    # via x\n")
    dest = tmp_path / "py"
    imagetool.select_dists(str(dist), str(dest), str(req))
    assert [p.name for p in dest.iterdir()] == ["six-1.16.0-py2.py3-none-any.whl"]
    req.write_text(f"{req.read_text()}pyudev==0.24.3 \\\n    --hash=sha256:{'b' * 64}\n")
    with pytest.raises(SystemExit, match="no file of pyudev"):
        imagetool.select_dists(str(dist), str(tmp_path / "py2"), str(req))


def test_damaged_or_foreign_inputs_are_named(tmp_path):
    (tmp_path / "debian").mkdir()
    deb = tmp_path / "debian" / "bash_5.2_amd64.deb"
    deb.write_bytes(b"bash")
    sha = hashlib.sha256(b"bash").hexdigest()
    head = "commit abc123\nsource_date_epoch 1764000000\nimage_version 0.1.0+gabc123\n"
    (tmp_path / "MANIFEST").write_text(f"{head}sha256 {sha}  debian/bash_5.2_amd64.deb\n")
    ok = _run("inputs-check", str(tmp_path), "abc123")
    assert ok.returncode == 0 and "1 files" in ok.stdout
    other = _run("inputs-check", str(tmp_path), "def456")
    assert other.returncode != 0 and "git checkout abc123" in other.stderr
    forced = _run("inputs-check", str(tmp_path), "def456",
                  env={"FLUXBOX_INPUTS_OTHER_COMMIT": "1"})
    assert forced.returncode == 0 and "WARNING" in forced.stdout
    deb.write_bytes(b"bash, changed")
    bad = _run("inputs-check", str(tmp_path), "abc123")
    assert bad.returncode != 0 and "debian/bash_5.2_amd64.deb" in bad.stderr
    deb.write_bytes(b"bash")
    (tmp_path / "MANIFEST").write_text(f"commit abc123\nsha256 {sha}  debian/bash_5.2_amd64.deb\n")
    truncated = _run("inputs-check", str(tmp_path), "abc123")
    assert truncated.returncode != 0 and "source_date_epoch" in truncated.stderr
