"""Where the box is: gpsd read through gpsd-py3, and a fixed stand-in.

``GpsdPosition`` asks gpsd for its latest fix on each call (gpsd's ``?POLL;``) over a socket
of its own with a time-out, so it never blocks for long, reconnects with back-off when gpsd
goes away, and gives None for anything that is not a fresh, precise enough fix.

gpsd-py3 (``import gpsd``) parses gpsd's answer (``GpsResponse.from_json``: the
'GPS not active' rule, the fix mode). Its ``connect()``/``get_current()`` are not used: they
keep one module-global socket without a time-out or a reconnect, fail on any report they do
not expect, and read the horizontal error only from epx/epy, which gpsd 3.22 does not send
for plain NMEA receivers (it sends eph).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, BinaryIO

from appliance.signals import Position

try:
    import gpsd
except Exception:  # FixedPosition still works without gpsd-py3, or with a broken one
    gpsd = None

log = logging.getLogger("fluxbox.hw.gps")

Clock = Callable[[], float]
_MAX_LINES = 20  # reports to skip while waiting for the POLL answer


class _GpsdGone(Exception):
    """The connection to gpsd failed or gpsd said something unexpected."""


class FixedPosition:
    """A PositionSource that returns whatever it was last given (None: no fix).

    For tests, and for boxes without a GPS receiver.
    """

    def __init__(self, position: Position | None = None) -> None:
        self._position = position

    @classmethod
    def at(cls, lat: float, lon: float, *, mode: int = 3, error_m: float | None = 5.0,
           when: float | None = None) -> FixedPosition:
        """A source holding a fix at `lat`, `lon` taken and read at `when` (default: now)."""
        t = time.time() if when is None else when
        return cls(Position(lat, lon, mode, error_m, fix_time=t, observed_at=t))

    def set(self, position: Position | None) -> None:
        """What `position()` returns from now on."""
        self._position = position

    def position(self) -> Position | None:
        return self._position


class GpsdPosition:
    """A PositionSource reading gpsd at `host`:`port` (gpsd's JSON protocol).

    `position()` returns None when gpsd is not there, has no receiver, or the receiver has
    no fix (mode < 2), a fix older than `max_age_s` (the fix's own time against `clock()`),
    a fix whose horizontal error (eph, else the larger of epx/epy) exceeds `max_error_m`,
    or a fix without time or coordinates. A fix without an error estimate is kept, and so
    is one whose time is ahead of `clock()` (a box clock behind GPS time).
    A call takes at most about `timeout_s` (twice that when another thread holds the
    connection) and never raises. After a failed connect the next tries wait 0.25 s,
    0.5 s, ... up to `max_backoff_s`, returning None meanwhile.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 2947, *, max_age_s: float = 10.0,
                 max_error_m: float = 100.0, clock: Clock = time.time,
                 timeout_s: float = 0.5, max_backoff_s: float = 5.0) -> None:
        if gpsd is None:
            raise ImportError("GpsdPosition needs gpsd-py3 (pip install gpsd-py3)")
        self.host, self.port = host, port
        self.max_age_s, self.max_error_m = max_age_s, max_error_m
        self.clock = clock
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._stream: BinaryIO | None = None
        self._backoff_s = 0.0
        self._retry_at = 0.0  # time.monotonic() before which no connect is tried
        self._down_logged = False

    # -- the interface ------------------------------------------------------------------

    def position(self) -> Position | None:
        """The latest fresh, precise enough fix, or None. Never raises, never blocks long."""
        try:
            report = self._poll()
            return None if report is None else self._to_position(report, self.clock())
        except Exception:  # a bug here must not take the caller down
            log.exception("reading gpsd at %s:%s", self.host, self.port)
            return None

    def close(self) -> None:
        """Drop the connection to gpsd (a later `position()` opens a new one)."""
        with self._lock:
            self._disconnect()

    def __enter__(self) -> GpsdPosition:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- talking to gpsd ----------------------------------------------------------------

    def _poll(self) -> dict[str, Any] | None:
        """gpsd's POLL answer, or None (gpsd not reachable now, or busy with another call)."""
        if not self._lock.acquire(timeout=self.timeout_s):
            return None
        deadline = time.monotonic() + self.timeout_s
        try:
            if self._stream is None and not self._connect(deadline):
                return None
            try:
                return self._request_poll(deadline)
            except (OSError, ValueError, _GpsdGone) as e:
                self._lost(e)
                return None
        finally:
            self._lock.release()

    def _connect(self, deadline: float) -> bool:
        """Connect and enable watching (gpsd opens its devices for watchers); False if that
        failed or the back-off has not run out yet."""
        if time.monotonic() < self._retry_at:
            return False
        try:
            sock = socket.create_connection(
                (self.host, self.port), timeout=max(0.01, deadline - time.monotonic()))
        except OSError as e:
            self._failed(e)
            return False
        self._sock, self._stream = sock, sock.makefile("rwb")
        try:
            welcome = self._read(deadline)
            if welcome.get("class") != "VERSION":
                raise _GpsdGone(f"not gpsd: {welcome.get('class')!r} as welcome")
            self._send(b'?WATCH={"enable":true}\n')
        except (OSError, ValueError, _GpsdGone) as e:
            self._disconnect()
            self._failed(e)
            return False
        if self._down_logged or self._backoff_s:
            log.info("gpsd at %s:%s is back", self.host, self.port)
        self._backoff_s, self._down_logged = 0.0, False
        return True

    def _request_poll(self, deadline: float) -> dict[str, Any]:
        self._send(b"?POLL;\n")
        for _ in range(_MAX_LINES):  # skip DEVICES, WATCH, DEVICE (hotplug) and the like
            report = self._read(deadline)
            if report.get("class") == "POLL":
                return report
        raise _GpsdGone("no POLL answer")

    def _send(self, data: bytes) -> None:
        assert self._stream is not None
        self._stream.write(data)
        self._stream.flush()

    def _read(self, deadline: float) -> dict[str, Any]:
        """One JSON line from gpsd, waiting no later than `deadline`."""
        assert self._sock is not None and self._stream is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("gpsd did not answer in time")
        self._sock.settimeout(remaining)
        line = self._stream.readline()
        if not line.endswith(b"\n"):
            raise _GpsdGone("gpsd closed the connection")
        report = json.loads(line)
        if not isinstance(report, dict):
            raise _GpsdGone(f"unexpected line from gpsd: {line[:80]!r}")
        return report

    def _disconnect(self) -> None:
        for closable in (self._stream, self._sock):
            if closable is not None:
                with contextlib.suppress(OSError):
                    closable.close()
        self._sock = self._stream = None

    def _lost(self, error: BaseException) -> None:
        """An open connection failed: drop it; the next call reconnects at once."""
        log.warning("lost gpsd at %s:%s: %s", self.host, self.port, error)
        self._disconnect()
        self._retry_at = 0.0

    def _failed(self, error: BaseException) -> None:
        """A connect failed: wait longer before each new try, up to `max_backoff_s`."""
        self._backoff_s = min(self.max_backoff_s, max(0.25, self._backoff_s * 2))
        self._retry_at = time.monotonic() + self._backoff_s
        if not self._down_logged:
            log.warning("no gpsd at %s:%s (%s); retrying with back-off", self.host, self.port,
                        error)
            self._down_logged = True

    # -- from gpsd's answer to a Position ---------------------------------------------------

    def _to_position(self, poll: dict[str, Any], now: float) -> Position | None:
        tpv = _best_tpv(poll)
        if tpv is None or not _has_fix(poll, tpv):
            return None
        lat, lon = tpv.get("lat"), tpv.get("lon")
        fix_time = _epoch_seconds(tpv.get("time"))
        if not (_finite(lat) and _finite(lon)) or fix_time is None:
            return None
        error_m = _horizontal_error_m(tpv)
        if error_m is not None and error_m > self.max_error_m:
            return None
        if now - fix_time > self.max_age_s:
            return None
        return Position(float(lat), float(lon), int(tpv["mode"]), error_m, fix_time, now)


def _best_tpv(poll: dict[str, Any]) -> dict[str, Any] | None:
    """The best fix among gpsd's devices: highest mode, then newest."""
    tpvs = [t for t in poll.get("tpv") or [] if isinstance(t, dict)]
    if not tpvs:
        return None
    return max(tpvs, key=lambda t: (_mode(t), str(t.get("time") or "")))


def _has_fix(poll: dict[str, Any], tpv: dict[str, Any]) -> bool:
    """gpsd-py3's reading of the answer: 'GPS not active' (no receiver) or mode < 2."""
    try:
        response = gpsd.GpsResponse.from_json(
            {**poll, "tpv": [tpv], "sky": poll.get("sky") or [{}]})
    except UserWarning:  # 'GPS not active': no device, or it was unplugged
        return False
    except (KeyError, IndexError, TypeError):  # an answer without the fields it needs
        return False
    return response.mode >= 2


def _mode(tpv: dict[str, Any]) -> int:
    mode = tpv.get("mode")
    return mode if isinstance(mode, int) else 0


def _horizontal_error_m(tpv: dict[str, Any]) -> float | None:
    """gpsd's eph, else the larger of epx/epy; None if gpsd gives neither."""
    eph = tpv.get("eph")
    if _finite(eph):
        return float(eph)
    axes = [float(v) for v in (tpv.get("epx"), tpv.get("epy")) if _finite(v)]
    return max(axes) if axes else None


def _epoch_seconds(iso: Any) -> float | None:
    """gpsd's ISO 8601 UTC time ('2024-05-01T08:00:05.000Z') as epoch seconds."""
    if not isinstance(iso, str) or not iso:
        return None
    try:
        t = dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
