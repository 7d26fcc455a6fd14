"""A GPS receiver for the tests: a drive written as NMEA and replayed by gpsd's ``gpsfake``.

- ``drive()``: the drive as epochs (cold start, a stale warm-start fix, parked at hospital A,
  leaving A on a 2D fix, an urban canyon with a poor 2D fix off the road, a tunnel, parked
  at hospital B), each with the time it is due relative to the start of the replay.
- ``nmea(epochs, t0)``: the NMEA log (RMC + GGA + GSA per epoch) with fix times ``t0 + due``,
  so fixes are as fresh as a real receiver's while gpsfake replays faster than 1 Hz.
- ``GpsFake``: gpsfake (its own gpsd on a free loopback port) replaying such a log once.
  It runs in its own process group and is killed with that group on ``stop()``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from tests.support.ports import LOOPBACK, free_port, port_open
from tests.support.processes import die_with_parent

GPSFAKE = shutil.which("gpsfake")
GPSD = shutil.which("gpsd") or ("/usr/sbin/gpsd" if os.path.exists("/usr/sbin/gpsd") else None)
MISSING = (
    None if GPSFAKE and GPSD
    else "gpsfake/gpsd not installed (Debian: apt-get install gpsd gpsd-clients)"
)

HOSPITAL_A = (51.5171, -0.1742)
HOSPITAL_B = (51.4988, -0.1749)
SENTENCES_PER_EPOCH = 3  # RMC, GGA, GSA
UERE_M = 19.0  # gpsd 3.22 reports eph = 19 m x HDOP for these NMEA sentences
METRES_PER_DEG = 111_320.0


# --------------------------------------------------------------------------- the drive


@dataclass(frozen=True)
class Epoch:
    """What the receiver says once: a fix (mode 2 or 3) or none (mode 1)."""

    leg: str
    due_s: float  # when it is sent, from the start of the replay
    lat: float | None = None
    lon: float | None = None
    mode: int = 1
    hdop: float = 0.9
    time_shift_s: float = 0.0  # the fix's time minus when it is sent (< 0: an old fix)
    speed_kn: float = 0.0
    course: float = 0.0

    @property
    def fixed(self) -> bool:
        return self.mode >= 2 and self.lat is not None and self.lon is not None


def offset(origin: tuple[float, float], north_m: float, east_m: float) -> tuple[float, float]:
    """The point `north_m` north and `east_m` east of `origin` (flat earth; fine for km)."""
    lat = origin[0] + north_m / METRES_PER_DEG
    lon = origin[1] + east_m / (METRES_PER_DEG * math.cos(math.radians(origin[0])))
    return lat, lon


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Flat-earth distance between two nearby points."""
    north = (b[0] - a[0]) * METRES_PER_DEG
    east = (b[1] - a[1]) * METRES_PER_DEG * math.cos(math.radians(a[0]))
    return math.hypot(north, east)


def _along(f: float) -> tuple[float, float]:
    return (HOSPITAL_A[0] + (HOSPITAL_B[0] - HOSPITAL_A[0]) * f,
            HOSPITAL_A[1] + (HOSPITAL_B[1] - HOSPITAL_A[1]) * f)


def distance_from_route_m(p: tuple[float, float]) -> float:
    """How far `p` is from the straight road A -> B."""
    best = min(range(101), key=lambda i: distance_m(p, _along(i / 100)))
    return distance_m(p, _along(best / 100))


# (leg, epochs, mode, hdop, route fraction from, to, north offset m, time shift s)
_LEGS: tuple[tuple[str, int, int, float, float, float, float, float], ...] = (
    ("cold", 6, 1, 99.0, 0, 0, 0, 0),
    ("stale", 4, 3, 0.9, 1, 1, 0, -3600),  # warm start: last night's fix at B, an hour old
    ("A", 12, 3, 0.9, 0, 0, 0, 0),
    ("leaving", 4, 2, 1.5, 0, 0.2, 0, 0),  # a good 2D fix
    ("driving", 5, 3, 0.9, 0.2, 0.5, 0, 0),
    ("canyon", 4, 2, 30.0, 0.5, 0.6, 600, 0),  # a 2D fix 600 m off the road, eph ~570 m
    ("tunnel", 5, 1, 99.0, 0, 0, 0, 0),
    ("arriving", 4, 3, 0.9, 0.8, 1, 0, 0),
    ("B", 12, 3, 0.9, 1, 1, 0, 0),
)


def drive(period_s: float = 0.3) -> list[Epoch]:
    """The whole drive, one epoch every `period_s` seconds."""
    epochs: list[Epoch] = []
    for leg, n, mode, hdop, f0, f1, north_m, shift in _LEGS:
        for k in range(n):
            f = f0 + (f1 - f0) * (k + 1) / n
            lat, lon = offset(_along(f), north_m, 0.0)
            moving = f1 != f0
            epochs.append(Epoch(
                leg, len(epochs) * period_s, lat if mode >= 2 else None,
                lon if mode >= 2 else None, mode, hdop, shift,
                speed_kn=20.0 if moving else 0.0, course=180.0 if moving else 0.0))
    return epochs


def parked(place: tuple[float, float], epochs: int, period_s: float = 0.3,
           leg: str = "parked") -> list[Epoch]:
    """The receiver at `place` with a good 3D fix for `epochs` epochs."""
    return [Epoch(leg, k * period_s, place[0], place[1], 3) for k in range(epochs)]


def shifted(epochs: list[Epoch], by_s: float) -> list[Epoch]:
    """The same epochs, all due `by_s` seconds later."""
    return [replace(e, due_s=e.due_s + by_s) for e in epochs]


