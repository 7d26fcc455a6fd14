"""Acknowledgments committed in groups: one LMDB commit (one sync) for many answers.

A PACS's success or warning is held here until the group is full, old, or the
association's work ends (`flush`, also when it breaks), then committed in one transaction
(`Store.record_delivered_group`). A crash loses at most the answers of the group not yet
committed (besides the instance in flight): those instances reach the PACS again, as an
instance in flight at a crash always could. A study completes when the group that holds
its last answer is committed. Until then its answers count as unsettled in `InFlight`,
so `assign` waits for the commit and sees the delivery (a study is never split).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from appliance.inflight import InFlight
from appliance.store import Queued

ACK_GROUP_MAX = 64  # answers per commit at most
ACK_GROUP_S = 0.2  # an answer waits at most this long (plus one send) for its commit


class AckGroup:
    """Answers of one association not yet committed. `commit` records a group and returns
    the studies it completed; `add` and `flush` return them too."""

    def __init__(self, commit: Callable[[list[Queued]], list[str]], in_flight: InFlight, *,
                 max_items: int = ACK_GROUP_MAX, max_s: float = ACK_GROUP_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._commit = commit
        self._in_flight = in_flight
        self._max_items = max_items
        self._max_s = max_s
        self._monotonic = monotonic
        self._items: list[Queued] = []
        self._since = 0.0

    def add(self, item: Queued) -> list[str]:
        """Hold one answer; commits the group if it is now full or old."""
        if not self._items:
            self._since = self._monotonic()
        self._in_flight.unsettled(item.study.key, 1)
        self._items.append(item)
        return self.flush_if_due()

    def flush_if_due(self) -> list[str]:
        """Commit the group if it is full or its first answer waited `max_s`."""
        if len(self._items) >= self._max_items or (
                self._items and self._monotonic() - self._since >= self._max_s):
            return self.flush()
        return []

    def flush(self) -> list[str]:
        """Commit what is held (nothing: no transaction)."""
        if not self._items:
            return []
        items, self._items = self._items, []
        try:
            return self._commit(items)
        finally:
            for item in items:
                self._in_flight.unsettled(item.study.key, -1)
