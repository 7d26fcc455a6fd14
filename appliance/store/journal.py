"""The store's journal: the audit events, the settings and the traffic counters.

Owns ``events`` and the ``setting:`` and ``traffic:`` keys of ``meta``. Parts add an event
inside their own transaction (`event`), so the event is committed with what it tells.

Invariants kept: *no patient data in logs* and *encrypted at rest*: events name studies and
instances by a hash prefix, never a UID or a value, and are sealed. Proved by
`test_no_patient_data.py`: `test_no_patient_value_in_logs_views_console_or_clear_on_disk`
(after a study went through, the data partition is searched too).
"""

from __future__ import annotations

import json
import struct
import threading
import time
from typing import Any

from appliance.store.index import Index, Txn
from appliance.store.records import SEQ

EVENTS_KEPT = 100_000
_EVENT_KEY = struct.Struct(">QI")


class Journal:
    def __init__(self, index: Index) -> None:
        self.index = index
        self._event_counter = 0
        self._event_lock = threading.Lock()

    # -- audit trail -----------------------------------------------------------

    def event(self, txn: Txn, now: float, name: str, **fields: Any) -> None:
        """Add an event in `txn`; keys sort by time, the counter parts events of one instant."""
        with self._event_lock:
            self._event_counter = (self._event_counter + 1) & 0xFFFFFFFF
            key = _EVENT_KEY.pack(int(now * 1e9), self._event_counter)
        body = json.dumps({"at": now, "event": name, **fields}, separators=(",", ":"))
        txn.put(key, self.index.seal(body.encode()), db=self.index.db["events"])

    def add_event(self, name: str, now: float | None = None, **fields: Any) -> None:
        with self.index.write() as txn:
            self.event(txn, time.time() if now is None else now, name, **fields)

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` audit events, newest last."""
        out = []
        with self.index.read() as txn:
            cursor = txn.cursor(db=self.index.db["events"])
            if cursor.last():
                for _, value in cursor.iterprev():
                    out.append(self.index.open_json(value))
                    if len(out) >= limit:
                        break
        return out[::-1]

    def trim_events(self) -> None:
        """Keep the newest EVENTS_KEPT events."""
        with self.index.write() as txn:
            excess = txn.stat(self.index.db["events"])["entries"] - EVENTS_KEPT
            cursor = txn.cursor(db=self.index.db["events"])
            while excess > 0 and cursor.first():
                cursor.delete()
                excess -= 1

    # -- settings --------------------------------------------------------------

    def get_setting(self, name: str) -> str | None:
        with self.index.read() as txn:
            raw = txn.get(b"setting:" + name.encode(), db=self.index.db["meta"])
        return None if raw is None else raw.decode()

    def set_setting(self, name: str, value: str | None) -> None:
        with self.index.write() as txn:
            key = b"setting:" + name.encode()
            if value is None:
                txn.delete(key, db=self.index.db["meta"])
            else:
                txn.put(key, value.encode(), db=self.index.db["meta"])

    # -- traffic -------------------------------------------------------------------

    def add_traffic(self, txn: Txn, link_class: str, nbytes: int, now: float) -> None:
        """Count bytes sent over a link class, per local day and month (for budgets)."""
        for key in _traffic_keys(link_class, now):
            raw = txn.get(key, db=self.index.db["meta"])
            total = (SEQ.unpack(raw)[0] if raw else 0) + nbytes
            txn.put(key, SEQ.pack(total), db=self.index.db["meta"])

    def traffic(self, link_class: str, now: float) -> tuple[int, int]:
        """Bytes sent over `link_class` (today, this month)."""
        with self.index.read() as txn:
            values = [txn.get(k, db=self.index.db["meta"])
                      for k in _traffic_keys(link_class, now)]
        return tuple(SEQ.unpack(v)[0] if v else 0 for v in values)  # type: ignore[return-value]


def _traffic_keys(link_class: str, now: float) -> tuple[bytes, bytes]:
    day = time.strftime("%Y-%m-%d", time.localtime(now))
    return (f"traffic:{link_class}:{day}".encode(), f"traffic:{link_class}:{day[:7]}".encode())
