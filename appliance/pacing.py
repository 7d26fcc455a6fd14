"""Link measurements -> time-outs, associations and throttle (no I/O).

Goodput and round-trip time are measured from real transfers, per destination
and link class, smoothed, and kept across restarts (the store persists the
figures). From them: how long an answer may take, how many parallel
associations to use, and the token buckets that cap the sending rate, so a
single large instance is paced too, not only the gaps between instances.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from appliance.config import TransmitConfig

BURST_S = 0.25  # a bucket holds this much of a second's allowance
EWMA = 0.3  # weight of a new measurement
PACS_WRITE_BPS = 50e6  # time a PACS may need to store what it got, beyond the base time-out


class TokenBucket:
    """Blocks `consume` so that bytes pass at most at `kbps` (kilobits per second)."""

    def __init__(self, kbps: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self.set_rate(kbps)

    def set_rate(self, kbps: int) -> None:
        with self._lock:
            self.rate_bps = kbps * 1000 / 8
            self.capacity = max(16 * 1024, self.rate_bps * BURST_S)
            self.tokens = 0.0
            self.updated = self.clock()

    def consume(self, nbytes: int) -> float:
        """Take `nbytes`; returns how long it waited."""
        if self.rate_bps <= 0:
            return 0.0
        with self._lock:  # one sender at a time keeps the shared rate exact
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate_bps)
            self.updated = now
            self.tokens -= nbytes
            wait = -self.tokens / self.rate_bps if self.tokens < 0 else 0.0
            if wait:
                self.sleep(wait)
            return wait


class Throttle:
    """The caps that apply to one link class: the global one and the class's own."""

    def __init__(self, transmit: TransmitConfig) -> None:
        self.global_bucket = TokenBucket(transmit.max_kbps)
        self.by_class = {
            "wired": TokenBucket(transmit.max_kbps_wired),
            "wifi": TokenBucket(transmit.max_kbps_wifi),
            "cellular": TokenBucket(transmit.max_kbps_cellular),
        }

    def for_class(self, link_class: str | None) -> Callable[[int], None] | None:
        buckets = [b for b in (self.global_bucket, self.by_class.get(link_class or ""))
                   if b is not None and b.rate_bps > 0]
        if not buckets:
            return None

        def consume(nbytes: int) -> None:
            for bucket in buckets:
                bucket.consume(nbytes)

        return consume


@dataclass
class LinkFigures:
    """Smoothed measurements of one destination over one link class."""

    goodput_bps: float | None = None
    rtt_s: float | None = None
    successes: int = 0
    failures: int = 0
    associations: int = 1

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Pacing:
    """Adaptive figures per (destination, link class); `adaptive = false` keeps the config."""

    def __init__(self, transmit: TransmitConfig,
                 saved: dict[str, dict[str, Any]] | None = None) -> None:
        self.transmit = transmit
        self.figures: dict[str, LinkFigures] = {
            key: LinkFigures(**value) for key, value in (saved or {}).items()}
        self._lock = threading.Lock()

    def _get(self, dest_id: str, link_class: str | None) -> LinkFigures:
        # A new link starts at the configured parallelism: on a long round trip one
        # association idles the link between instances, and failures halve it soon enough.
        key = f"{dest_id}|{link_class or 'unknown'}"
        return self.figures.setdefault(key, LinkFigures(associations=self.transmit.associations))

    def record_transfer(self, dest_id: str, link_class: str | None, nbytes: int,
                        seconds: float) -> None:
        with self._lock:
            fig = self._get(dest_id, link_class)
            if seconds > 0 and nbytes > 64 * 1024:
                rate = nbytes / seconds
                fig.goodput_bps = rate if fig.goodput_bps is None else (
                    (1 - EWMA) * fig.goodput_bps + EWMA * rate)
            fig.successes += 1
            if fig.successes % 20 == 0:  # additive increase after a run of successes
                fig.associations = min(self.transmit.associations, fig.associations + 1)

    def record_rtt(self, dest_id: str, link_class: str | None, seconds: float) -> None:
        with self._lock:
            fig = self._get(dest_id, link_class)
            fig.rtt_s = seconds if fig.rtt_s is None else (1 - EWMA) * fig.rtt_s + EWMA * seconds

    def record_failure(self, dest_id: str, link_class: str | None) -> None:
        with self._lock:
            fig = self._get(dest_id, link_class)
            fig.failures += 1
            fig.associations = max(1, fig.associations // 2)  # multiplicative decrease

    def associations(self, dest_id: str, link_class: str | None) -> int:
        if not self.transmit.adaptive:
            return self.transmit.associations
        with self._lock:
            return min(self.transmit.associations, self._get(dest_id, link_class).associations)

    def dimse_timeout_s(self, dest_id: str, link_class: str | None, size_bytes: int) -> float:
        """How long the PACS may take to answer once an instance is sent: the configured
        base, plus time to store what it got, plus a few round trips."""
        base = self.transmit.dimse_timeout_s
        if not self.transmit.adaptive:
            return base
        rtt = self._get(dest_id, link_class).rtt_s or 0.0
        return base + size_bytes / PACS_WRITE_BPS + 4 * rtt

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {key: fig.as_json() for key, fig in self.figures.items()}
