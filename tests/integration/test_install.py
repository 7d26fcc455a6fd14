"""A plain install gives a working box (issue 11, part 4).

The package is installed into bare venvs (no extras, no system site packages), once as the
wheel built from the work tree and once with `pip install <source tree>`. Each box must
start, answer C-ECHO, take a study from DCMTK storescu and deliver it to a PACS, and say
once per hardware library it runs without (dbus-python and python-networkmanager, which
only the `hw` extra brings).

Wheels come from pip's cache through one `pip wheel` per session (a fresh machine downloads
them once, as `make deps` does); the venvs then install with `--no-index`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.boxproc import BoxProcess, box_toml, site_toml
from tests.integration.conftest import dest
from tests.peers import CountingSCP, free_port, storescu

REPO = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_S = 600
HW_EXTRA_ONLY = ("dbus-python", "python-networkmanager")

pytestmark = pytest.mark.slow


def _pip(python: Path | str, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "-q", "--disable-pip-version-check", *args],
                   check=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def source_tree(tmp_path_factory) -> Path:
    """The package's sources, copied: building must not write into the work tree."""
    tree = tmp_path_factory.mktemp("src")
    shutil.copy(REPO / "pyproject.toml", tree)
    for package in ("appliance", "hw"):
        shutil.copytree(REPO / package, tree / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return tree


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory, source_tree) -> Path:
    """The box's wheel, every dependency's, and the build backend's."""
    house = tmp_path_factory.mktemp("wheels")
    _pip(sys.executable, "wheel", "--wheel-dir", str(house), str(source_tree), "setuptools>=68")
    return house


def _bare_venv(where: Path) -> Path:
    venv.create(where, with_pip=True, system_site_packages=False, clear=True)
    return where / "bin" / "python"


def _install(how: str, where: Path, wheelhouse: Path, source_tree: Path) -> Path:
    python = _bare_venv(where)
    if how == "wheel":
        (wheel,) = wheelhouse.glob("fluxbox-*.whl")
        _pip(python, "install", "--no-index", "--find-links", str(wheelhouse), str(wheel))
    else:
        _pip(python, "install", "--no-index", "--find-links", str(wheelhouse), str(source_tree))
    return where / "bin" / "fluxbox"


def _echo(port: int) -> int:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="FLUXBOX")
    assert assoc.is_established
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


@pytest.mark.parametrize("how", ["wheel", "source"])
def test_a_bare_venv_install_runs_a_box_that_stores_and_delivers(
        how, tmp_path, wheelhouse, source_tree, ct_study):
    fluxbox = _install(how, tmp_path / "venv", wheelhouse, source_tree)
    probe = subprocess.run([str(fluxbox.parent / "python"), "-c", "import dbus"],
                           capture_output=True, timeout=60)
    assert probe.returncode != 0, "the bare venv must not see dbus-python"
    with CountingSCP(ae_title="PACS") as pacs:
        workdir = tmp_path / "box"
        workdir.mkdir()
        config = box_toml(workdir / "data", free_port(),
                          site_toml("a", [dest("pacs", "PACS", pacs.port)]))
        with BoxProcess(config, workdir, command=[str(fluxbox)]) as box:
            assert _echo(box.port) == 0x0000
            sent = storescu("127.0.0.1", box.port, ct_study, called_aet="FLUXBOX")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            (row,) = box.wait_states("complete", timeout_s=90)
            assert row["instances"] == len(ct_study)
            assert pacs.uids() == {pydicom.dcmread(p).SOPInstanceUID for p in ct_study}
            missing = [line for line in box.log().splitlines()
                       if "hardware library missing" in line]
    assert sorted(line.split("library=")[1].split()[0] for line in missing) == sorted(
        HW_EXTRA_ONLY)
