"""The cached worklist of each site, and how its last sync went.

Owns ``worklist`` (site + NUL + index -> sealed encoded entry) and the ``worklist:`` keys
of ``meta`` (JSON: synced_at, result, entries, attempted_at).

Invariants kept: *encrypted at rest* (entries hold patient data, so they are sealed; no test
reads the worklist database raw yet), and a failed or partial sync never empties the cache
(`note_worklist_sync` keeps the last good list). Proved by `test_worklist.py`:
`test_a_good_sync_replaces_the_cache_and_orders_gone_leave_it`,
`test_a_failed_or_partial_sync_keeps_the_last_good_list`.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.store.index import Index
from appliance.store.records import SEQ


class WorklistCache:
    def __init__(self, index: Index) -> None:
        self.index = index
        self.db = index.db

    def replace_worklist(self, site_id: str, entries: list[bytes], now: float,
                         result: str) -> None:
        """Replace a site's cached worklist atomically (entries are encoded datasets;
        patient data, so sealed)."""
        prefix = _entry_prefix(site_id)
        with self.index.write() as txn:
            for key, _ in list(self.index.prefixed(txn, "worklist", prefix)):
                txn.delete(key, db=self.db["worklist"])
            for index, entry in enumerate(entries):
                txn.put(prefix + SEQ.pack(index), self.index.seal(entry), db=self.db["worklist"])
            meta = {"synced_at": now, "result": result, "entries": len(entries)}
            txn.put(_state_key(site_id), json.dumps(meta).encode(), db=self.db["meta"])

    def note_worklist_sync(self, site_id: str, now: float, result: str) -> None:
        """Record a sync attempt that kept the last good list (failed or partial)."""
        with self.index.write() as txn:
            raw = txn.get(_state_key(site_id), db=self.db["meta"])
            meta = json.loads(raw) if raw else {"synced_at": None, "entries": 0}
            meta.update(result=result, attempted_at=now)
            txn.put(_state_key(site_id), json.dumps(meta).encode(), db=self.db["meta"])

    def worklist(self, site_id: str) -> list[bytes]:
        with self.index.read() as txn:
            return [self.index.open(v)
                    for _, v in self.index.prefixed(txn, "worklist", _entry_prefix(site_id))]

    def worklist_state(self, site_id: str) -> dict[str, Any]:
        """{"synced_at", "result", "entries", ...} of a site's cache ({} if never synced)."""
        with self.index.read() as txn:
            raw = txn.get(_state_key(site_id), db=self.db["meta"])
        return json.loads(raw) if raw else {}


def _entry_prefix(site_id: str) -> bytes:
    return site_id.encode() + b"\0"


def _state_key(site_id: str) -> bytes:
    return b"worklist:" + site_id.encode()
