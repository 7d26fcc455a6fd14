"""Exponential back-off with jitter: how long a worker waits after a failed try (delivery
to a PACS, a commitment report to a modality)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential back-off with jitter, doubling up to a cap; `clear` resets it."""

    initial_s: float
    cap_s: float
    failures: int = 0
    next_at: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def failed(self, now: float) -> float:
        self.failures += 1
        delay = min(self.cap_s, self.initial_s * 2.0 ** (self.failures - 1))
        delay *= 0.75 + self.rng.random() * 0.5
        self.next_at = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.next_at = 0.0

    def clear(self) -> None:
        self.succeeded()

    def ready(self, now: float) -> bool:
        return now >= self.next_at
