"""A hardware library that is missing, or found but failing at import, means no vote from
its adapter and one log line naming it, never a crash (issue 7; PRODUCT.md, DICOM services:
"a missing hardware library means no vote from that adapter, never a crash")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.boxproc import BoxProcess, box_toml, site_toml
from tests.integration.conftest import dest
from tests.peers import free_port

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"gpsd": "gpsd-py3", "pyudev": "pyudev"}
# How a library can be unusable: absent, or present and raising as it is imported (a
# broken build, a shared library it cannot load, any other exception).
BREAKAGES = {
    "missing": None,
    "import-error": 'raise ImportError("libudev.so.1: cannot open shared object file")',
    "other-error": 'raise RuntimeError("broken build")',
}
# In a child: `missing` modules hidden, then the adapters the box chooses, by type.
CHOOSE = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                    format="%(levelname)s %(name)s: %(message)s")
for name in sys.argv[1:]:
    sys.modules[name] = None  # as if not installed: find_spec gives None, import fails
from appliance.hardware import choose_hardware
from appliance.config import default_config
hardware = choose_hardware(default_config())
print("position", type(hardware.position).__name__)
print("hotplug", type(hardware.hotplug).__name__)
"""


def _stubs(where: Path, module: str, breakage: str | None) -> Path:
    """A directory to put first on sys.path: `module` there raises `breakage` at import."""
    where.mkdir(exist_ok=True)
    if breakage is not None:
        (where / module).mkdir()
        (where / module / "__init__.py").write_text(breakage + "\n")
    return where


def _naming(output: str, module: str) -> list[str]:
    return [line for line in output.splitlines() if PACKAGES[module] in line]


@pytest.mark.parametrize("breakage", list(BREAKAGES))
@pytest.mark.parametrize("module", list(PACKAGES))
def test_an_unusable_library_gives_no_vote_and_one_line(module, breakage, tmp_path):
    stubs = _stubs(tmp_path / "stubs", module, BREAKAGES[breakage])
    hidden = [module] if breakage == "missing" else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stubs), str(REPO)])}
    done = subprocess.run([sys.executable, "-c", CHOOSE, *hidden], capture_output=True,
                          text=True, timeout=60, env=env, cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    chosen = dict(line.split() for line in done.stdout.splitlines()
                  if line.startswith(("position ", "hotplug ")))
    if module == "gpsd":
        assert chosen["position"] == "FixedPosition"
    else:
        assert chosen["hotplug"] == "NoneType"
    assert len(_naming(done.stdout + done.stderr, module)) == 1, done.stdout + done.stderr


def test_the_box_starts_and_works_with_gpsd_and_pyudev_failing_at_import(
        tmp_path, monkeypatch):
    stubs = tmp_path / "stubs"
    for module in PACKAGES:
        _stubs(stubs, module, BREAKAGES["other-error"])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(stubs), str(REPO)]))
    workdir = tmp_path / "box"
    workdir.mkdir()
    box = BoxProcess(box_toml(workdir / "data", free_port(),
                              site_toml("a", [dest("pacs", "PACS", free_port())])), workdir)
    with box:
        assert box.status()["site"] is not None
    for module in PACKAGES:
        assert len(_naming(box.log(), module)) == 1, box.log()[-3000:]
