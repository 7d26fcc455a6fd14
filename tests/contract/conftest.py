"""Stand-ins for the hardware adapters' contract tests.

- `system_bus`: one private D-Bus system bus for the whole session (dbus-python and
  python-networkmanager bind to the first system bus a process opens, and
  python-networkmanager caches what it introspects), exported as
  $DBUS_SYSTEM_BUS_ADDRESS and stopped at the end.
- `nm` / `mm`: NetworkManager's / ModemManager's API from python-dbusmock on that bus,
  a fresh mock for each test, stopped after it.
- `netns`: a network namespace of the test's own (veth pairs live there, never in the
  machine's namespace), deleted after the test; `in_netns` enters it on this thread.
- `wait_for`: polls a condition until a deadline.

A stand-in that cannot run here skips its tests with the reason; in CI ($CI set), where
the Makefile installs every stand-in, it fails them instead.
"""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support import waiting

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
DEADLINE_S = 10.0
_netns_ids = itertools.count()


# --------------------------------------------------------------------------- availability


def unavailable(reason: str) -> None:
    """Skip: this stand-in cannot run here. In CI, fail: there it must."""
    if os.environ.get("CI"):
        pytest.fail(f"stand-in unavailable in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def need() -> Callable[[str], None]:
    """`need("pyudev")`: the module, or `unavailable` naming the pip package."""
    def check(module: str) -> None:
        if importlib.util.find_spec(module) is None:
            unavailable(f"{module} is not installed (pip: {PIP_NAMES.get(module, module)})")
    return check


PIP_NAMES = {"NetworkManager": "python-networkmanager", "dbus": "dbus-python",
             "dbusmock": "python-dbusmock", "pyudev": "pyudev"}


# --------------------------------------------------------------------------- polling


def poll(condition: Callable[[], T], deadline_s: float = DEADLINE_S, every_s: float = 0.02,
         what: str = "condition") -> T:
    """The first truthy value of `condition()`, polled until `deadline_s`; fails after."""
    return waiting.wait_for(condition, deadline_s, what, every_s)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    return poll


# --------------------------------------------------------------------------- D-Bus


@pytest.fixture(scope="session")
def system_bus() -> Iterator[str]:
    """A private system bus for the session; yields its address."""
    if not shutil.which("dbus-daemon"):
        unavailable("dbus-daemon is not installed (Debian package: dbus)")
    for module in ("dbus", "dbusmock"):
        if importlib.util.find_spec(module) is None:
            unavailable(f"{module} is not installed (pip: {PIP_NAMES[module]})")
    import dbus
    from dbusmock import BusType, PrivateDBus
    if dbus.Bus._shared_instances:
        pytest.fail("a shared D-Bus connection exists before the private bus: "
                    "a test touched D-Bus outside the `system_bus` fixture")
    saved = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    with PrivateDBus(BusType.SYSTEM) as bus:
        yield bus.address
    if saved is None:
        os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    else:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = saved


@pytest.fixture
def nm(system_bus: str, tmp_path: Path, need: Callable[[str], None]) -> Iterator[Any]:
    """The NetworkManager mock with the standard scene (tests.dbusmock_nm.NMScene).

    python-networkmanager is only looked for: importing it needs NetworkManager on the bus.
    """
    need("NetworkManager")
    from tests.dbusmock_nm import spawn_nm

    with spawn_nm(tmp_path / "nm-mock.log") as scene:
        yield scene


@pytest.fixture
def mm(system_bus: str, tmp_path: Path) -> Iterator[Any]:
    """The ModemManager mock, no modem yet (tests.dbusmock_nm.MMScene)."""
    from tests.dbusmock_nm import spawn_mm

    with spawn_mm(tmp_path / "mm-mock.log") as scene:
        yield scene


# --------------------------------------------------------------------------- namespaces


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=DEADLINE_S,
                          check=False)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace, deleted afterwards (with everything in it)."""
    if not shutil.which("ip"):
        unavailable("ip is not installed (Debian package: iproute2)")
    name = f"fxbox-{os.getpid()}-{next(_netns_ids)}"
    made = ip("netns", "add", name)
    if made.returncode != 0:
        unavailable(f"cannot create a network namespace (root needed): {made.stderr.strip()}")
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        ip("netns", "del", name)


@pytest.fixture
def enter_netns() -> Callable[[str], Any]:
    """`with enter_netns(name):` runs the block on this thread inside that namespace."""
    return in_netns


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block on this thread inside namespace `name`; sockets opened there stay there."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            unavailable(f"setns: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot return to the test's own namespace")
    finally:
        os.close(target)
        os.close(home)
