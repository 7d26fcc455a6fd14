"""HotplugSource contract: the ManualHotplug fake and UdevHotplug on real kernel events.

The kernel events come from veth pairs made and deleted in a network namespace of the
test's own: the kernel sends a namespace's net uevents only to sockets opened in that
namespace, so the monitor's socket is opened there (`enter_netns`) and the machine's
own interfaces are never touched. Each rig gives the source, a way to start watching,
and `cause()`, which makes one relevant event happen.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from hw.udev import ManualHotplug, UdevHotplug, event_reason

QUIET_S = 0.5  # how long "nothing more happens" is watched for
_names = itertools.count()


@dataclass
class Rig:
    source: Any
    cause: Callable[[], None]
    watch: Callable[[Callable[[str], None]], None]


class Recorder:
    """A callback that records (reason, thread) pairs."""

    def __init__(self, fail_first: bool = False):
        self.calls: list[tuple[str, threading.Thread]] = []
        self._fail_first = fail_first
        self._lock = threading.Lock()

    def __call__(self, reason: str) -> None:
        with self._lock:
            self.calls.append((reason, threading.current_thread()))
            first = len(self.calls) == 1
        if first and self._fail_first:
            raise RuntimeError("a failing callback")

    @property
    def reasons(self) -> list[str]:
        with self._lock:
            return [reason for reason, _ in self.calls]


class HotplugContract:
    """What every HotplugSource promises."""

    @pytest.fixture
    def rig(self) -> Rig:
        raise NotImplementedError

    def test_watch_returns_at_once(self, rig):
        started = time.monotonic()
        rig.watch(Recorder())
        assert time.monotonic() - started < 1.0
        rig.source.stop()

    def test_an_event_reaches_the_callback_on_another_thread(self, rig, wait_for):
        recorder = Recorder()
        rig.watch(recorder)
        try:
            rig.cause()
            wait_for(lambda: recorder.calls, what="a hotplug call")
            reason, thread = recorder.calls[0]
            assert isinstance(reason, str) and reason
            assert thread is not threading.current_thread()
        finally:
            rig.source.stop()

    def test_no_call_after_stop(self, rig, wait_for):
        recorder = Recorder()
        rig.watch(recorder)
        rig.cause()
        wait_for(lambda: recorder.calls, what="a hotplug call")
        rig.source.stop()
        seen = len(recorder.calls)
        rig.cause()
        time.sleep(QUIET_S)
        assert len(recorder.calls) == seen
        rig.source.stop()  # twice is harmless

    def test_a_failing_callback_does_not_end_the_watch(self, rig, wait_for):
        recorder = Recorder(fail_first=True)
        rig.watch(recorder)
        try:
            rig.cause()
            wait_for(lambda: recorder.calls, what="a first call")
            seen = len(recorder.calls)
            rig.cause()
            wait_for(lambda: len(recorder.calls) > seen, what="a call after the failure")
        finally:
            rig.source.stop()

    def test_watch_again_after_stop(self, rig, wait_for):
        rig.watch(Recorder())
        rig.source.stop()
        recorder = Recorder()
        rig.watch(recorder)
        try:
            rig.cause()
            wait_for(lambda: recorder.calls, what="a call on the second watch")
        finally:
            rig.source.stop()


class TestManualHotplug(HotplugContract):
    @pytest.fixture
    def rig(self):
        source = ManualHotplug()
        yield Rig(source, lambda: source.fire("add net test0"), source.watch)
        source.stop()

    def test_fire_without_watcher_does_nothing(self):
        ManualHotplug().fire("add net test0")

    def test_reasons_arrive_in_order(self, wait_for):
        source, recorder = ManualHotplug(), Recorder()
        source.watch(recorder)
        for n in range(5):
            source.fire(f"add net test{n}")
        wait_for(lambda: len(recorder.calls) == 5, what="five calls")
        source.stop()
        assert recorder.reasons == [f"add net test{n}" for n in range(5)]


def veth_event(ns: str) -> None:
    """Make and delete a veth pair inside namespace `ns`: add and remove net events."""
    name = f"hp{next(_names)}"
    for cmd in (["link", "add", name, "type", "veth", "peer", "name", f"{name}p"],
                ["link", "del", name]):
        done = subprocess.run(["ip", "-n", ns, *cmd], capture_output=True, text=True,
                              timeout=10, check=False)
        assert done.returncode == 0, f"ip {' '.join(cmd)}: {done.stderr.strip()}"


class TestUdevHotplug(HotplugContract):
    """Real kernel uevents (Monitor source 'kernel'), as on a box without udevd."""

    @pytest.fixture
    def rig(self, netns, enter_netns, need):
        need("pyudev")
        source = UdevHotplug()

        def watch(on_change: Callable[[str], None]) -> None:
            with enter_netns(netns):  # the netlink socket opens, and stays, in the namespace
                source.watch(on_change)
            assert source.error is None, source.error

        yield Rig(source, lambda: veth_event(netns), watch)
        source.stop()

    def test_reasons_name_action_subsystem_and_interface(self, rig, wait_for):
        recorder = Recorder()
        rig.watch(recorder)
        try:
            rig.cause()  # hpN and its peer hpNp: added, then both removed
            wait_for(lambda: {r.split()[0] for r in recorder.reasons} >= {"add", "remove"},
                     what="add and remove events")
        finally:
            rig.source.stop()
        names = {r.split()[2] for r in recorder.reasons}
        assert len(names) == 2 and all(n.startswith("hp") for n in names)
        assert all(r.split()[1] == "net" and len(r.split()) == 3 for r in recorder.reasons)

    def test_unavailable_source_is_reported_not_raised(self, need):
        need("pyudev")
        source = UdevHotplug(source="no-such-source")
        source.watch(Recorder())
        assert source.error
        source.stop()


@pytest.mark.parametrize("subsystem, device_type, expected", [
    ("net", None, "add net dev0"),
    ("tty", None, "add tty dev0"),
    ("usbmisc", None, "add usbmisc dev0"),
    ("usb", "usb_device", "add usb dev0"),
    ("usb", "usb_interface", None),
    ("block", "disk", None),
])
def test_event_reason_filters(subsystem, device_type, expected):
    device = SimpleNamespace(action="add", subsystem=subsystem, device_type=device_type,
                             sys_name="dev0")
    assert event_reason(device) == expected
