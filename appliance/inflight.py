"""Sends in flight, by study: what `assign` waits for before a study changes site.

A delivery worker holds `sending(study_key)` from the moment it asks the gate whether an
instance (or a commitment request) may go until the destination has answered it, and
counts an answer as `unsettled` until it is committed (answers are committed in groups).
`assign` holds `moving(study_key)`: new sends of that study wait, and the ones in flight
finish and their answers are committed first, so no instance reaches the old site's PACS
once the study belongs to another, and `assign` sees every delivery that happened
(PRODUCT.md: never to the wrong hospital; a study is never split). Other studies are
never held up. A worker about to wait for a moving study first commits what it holds
(`before_wait`), so the two never wait for each other.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ASSIGN_WAIT_S = 20.0  # under the control client's 30 s: `fluxbox assign` answers in time


class StudyBusy(Exception):
    """Sends of the study were still in flight when the wait ran out; nothing changed."""


class InFlight:
    """Per study: many senders at once, or one mover (who waits for the senders)."""

    def __init__(self, wait_s: float = ASSIGN_WAIT_S) -> None:
        self.wait_s = wait_s
        self._cond = threading.Condition()
        self._sending: Counter[str] = Counter()
        self._unsettled: Counter[str] = Counter()
        self._moving: set[str] = set()

    def unsettled(self, study_key: str, count: int) -> None:
        """`count` more (or, negative, fewer) answers of the study await their commit."""
        with self._cond:
            self._unsettled[study_key] += count
            if self._unsettled[study_key] <= 0:
                del self._unsettled[study_key]
            self._cond.notify_all()

    @contextmanager
    def sending(self, study_key: str,
                before_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Held around one gate check and the send it allows; waits while the study moves
        (a move lasts one store transaction once the sends before it are done), calling
        `before_wait` first."""
        with self._cond:
            moving = study_key in self._moving
        if moving:
            before_wait()
        with self._cond:
            self._cond.wait_for(lambda: study_key not in self._moving)
            self._sending[study_key] += 1
        try:
            yield
        finally:
            with self._cond:
                self._sending[study_key] -= 1
                if not self._sending[study_key]:
                    del self._sending[study_key]
                self._cond.notify_all()

    @contextmanager
    def moving(self, study_key: str) -> Iterator[None]:
        """Held while a study changes site: new sends of it wait, and it is entered only once
        the sends in flight are answered. Raises StudyBusy after `wait_s`."""
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            if not self._cond.wait_for(lambda: study_key not in self._moving,
                                       max(0.0, deadline - time.monotonic())):
                raise StudyBusy("the study is being assigned already")
            self._moving.add(study_key)
            idle = self._cond.wait_for(
                lambda: not self._sending[study_key] and not self._unsettled[study_key],
                max(0.0, deadline - time.monotonic()))
            if not idle:
                self._moving.discard(study_key)
                self._cond.notify_all()
                raise StudyBusy(f"a send of the study was still in flight after "
                                f"{self.wait_s:.0f} s; try again")
        try:
            yield
        finally:
            with self._cond:
                self._moving.discard(study_key)
                self._cond.notify_all()

    def is_sending(self, study_key: str) -> bool:
        """Whether a send of the study holds the guard (for status and tests)."""
        with self._cond:
            return bool(self._sending[study_key])

    def is_moving(self, study_key: str) -> bool:
        """Whether an assign holds or waits for the study (for status and tests)."""
        with self._cond:
            return study_key in self._moving
