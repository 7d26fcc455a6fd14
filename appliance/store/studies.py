"""Study records: an instance received into its study, a study's site, and its end (purge).

Owns ``instances``, ``studies`` and ``members`` (study_key + inst_seq -> inst_key, a
study's instances in arrival order). Delivery state is not kept here: it is derived from
the queue's positions (`appliance/studies.py`).

Invariants kept:

- *durable before success*: `put_intake` (a data set encrypted as it arrived, `intake.py`)
  renames and syncs its blob, and `put_instance` (a plain file: tools, tests) encrypts to
  ``tmp/``, fsyncs, renames, fsyncs the folder; then each commits instance, study, members
  and positions in one LMDB transaction, and only then returns; any failure raises
  StoreFull or StoreFault and leaves nothing half-stored (`test_robustness.py`:
  `test_kill_9_during_ingest_loses_no_acknowledged_instance`,
  `test_full_disk_refuses_new_instances_and_loses_nothing`; `test_write_path.py`:
  `test_random_kills_of_the_write_path_lose_no_acknowledged_instance`; `test_store.py`:
  `test_an_index_write_error_is_a_clean_failure_and_leaves_no_blob`);
- *once, unless corrected*: the same content again is a DUPLICATE, other content replaces
  and is queued again (`test_store.py`: `test_same_uid_new_content_replaces_and_is_delivered_again`,
  `test_same_uid_under_another_study_leaves_the_old_study_and_survives_its_purge`);
- *never lost*: purge takes only complete studies, rechecked in its own transaction
  (`test_store.py`: `test_purge_removes_only_complete_studies_past_retention`,
  `test_purge_rechecks_a_study_that_received_an_instance_since_it_was_picked`);
- *only to the study's own site*: `assign_site` drops the old site's positions and
  commitments in the same transaction (`test_site_detection.py`:
  `test_a_study_assigned_to_another_site_never_reaches_the_first_sites_pacs`).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import lmdb

from appliance.store.blobs import Blobs
from appliance.store.index import Index, Txn
from appliance.store.intake import Intake
from appliance.store.journal import Journal
from appliance.store.queue import Queue
from appliance.store.records import (
    SEQ,
    InstanceRecord,
    Outcome,
    StoreFault,
    StoreFull,
    StudyRecord,
)
from appliance.validation import InstanceHeader

# The index half of put_instance: (inst_key, header, blob, digest, size, calling_aet, site,
# site_source, now, position) -> (outcome, the replaced version's blob).
CommitInstance = Callable[..., tuple[Outcome, str | None]]


class Studies:
    def __init__(self, index: Index, journal: Journal, blobs: Blobs, queue: Queue) -> None:
        self.index = index
        self.journal = journal
        self.blobs = blobs
        self.queue = queue
        self.db = index.db

    # -- receiving ---------------------------------------------------------------

    def put_instance(
        self, path: Path, header: InstanceHeader, *, calling_aet: str, site: str | None,
        site_source: str | None, now: float | None = None,
        position: tuple[float, float] | None = None, commit: CommitInstance | None = None,
    ) -> Outcome:
        """Make one received instance durable; returns once payload and index are on disk.

        Raises StoreFull (below reserve, ENOSPC) or StoreFault; nothing half-stored
        remains either way. The same content again changes nothing (DUPLICATE); the
        same SOP Instance UID with other content replaces the old version (REPLACED)
        and queues it again wherever the old one was routed. `commit` stands in for
        `commit_instance` (the facade passes its own, where tests put a failing one).
        """
        now = time.time() if now is None else now
        commit = commit or self.commit_instance
        self.blobs.check_space()
        temp, digest, size = self.blobs.encrypt_to_temp(path, header)
        inst_key = self.index.hash(header.sop_instance_uid)
        if self._is_duplicate(inst_key, digest):
            temp.unlink(missing_ok=True)
            return Outcome.DUPLICATE
        blob = self.blobs.instance_blob(header.sop_instance_uid, digest)
        final = self.blobs.path(blob)
        try:
            self.blobs.place(temp, final)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            raise (StoreFull if exc.errno == errno.ENOSPC else StoreFault)(str(exc)) from exc
        outcome, old_blob = self._index_blob(
            commit, inst_key, header, blob, digest, size,
            (calling_aet, site, site_source, now, position))
        if old_blob and old_blob != blob:
            self.blobs.unlink_replaced(old_blob)
        return outcome

    def put_intake(
        self, intake: Intake, header: InstanceHeader, *, calling_aet: str, site: str | None,
        site_source: str | None, now: float | None = None,
        position: tuple[float, float] | None = None, commit: CommitInstance | None = None,
    ) -> Outcome:
        """`put_instance` of a data set received into an `Intake` (already encrypted in its
        blob): one sync of the blob, then the index commit. Same outcomes and errors; the
        blob is removed unless the index names it."""
        now = time.time() if now is None else now
        commit = commit or self.commit_instance
        inst_key = self.index.hash(header.sop_instance_uid)
        if intake.transfer_syntax != header.transfer_syntax:  # the digest's premise
            intake.discard()
            raise StoreFault("the data set's file meta was not read as validation read it")
        try:
            self.blobs.check_space()
            if self._is_duplicate(inst_key, intake.digest):
                intake.discard()
                return Outcome.DUPLICATE
            intake.seal()
        except OSError as exc:
            intake.discard()
            raise (StoreFull if exc.errno == errno.ENOSPC else StoreFault)(str(exc)) from exc
        except StoreFull:
            intake.discard()
            raise
        outcome, old_blob = self._index_blob(
            commit, inst_key, header, intake.blob, intake.digest, intake.size,
            (calling_aet, site, site_source, now, position))
        if outcome is Outcome.DUPLICATE:
            intake.discard()
            return outcome
        intake.kept()  # first: whatever happens next, the blob the index names stays
        if old_blob:
            self.blobs.unlink_replaced(old_blob)
        return outcome

    def _is_duplicate(self, inst_key: bytes, digest: str) -> bool:
        with self.index.read() as txn:
            existing = self.index.get(txn, "instances", inst_key, InstanceRecord)
        return existing is not None and existing.digest == digest

    def _index_blob(
        self, commit: CommitInstance, inst_key: bytes, header: InstanceHeader, blob: str,
        digest: str, size: int,
        arrival: tuple[str, str | None, str | None, float, tuple[float, float] | None],
    ) -> tuple[Outcome, str | None]:
        """The index commit naming a durable `blob`; on failure the blob goes (nothing
        half-stored remains). Returns the outcome and the blob of the version replaced."""
        final = self.blobs.path(blob)
        try:
            outcome, old_blob = commit(inst_key, header, blob, digest, size, *arrival)
        except (lmdb.MapFullError, lmdb.DiskError) as exc:  # DiskError: ENOSPC at commit
            final.unlink(missing_ok=True)
            raise StoreFull(f"index full or disk full ({type(exc).__name__})") from exc
        except lmdb.Error as exc:
            final.unlink(missing_ok=True)
            raise StoreFault(f"index write failed ({type(exc).__name__})") from exc
        except OSError as exc:
            final.unlink(missing_ok=True)
            raise (StoreFull if exc.errno == errno.ENOSPC else StoreFault)(str(exc)) from exc
        return outcome, old_blob

    def commit_instance(
        self, inst_key: bytes, header: InstanceHeader, blob: str, digest: str, size: int,
        calling_aet: str, site: str | None, site_source: str | None, now: float,
        position: tuple[float, float] | None,
    ) -> tuple[Outcome, str | None]:
        """The one LMDB transaction of put_instance, once the blob is in place."""
        study_key = self.index.hash(header.study_uid)
        with self.index.write() as txn:
            existing = self.index.get(txn, "instances", inst_key, InstanceRecord)
            if existing is not None and existing.digest == digest:
                return Outcome.DUPLICATE, None
            if existing is not None and existing.study_key != study_key.hex():
                self.leave_study(txn, existing, now)  # re-sent under another Study UID
            same_study = existing is not None and existing.study_key == study_key.hex()
            study = self.index.get(txn, "studies", study_key, StudyRecord) or StudyRecord(
                key=study_key.hex(), seq=self.index.next_seq(txn), study_uid=header.study_uid,
                site=site, site_source=site_source, first_at=now, modality=header.modality,
                station_name=header.station_name, calling_aet=calling_aet,
                study_description=header.study_description, position=position,
            )
            record = InstanceRecord(
                key=inst_key.hex(), seq=existing.seq if existing else self.index.next_seq(txn),
                study_key=study.key, sop_instance_uid=header.sop_instance_uid,
                sop_class_uid=header.sop_class_uid, series_uid=header.series_uid,
                transfer_syntax=header.transfer_syntax, size_bytes=size, blob=blob,
                digest=digest, received_at=now, facts=_facts(header),
                version=existing.version + 1 if existing else 1,
            )
            study = replace(
                study, phase="receiving", last_at=now, closed_at=None, completed_at=None,
                instances=study.instances + (0 if same_study else 1),
                size_bytes=study.size_bytes + size - (
                    existing.size_bytes if existing is not None and same_study else 0),
                corrections=study.corrections + (1 if existing else 0),
            )
            self.index.put(txn, "instances", inst_key, record)
            self.index.put(txn, "studies", study_key, study)
            txn.put(study_key + SEQ.pack(record.seq), inst_key, db=self.db["members"])
            self.queue.reset_commitments(txn, study)  # a confirmation covers the study as it was
            if same_study:
                self.queue.requeue(txn, study, record)
                self.journal.event(txn, now, "instance corrected", study=study.key[:12],
                                   instance=record.key[:12], version=record.version)
            return (Outcome.REPLACED if existing else Outcome.STORED), (
                existing.blob if existing else None
            )

    def leave_study(self, txn: Txn, record: InstanceRecord, now: float) -> None:
        """An instance re-sent under another Study UID leaves its old study: no member
        entry, no position, no count there points at it any more (so purging the old study
        cannot touch the new version)."""
        old_key = bytes.fromhex(record.study_key)
        old = self.index.get(txn, "studies", old_key, StudyRecord)
        txn.delete(old_key + SEQ.pack(record.seq), db=self.db["members"])
        if old is None:
            return
        self.queue.forget_instance(txn, old, record.seq)
        old = replace(old, instances=max(0, old.instances - 1),
                      size_bytes=max(0, old.size_bytes - record.size_bytes))
        if old.instances == 0:  # nothing left of it: it goes, not held or queued forever
            self._drop_empty_study(txn, old, now)
            return
        self.index.put(txn, "studies", old_key, old)
        self.journal.event(txn, now, "instance moved to another study", study=old.key[:12],
                           instance=record.key[:12])
        self.queue.complete_if_done(txn, old.key, now)

    def _drop_empty_study(self, txn: Txn, study: StudyRecord, now: float) -> None:
        for dest in study.destinations:
            self.queue.forget_destination(txn, dest, study)
        txn.delete(bytes.fromhex(study.key), db=self.db["studies"])
        self.journal.event(txn, now, "study emptied", study=study.key[:12])

    # -- reading and changing ----------------------------------------------------------

    def studies(self) -> list[StudyRecord]:
        """Every study, oldest first."""
        with self.index.read() as txn:
            records = list(self.index.records(txn, "studies", StudyRecord))
        return sorted(records, key=lambda s: s.seq)

    def study(self, study_key: str) -> StudyRecord | None:
        with self.index.read() as txn:
            return self.index.get(txn, "studies", bytes.fromhex(study_key), StudyRecord)

    def study_instances(self, study_key: str) -> list[InstanceRecord]:
        prefix = bytes.fromhex(study_key)
        with self.index.read() as txn:
            found = (self.index.get(txn, "instances", inst_key, InstanceRecord)
                     for _, inst_key in self.index.prefixed(txn, "members", prefix))
            return [record for record in found if record is not None]

    def update_study(self, study_key: str, expect_last_at: float | None = None,
                     **changes: Any) -> StudyRecord | None:
        """Change fields of a study in one transaction.

        With `expect_last_at`, nothing changes if an instance arrived meanwhile
        (so a closing decision never races a late arrival). Returns the new record.
        """
        key = bytes.fromhex(study_key)
        with self.index.write() as txn:
            study = self.index.get(txn, "studies", key, StudyRecord)
            if study is None or (expect_last_at is not None and study.last_at != expect_last_at):
                return None
            study = replace(study, **changes)
            self.index.put(txn, "studies", key, study)
            return study

    def assign_site(self, study_key: str, site: str, site_source: str,
                    held_reason: str | None) -> StudyRecord | None:
        """Give a study another site. In the same transaction it loses the old site's
        positions and commitments, whatever its phase (a study still
        receiving keeps none for the old site's workers to find). Returns the new record."""
        key = bytes.fromhex(study_key)
        with self.index.write() as txn:
            study = self.index.get(txn, "studies", key, StudyRecord)
            if study is None:
                return None
            study = replace(study, site=site, site_source=site_source,
                            held_reason=held_reason)
            study = self.queue.drop_other_sites(txn, study)
            self.index.put(txn, "studies", key, study)
            return study

    # -- retention -----------------------------------------------------------------

    def purge(self, now: float, retention_s: float, *, below_bytes: int = 0) -> int:
        """Remove complete studies past retention, oldest first; returns how many.

        While free space is under `below_bytes`, complete studies go oldest
        first regardless of retention. A study that is not complete is never purged.
        """
        purged = 0
        for study in sorted(self.studies(), key=lambda s: s.completed_at or 0):
            if study.completed_at is None:
                continue
            expired = now - study.completed_at >= retention_s
            if not expired and self.blobs.free_bytes() >= below_bytes:
                continue
            purged += self.delete_study(study, now)
        self.journal.trim_events()
        return purged

    def delete_study(self, picked: StudyRecord, now: float) -> bool:
        """Delete a study picked as complete, if it still is, in the same transaction: an
        instance that arrived since the pick (the study is receiving again) keeps it."""
        key = bytes.fromhex(picked.key)
        blobs = []
        with self.index.write() as txn:
            study = self.index.get(txn, "studies", key, StudyRecord)
            if study is None or study.completed_at != picked.completed_at:
                return False
            for member_key, inst_key in list(self.index.prefixed(txn, "members", key)):
                record = self.index.get(txn, "instances", inst_key, InstanceRecord)
                if record is not None and record.study_key != study.key:
                    txn.delete(member_key, db=self.db["members"])  # it moved; not ours
                    continue
                if record is not None and record.blob:
                    blobs.append(record.blob)
                blobs.extend(self.blobs.drop_variants(txn, inst_key))
                txn.delete(inst_key, db=self.db["instances"])
                txn.delete(member_key, db=self.db["members"])
            for dest in study.destinations:
                self.queue.forget_destination(txn, dest, study)
            txn.delete(key, db=self.db["studies"])
            self.journal.event(txn, now, "study purged", study=study.key[:12])
        for blob in blobs:
            self.blobs.unlink(blob)
        return True


def _facts(header: InstanceHeader) -> dict[str, Any]:
    """What the study views need of an instance beyond its record's own fields."""
    return {
        "series_number": header.series_number,
        "instance_number": header.instance_number,
        "images_in_acquisition": header.images_in_acquisition,
        "number_of_frames": header.number_of_frames,
        "remarks": list(header.remarks),
    }