# --------------------------------------------------------------------------- NMEA


def _sentence(body: str) -> str:
    checksum = 0
    for ch in body:
        checksum ^= ord(ch)
    return f"${body}*{checksum:02X}"


def _dm(value: float, is_lat: bool) -> tuple[str, str]:
    hemi = ("N" if value >= 0 else "S") if is_lat else ("E" if value >= 0 else "W")
    value = abs(value)
    deg = int(value)
    minutes = (value - deg) * 60
    text = f"{deg:02d}{minutes:07.4f}" if is_lat else f"{deg:03d}{minutes:07.4f}"
    return text, hemi


def _epoch_sentences(e: Epoch, t0: float) -> list[str]:
    t = dt.datetime.fromtimestamp(t0 + e.due_s + e.time_shift_s, dt.UTC)
    hms = t.strftime("%H%M%S") + f".{t.microsecond // 10_000:02d}"
    dmy = t.strftime("%d%m%y")
    if not e.fixed:
        return [_sentence(f"GPRMC,{hms},V,,,,,,,{dmy},,,N"),
                _sentence(f"GPGGA,{hms},,,,,0,00,99.99,,,,,,"),
                _sentence("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99")]
    assert e.lat is not None and e.lon is not None
    la, lah = _dm(e.lat, True)
    lo, loh = _dm(e.lon, False)
    sats = "01,02,03,04,05,06,07,08" if e.mode == 3 else "01,02,03"
    alt = "45.0,M,47.0,M" if e.mode == 3 else ",,,"  # no altitude: gpsd reports 2D
    # GSA first: gpsd then computes the fix's eph from this epoch's DOP, not the last one's.
    return [
        _sentence(f"GPGSA,A,{e.mode},{sats}{',' * (12 - len(sats.split(',')))},"
                  f"{e.hdop + 0.6:.1f},{e.hdop:.1f},{e.hdop + 0.3:.1f}"),
        _sentence(f"GPRMC,{hms},A,{la},{lah},{lo},{loh},{e.speed_kn:.1f},{e.course:.1f},"
                  f"{dmy},,,A"),
        _sentence(f"GPGGA,{hms},{la},{lah},{lo},{loh},1,{len(sats.split(',')):02d},"
                  f"{e.hdop:.1f},{alt},,"),
    ]


def nmea(epochs: list[Epoch], t0: float) -> str:
    """The NMEA log for `epochs`, fix times counted from `t0` (epoch seconds)."""
    lines = ["# Flux Box test drive, generated by tests/gpsfake.py"]
    for e in epochs:
        lines += _epoch_sentences(e, t0)
    return "\r\n".join(lines) + "\r\n"


# --------------------------------------------------------------------------- processes


class GpsFake:
    """gpsfake replaying `epochs` once, `period_s` per epoch, its gpsd on `port`.

    ``start()`` returns once gpsd listens; the replay starts within about a second, and
    fix times count from ``t0``, an estimate of that moment. After the last epoch the
    receiver falls silent (gpsd then reports mode 0) until ``stop()``.
    """

    def __init__(self, epochs: list[Epoch], *, port: int | None = None,
                 period_s: float = 0.3, start_timeout_s: float = 10.0) -> None:
        self.epochs = epochs
        self.port = port or free_port()
        self.period_s = period_s
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.t0 = 0.0  # time.time() when the replay is expected to start

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "gpsfake.log"

    def start(self) -> None:
        if MISSING:
            raise RuntimeError(MISSING)
        if port_open(LOOPBACK, self.port, 0.2):
            raise RuntimeError(f"port {self.port} is already in use: a stale gpsd?")
        self.workdir = Path(tempfile.mkdtemp(prefix="gpsfake-"))
        # Fix times count from when the replay starts: about 1 s from now.
        self.t0 = time.time() + 1.0
        log = self.workdir / "drive.nmea"
        log.write_text(nmea(self.epochs, self.t0), encoding="ascii")
        cycle = self.period_s / SENTENCES_PER_EPOCH
        args = [GPSFAKE or "gpsfake", "-1", "-q", "-n", "-P", str(self.port),
                "-c", f"{cycle:.4f}", "-W", "3600", str(log)]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                # SIGTERM, not SIGKILL: gpsfake then kills its gpsd on the way out
                cwd=self.workdir, start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM))
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not port_open(LOOPBACK, self.port, 0.2):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gpsfake exited with {self.proc.returncode}: "
                                   f"{self.log_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"gpsd did not listen on {self.port} within "
                                   f"{self.start_timeout_s} s: {self.log_text()}")
            time.sleep(0.05)

    def done(self, slack_s: float = 0.5) -> bool:
        """Whether the last epoch has been sent (by the clock, plus `slack_s`)."""
        last = self.epochs[-1].due_s + self.period_s if self.epochs else 0.0
        return time.time() > self.t0 + last + slack_s

    def stop(self) -> None:
        """Kill gpsfake and its gpsd (the whole process group) and wait for them."""
        proc, self.proc = self.proc, None
        if proc is not None:
            for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=wait_s)
                    break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # gpsd, if it outlived gpsfake
            # gpsd's control socket; gpsd leaves it behind when killed
            with contextlib.suppress(OSError):
                os.unlink(f"/tmp/gpsfake-{proc.pid}.sock")
            deadline = time.monotonic() + 5.0  # a killed gpsd may hold the port a moment
            while port_open(LOOPBACK, self.port, 0.2) and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def log_text(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except (OSError, AssertionError):
            return ""

    def __enter__(self) -> GpsFake:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
