"""The box's persistent state: encrypted blobs and the LMDB index, behind one `Store`.

The only package that opens LMDB or holds the data key. `Store` composes the parts below
and delegates to them; each part owns its databases and the invariants about them (see
its docstring), and a call that spans parts runs in one LMDB transaction that the part
owning its main concept opens and hands to the others' `txn` helpers.

- `records`: record types, outcomes, exceptions (no I/O)
- `index`: the LMDB environment, sealed values, keyed hashes, sequence numbers
- `blobs`: encrypted files, durable placement, plaintext views, variants, repair
- `journal`: audit events, settings, traffic counters
- `queue`: delivery positions, Storage Commitment toward destinations, completion
- `studies`: instances into studies, site assignment, purge
- `commit_requests`: Storage Commitment asked of the box by modalities
- `messages`: MPPS messages, queued like a study
- `worklist_cache`: the cached worklist per site

Durability order for every instance (PRODUCT.md, Guarantees): encrypt into a
temporary file, fsync, rename into place, fsync the directory, commit the
index in one LMDB transaction, and only then return. A crash at any point
leaves either the old state or the new one; `repair()` removes the leftovers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from appliance.crypto import Keys
from appliance.store.blobs import Blobs, PlainStream
from appliance.store.commit_requests import CommitRequests
from appliance.store.index import MAP_SIZE_BYTES, Index
from appliance.store.intake import Intake
from appliance.store.journal import EVENTS_KEPT, Journal
from appliance.store.messages import Messages, message
from appliance.store.queue import Queue
from appliance.store.records import (
    Commitment,
    CommitRequest,
    DeliveryCounts,
    InstanceCommit,
    InstanceRecord,
    MppsMessage,
    Outcome,
    Queued,
    RepairReport,
    StoreFault,
    StoreFull,
    StudyRecord,
    destination_site,
)
from appliance.store.studies import Studies
from appliance.store.worklist_cache import WorklistCache
from appliance.validation import InstanceHeader

__all__ = [
    "EVENTS_KEPT", "MAP_SIZE_BYTES", "CommitRequest", "Commitment", "DeliveryCounts",
    "InstanceCommit", "InstanceRecord", "Intake", "MppsMessage", "Outcome", "PlainStream",
    "Queued", "RepairReport", "Store", "StoreFault", "StoreFull", "StudyRecord",
    "destination_site",
]


class Store:
    """The box's persistent state. Thread-safe: LMDB serialises writers.

    Every method delegates to the part named in its group; the promises are in the parts.
    `env`, `keys`, `_db`, `_get`, `_blob_path`, `_commit_instance` and `_delete_study` are
    there for tests that look inside or simulate a failure.
    """

    def __init__(self, data_dir: Path, data_key: bytes, *, reserve_bytes: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.keys = Keys(data_key)
        self._index = Index(self.data_dir / "index", self.keys)
        self._blobs = Blobs(self.data_dir, self._index, reserve_bytes=reserve_bytes)
        self._journal = Journal(self._index)
        self._queue = Queue(self._index, self._journal)
        self._studies = Studies(self._index, self._journal, self._blobs, self._queue)
        self._commit_requests = CommitRequests(self._index, self._queue)
        self._messages = Messages(self._index, self._journal, self._queue)
        self._worklist = WorklistCache(self._index)
        self.env = self._index.env
        self._db = self._index.db
        self._get = self._index.get
        self.blob_dir = self._blobs.blob_dir
        self.temp_dir = self._blobs.temp_dir
        self.spool_dir = self._blobs.spool_dir

    @property
    def reserve_bytes(self) -> int:
        return self._blobs.reserve_bytes

    def close(self) -> None:
        self._index.close()

    def uid_key(self, uid: str) -> str:
        return self._index.uid_key(uid)

    # -- blobs -------------------------------------------------------------------

    def _blob_path(self, name: str) -> Path:
        return self._blobs.path(name)

    def free_bytes(self) -> int:
        return self._blobs.free_bytes()

    def check_space(self) -> None:
        self._blobs.check_space()

    def write_plaintext(self, record: InstanceRecord, target: Path) -> None:
        self._blobs.write_plaintext(record, target)

    def plaintext(self, record: InstanceRecord) -> contextlib.AbstractContextManager[Path]:
        return self._blobs.plaintext(record)

    def open_plaintext(self, record: InstanceRecord) -> PlainStream:
        return self._blobs.open_plaintext(record)

    def put_variant(self, record: InstanceRecord, transfer_syntax: str,
                    path: Path | BinaryIO) -> None:
        self._blobs.put_variant(record, transfer_syntax, path)

    def variant(self, record: InstanceRecord, transfer_syntax: str) -> InstanceRecord | None:
        return self._blobs.variant(record, transfer_syntax)

    def verify_blob(self, record: InstanceRecord) -> bool:
        return self._blobs.verify_blob(record)

    def repair(self) -> RepairReport:
        return self._blobs.repair()

    # -- studies -------------------------------------------------------------------

    def put_instance(
        self, path: Path, header: InstanceHeader, *, calling_aet: str, site: str | None,
        site_source: str | None, now: float | None = None,
        position: tuple[float, float] | None = None,
    ) -> Outcome:
        return self._studies.put_instance(
            path, header, calling_aet=calling_aet, site=site, site_source=site_source,
            now=now, position=position, commit=self._commit_instance)

    def open_intake(self) -> Intake:
        return self._blobs.open_intake()

    def put_intake(
        self, intake: Intake, header: InstanceHeader, *, calling_aet: str, site: str | None,
        site_source: str | None, now: float | None = None,
        position: tuple[float, float] | None = None,
    ) -> Outcome:
        return self._studies.put_intake(
            intake, header, calling_aet=calling_aet, site=site, site_source=site_source,
            now=now, position=position, commit=self._commit_instance)

    def _commit_instance(self, *args: Any) -> tuple[Outcome, str | None]:
        """put_instance's one LMDB transaction, looked up here so a test can make it fail."""
        return self._studies.commit_instance(*args)

    def studies(self) -> list[StudyRecord]:
        return self._studies.studies()

    def study(self, study_key: str) -> StudyRecord | None:
        return self._studies.study(study_key)

    def study_by_uid(self, study_uid: str) -> StudyRecord | None:
        return self.study(self.uid_key(study_uid))

    def update_study(self, study_key: str, expect_last_at: float | None = None,
                     **changes: Any) -> StudyRecord | None:
        return self._studies.update_study(study_key, expect_last_at, **changes)

    def study_instances(self, study_key: str) -> list[InstanceRecord]:
        return self._studies.study_instances(study_key)

    def assign_site(self, study_key: str, site: str, site_source: str,
                    held_reason: str | None) -> StudyRecord | None:
        return self._studies.assign_site(study_key, site, site_source, held_reason)

    def purge(self, now: float, retention_s: float, *, below_bytes: int = 0) -> int:
        return self._studies.purge(now, retention_s, below_bytes=below_bytes)

    def _delete_study(self, picked: StudyRecord, now: float) -> bool:
        return self._studies.delete_study(picked, now)

    # -- queue -----------------------------------------------------------------------

    def enqueue(self, study_key: str, destinations: tuple[str, ...], now: float,
                commitment: tuple[str, ...] = ()) -> int:
        return self._queue.enqueue(study_key, destinations, now, commitment)

    def next_batch(
        self, dest: str, *, max_count: int, max_bytes: int, whole_study: bool,
        allowed: Callable[[StudyRecord], bool],
    ) -> list[Queued]:
        return self._queue.next_batch(dest, max_count=max_count, max_bytes=max_bytes,
                                      whole_study=whole_study, allowed=allowed)

    def record_delivered_group(self, dest: str, items: list[Queued], now: float,
                               link_class: str | None = None) -> list[str]:
        return self._queue.record_delivered_group(dest, items, now, link_class)

    def record_delivered(self, dest: str, item: Queued, now: float,
                         link_class: str | None = None) -> bool:
        return self._queue.record_delivered(dest, item, now, link_class)

    def record_failed(self, dest: str, item: Queued, reason: str, now: float) -> None:
        self._queue.record_failed(dest, item, reason, now)

    def complete_if_done(self, study_key: str, now: float) -> bool:
        """Mark a closed study complete when nothing is pending or failed anywhere."""
        with self._index.write() as txn:
            return self._queue.complete_if_done(txn, study_key, now)

    def counts(self, study: StudyRecord, dest: str) -> DeliveryCounts:
        return self._queue.counts(study, dest)

    def retry_failed(self, study_key: str | None, now: float) -> int:
        return self._queue.retry_failed(study_key, now)

    def awaiting_commitment(self, dest: str, now: float, retry_s: float) -> list[StudyRecord]:
        return self._queue.awaiting_commitment(dest, now, retry_s)

    def commitment_requested(self, dest: str, study: StudyRecord, transaction_uid: str,
                             now: float) -> None:
        self._queue.commitment_requested(dest, study, transaction_uid, now)

    def commitment_refused(self, dest: str, study: StudyRecord, reason: str,
                           now: float) -> None:
        self._queue.commitment_refused(dest, study, reason, now)

    def commitment_result(self, transaction_uid: str, failed_uids: set[str],
                          now: float) -> bool:
        return self._queue.commitment_result(transaction_uid, failed_uids, now)

    # -- commit requests of modalities ---------------------------------------------------

    def put_commit_request(self, request: CommitRequest) -> None:
        self._commit_requests.put_commit_request(request)

    def commit_requests(self) -> list[CommitRequest]:
        return self._commit_requests.commit_requests()

    def drop_commit_request(self, transaction_uid: str) -> None:
        self._commit_requests.drop_commit_request(transaction_uid)

    def instance_commit(self, sop_class_uid: str, sop_instance_uid: str, *,
                        end_to_end: bool) -> InstanceCommit:
        return self._commit_requests.instance_commit(sop_class_uid, sop_instance_uid,
                                                     end_to_end=end_to_end)

    # -- MPPS messages -------------------------------------------------------------------

    def put_message(self, step_uid: str, kind: str, payload: bytes, *, site: str | None,
                    dest: str | None, now: float, sop_class_uid: str,
                    performed_study_uid: str = "") -> StudyRecord:
        return self._messages.put_message(
            step_uid, kind, payload, site=site, dest=dest, now=now,
            sop_class_uid=sop_class_uid, performed_study_uid=performed_study_uid)

    def step_messages(self, step_key: str) -> list[MppsMessage]:
        return self._messages.step_messages(step_key)

    message = staticmethod(message)

    # -- journal ---------------------------------------------------------------------

    def add_event(self, name: str, now: float | None = None, **fields: Any) -> None:
        self._journal.add_event(name, now, **fields)

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._journal.events(limit)

    def get_setting(self, name: str) -> str | None:
        return self._journal.get_setting(name)

    def set_setting(self, name: str, value: str | None) -> None:
        self._journal.set_setting(name, value)

    def traffic(self, link_class: str, now: float) -> tuple[int, int]:
        return self._journal.traffic(link_class, now)

    # -- worklist cache ------------------------------------------------------------------

    def replace_worklist(self, site_id: str, entries: list[bytes], now: float,
                         result: str) -> None:
        self._worklist.replace_worklist(site_id, entries, now, result)

    def note_worklist_sync(self, site_id: str, now: float, result: str) -> None:
        self._worklist.note_worklist_sync(site_id, now, result)

    def worklist(self, site_id: str) -> list[bytes]:
        return self._worklist.worklist(site_id)

    def worklist_state(self, site_id: str) -> dict[str, Any]:
        return self._worklist.worklist_state(site_id)
