"""The supervisor: runs the signal watchers, restarts any that fail or hang, and hands
the core one consistent snapshot.

Each watcher polls one source on a thread of its own. A poll that raises is
retried with back-off; a poll that hangs past its time-out is abandoned and a
fresh thread started (Python threads cannot be killed), both logged once. A
missing or broken source only weakens the site decision: the box keeps running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.logs import event
from appliance.signals import Snapshot

log = logging.getLogger("fluxbox.supervisor")


@dataclass
class Watcher:
    """One source, polled every `interval_s` (or at once when poked)."""

    name: str
    poll: Callable[[], Any]
    interval_s: float
    timeout_s: float
    value: Any = None
    observed_at: float = 0.0
    failures: int = 0
    restarts: int = 0
    last_error: str | None = None
    _started_poll_at: float | None = None
    _thread: threading.Thread | None = None
    _wake: threading.Event = field(default_factory=threading.Event)
    _generation: int = 0

    def due_after(self) -> float:
        backoff = min(300.0, self.interval_s * 2 ** self.failures) if self.failures else 0
        return max(self.interval_s, backoff)


class Supervisor:
    def __init__(self, watchers: list[Watcher], *, on_snapshot: Callable[[Snapshot], None],
                 tick_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.watchers = {w.name: w for w in watchers}
        self.on_snapshot = on_snapshot
        self.tick_s = tick_s
        self.clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_tick_at = 0.0

    # -- watchers --------------------------------------------------------------

    def _run_watcher(self, watcher: Watcher, generation: int) -> None:
        while not self._stop.is_set() and watcher._generation == generation:
            watcher._started_poll_at = self.clock()
            try:
                value = watcher.poll()
            except Exception as exc:
                self._failed(watcher, f"{type(exc).__name__}")
            else:
                with self._lock:
                    if watcher._generation == generation:
                        watcher.value, watcher.observed_at = value, self.clock()
                        if watcher.failures:
                            event(log, "watcher recovered", watcher=watcher.name)
                        watcher.failures, watcher.last_error = 0, None
            watcher._started_poll_at = None
            watcher._wake.wait(watcher.due_after())
            watcher._wake.clear()

    def _failed(self, watcher: Watcher, error: str) -> None:
        with self._lock:
            watcher.failures += 1
            if watcher.last_error != error:
                event(log, "watcher failed", logging.WARNING, watcher=watcher.name, error=error,
                      retry_in_s=round(watcher.due_after(), 1))
            watcher.last_error = error

    def _start_watcher(self, watcher: Watcher) -> None:
        watcher._generation += 1
        watcher._thread = threading.Thread(
            target=self._run_watcher, args=(watcher, watcher._generation),
            name=f"watch-{watcher.name}", daemon=True)
        watcher._thread.start()

    def check_watchers(self, now: float) -> None:
        """Restart watchers whose thread died or whose poll hangs (one step, for tests)."""
        for watcher in self.watchers.values():
            started = watcher._started_poll_at
            hung = started is not None and now - started > watcher.timeout_s
            dead = watcher._thread is None or not watcher._thread.is_alive()
            if hung or dead:
                if watcher._thread is not None:
                    watcher.restarts += 1
                    self._failed(watcher, "hung" if hung else "stopped")
                    watcher._started_poll_at = None
                self._start_watcher(watcher)

    # -- snapshot and loop ---------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The latest value of every watcher. The links watcher gives (links, routes)."""
        with self._lock:
            get = {name: w.value for name, w in self.watchers.items()}
            links, routes = get.get("links") or ((), {})
            links_watcher = self.watchers.get("links")
            return Snapshot(
                taken_at=self.clock(), position=get.get("position"), links=tuple(links),
                links_at=links_watcher.observed_at if links_watcher else 0.0,
                routes=dict(routes), modem=get.get("modem"), nodes=dict(get.get("nodes") or {}),
            )

    def poke(self, reason: str) -> None:
        """Hotplug: poll the links and modem now, not at the next interval."""
        event(log, "re-evaluating", reason=reason)
        for name in ("links", "modem"):
            if name in self.watchers:
                self.watchers[name]._wake.set()

    def tick(self) -> Snapshot:
        now = self.clock()
        self.check_watchers(now)
        snap = self.snapshot()
        self.on_snapshot(snap)
        self._last_tick_at = now
        return snap

    def alive(self, now: float | None = None) -> bool:
        """For the watchdog: the supervisor loop ticked recently."""
        now = self.clock() if now is None else now
        return self._thread is not None and self._thread.is_alive() and (
            now - self._last_tick_at < 10 * self.tick_s + 5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("supervisor tick failed")
            self._stop.wait(self.tick_s)

    def start(self, first_reading_s: float = 5.0) -> None:
        """Start the watchers, wait (bounded) for a first reading of each, then tick."""
        self.check_watchers(self.clock())
        deadline = time.monotonic() + first_reading_s
        while time.monotonic() < deadline and not all(
                w.observed_at or w.failures for w in self.watchers.values()):
            time.sleep(0.02)
        self.tick()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        for watcher in self.watchers.values():
            watcher._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def health(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: {"observed_at": w.observed_at or None, "failures": w.failures,
                           "restarts": w.restarts, "error": w.last_error}
                    for name, w in self.watchers.items()}
