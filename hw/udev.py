"""Hotplug of network devices and modems: uevents through pyudev, and a manual fake.

Without udevd only the kernel's own uevents exist, so `UdevHotplug` reads
`Monitor(source="kernel")` by default (source="udev" reads udevd's events, after
renaming, where udevd runs). Events are filtered to the subsystems that matter for
links and modems: net, tty, usb (whole devices only), usbmisc (cdc-wdm) and wwan.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import selectors
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("fluxbox.hw.udev")

DEFAULT_SUBSYSTEMS = ("net", "tty", "usb", "usbmisc", "wwan")
OVERFLOW = "overflow"  # events were lost: re-read everything
STOP_TIMEOUT_S = 5.0


def event_reason(device: Any, subsystems: Iterable[str] = DEFAULT_SUBSYSTEMS) -> str | None:
    """"<action> <subsystem> <name>" for a pyudev device event that matters, else None."""
    subsystem = device.subsystem
    if subsystem not in subsystems:
        return None
    if subsystem == "usb" and device.device_type not in (None, "usb_device"):
        return None  # one call per plugged device, not one per USB interface
    return f"{device.action} {subsystem} {device.sys_name}"


def _deliver(on_change: Callable[[str], None], reason: str) -> None:
    try:
        on_change(reason)
    except Exception:  # the watcher outlives a failing callback
        log.exception("hotplug callback failed for %r", reason)


@dataclass
class _Watch:
    thread: threading.Thread
    stop_w: int


class UdevHotplug:
    """HotplugSource from uevents (pyudev).

    `watch(on_change)` opens the netlink socket before it returns, so every event after
    that is seen; `on_change("add net wwan0")` runs on the watcher's own thread, and
    one plug can give several calls (the USB device, its tty and net children). Lost
    events (socket overflow) give `on_change("overflow")`. After `stop()` returns no
    call is made. When watching is impossible (no pyudev, no netlink) `watch` logs,
    sets `error` and returns.
    """

    def __init__(self, subsystems: Iterable[str] = DEFAULT_SUBSYSTEMS, source: str = "kernel"):
        self.subsystems = tuple(subsystems)
        self.source = source
        self.error: str | None = None
        self._watch: _Watch | None = None
        self._lock = threading.Lock()

    def watch(self, on_change: Callable[[str], None]) -> None:
        self.stop()
        try:
            monitor = self._open_monitor()
        except Exception as exc:  # ImportError, OSError from netlink
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("hotplug events unavailable: %s", self.error)
            return
        self.error = None
        stop_r, stop_w = os.pipe()
        thread = threading.Thread(target=self._run, args=(monitor, on_change, stop_r),
                                  name="fluxbox-hotplug", daemon=True)
        with self._lock:
            self._watch = _Watch(thread, stop_w)
        thread.start()

    def stop(self) -> None:
        with self._lock:
            watch, self._watch = self._watch, None
        if watch is None:
            return
        with contextlib.suppress(OSError):
            os.write(watch.stop_w, b"x")
        if threading.current_thread() is not watch.thread:
            watch.thread.join(STOP_TIMEOUT_S)
        os.close(watch.stop_w)

    def _open_monitor(self) -> Any:
        import pyudev

        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=self.source)
        for subsystem in self.subsystems:
            monitor.filter_by(subsystem)
        monitor.start()
        return monitor

    def _run(self, monitor: Any, on_change: Callable[[str], None], stop_r: int) -> None:
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(monitor.fileno(), selectors.EVENT_READ, "monitor")
                sel.register(stop_r, selectors.EVENT_READ, "stop")
                while all(key.data == "monitor" for key, _ in sel.select()):
                    self._drain(monitor, on_change)
        except Exception:
            log.exception("hotplug watcher stopped")
        finally:
            os.close(stop_r)

    def _drain(self, monitor: Any, on_change: Callable[[str], None]) -> None:
        while True:
            try:
                device = monitor.poll(timeout=0)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                _deliver(on_change, OVERFLOW)
                continue
            if device is None:
                return
            reason = event_reason(device, self.subsystems)
            if reason:
                _deliver(on_change, reason)


class ManualHotplug:
    """HotplugSource driven by hand: `fire(reason)` calls the watcher on a thread of its
    own (in order, one at a time); fired while nobody watches, nothing happens."""

    def __init__(self) -> None:
        self._queue: queue.Queue[str | None] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def watch(self, on_change: Callable[[str], None]) -> None:
        self.stop()
        events: queue.Queue[str | None] = queue.Queue()
        thread = threading.Thread(target=self._run, args=(events, on_change),
                                  name="fluxbox-hotplug-manual", daemon=True)
        with self._lock:
            self._queue, self._thread = events, thread
        thread.start()

    def fire(self, reason: str = "manual") -> None:
        with self._lock:
            if self._queue is not None:
                self._queue.put(reason)

    def stop(self) -> None:
        with self._lock:
            events, thread = self._queue, self._thread
            self._queue = self._thread = None
        if events is None or thread is None:
            return
        events.put(None)
        if threading.current_thread() is not thread:
            thread.join(STOP_TIMEOUT_S)

    @staticmethod
    def _run(events: queue.Queue[str | None], on_change: Callable[[str], None]) -> None:
        while (reason := events.get()) is not None:
            _deliver(on_change, reason)
