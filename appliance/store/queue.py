"""Delivery positions and Storage Commitment toward each destination; when a study is
complete.

Owns ``pending``, ``acked`` and ``failed`` (key: dest + NUL + study_seq + inst_seq; pending
and failed hold inst_key + study_key, failed then the reason; acked holds the mark of the
version acknowledged), ``commitments`` (dest + NUL + study_seq -> JSON Commitment and its
study key) and ``transactions`` (Transaction UID -> commitment key + study key). ``pending``
keys sort oldest study first, so a destination's queue is a cursor walk.

Invariants kept:

- *resumable delivery*: acknowledgments move positions in groups, one transaction each
  (`record_delivered_group`; the worker commits a group before an association ends), so a
  drop resends at most what was in flight, a crash at most that and one uncommitted group
  (`test_core_path.py`: `test_pacs_aborting_mid_batch_resends_only_what_was_in_flight`;
  `test_robustness.py`: `test_kill_9_during_delivery_resends_at_most_what_was_in_flight`);
- *complete means delivered*: `complete_if_done` marks a study complete only with nothing
  pending or failed at any of its destinations and commitment confirmed where asked
  (`test_commitment.py`: `test_study_is_complete_only_after_orthanc_commits_it`;
  `test_store.py`: `test_commitment_gates_completion_and_failed_instances_are_sent_again`);
- *only to the study's own site*: `drop_other_sites` removes every position and commitment
  of another site's destinations in the caller's transaction (`test_site_detection.py`:
  `test_a_study_assigned_to_another_site_never_reaches_the_first_sites_pacs`; the model
  test `test_store_model.py`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace

from appliance.store.index import Index, Txn
from appliance.store.journal import Journal
from appliance.store.records import (
    SEQ,
    Commitment,
    DeliveryCounts,
    InstanceRecord,
    Queued,
    StudyRecord,
    destination_site,
)

POSITIONS = ("pending", "acked", "failed")
_ORPHAN = b"the box no longer holds this instance"


def position_key(dest: str, study_seq: int, inst_seq: int) -> bytes:
    return dest.encode() + b"\0" + SEQ.pack(study_seq) + SEQ.pack(inst_seq)


def study_prefix(dest: str, study: StudyRecord) -> bytes:
    """The prefix of a study's positions at `dest`, and the key of its commitment there."""
    return dest.encode() + b"\0" + study.seq_bytes


class Queue:
    def __init__(self, index: Index, journal: Journal) -> None:
        self.index = index
        self.journal = journal
        self.db = index.db

    # -- positions, inside a caller's transaction --------------------------------------

    def add_pending(self, txn: Txn, dest: str, study: StudyRecord,
                    record: InstanceRecord) -> None:
        """`record` becomes pending at `dest`; an acknowledgment or failure there is dropped."""
        key = position_key(dest, study.seq, record.seq)
        txn.delete(key, db=self.db["acked"])
        txn.delete(key, db=self.db["failed"])
        txn.put(key, bytes.fromhex(record.key) + bytes.fromhex(study.key), db=self.db["pending"])

    def requeue(self, txn: Txn, study: StudyRecord, record: InstanceRecord) -> None:
        """A new version must reach every destination the old one was routed to."""
        for dest in study.destinations:
            self.add_pending(txn, dest, study, record)

    def forget_instance(self, txn: Txn, study: StudyRecord, inst_seq: int) -> None:
        """Every position of one instance of `study`, at each of its destinations."""
        for dest in study.destinations:
            position = position_key(dest, study.seq, inst_seq)
            for db in POSITIONS:
                txn.delete(position, db=self.db[db])

    def forget_destination(self, txn: Txn, dest: str, study: StudyRecord) -> None:
        """Every position (pending, acknowledged, failed) and the commitment of `study` at
        `dest`."""
        txn.delete(study_prefix(dest, study), db=self.db["commitments"])
        for db in POSITIONS:
            for position, _ in list(self.index.prefixed(txn, db, study_prefix(dest, study))):
                txn.delete(position, db=self.db[db])

    def reset_commitments(self, txn: Txn, study: StudyRecord) -> None:
        """The study's content changed: every destination must be asked to commit again."""
        for dest in study.destinations:
            txn.delete(study_prefix(dest, study), db=self.db["commitments"])

    def drop_other_sites(self, txn: Txn, study: StudyRecord) -> StudyRecord:
        """The study without destinations of other sites, nor any of their positions (`retry`
        would queue failed ones again; purge, which looks at the study's own destinations,
        would leave them behind) and commitments."""
        own = [d for d in study.destinations if destination_site(d) == study.site]
        others = [d for d in study.destinations if destination_site(d) != study.site]
        for dest in others:
            self.forget_destination(txn, dest, study)
        if not others:
            return study
        commits = tuple(d for d in study.commit_destinations if destination_site(d) == study.site)
        return replace(study, destinations=tuple(own), commit_destinations=commits)

    def _open_at(self, txn: Txn, dest: str, study: StudyRecord) -> bool:
        """Whether anything of `study` is pending or failed at `dest`."""
        prefix = study_prefix(dest, study)
        return any(self.index.has_prefix(txn, db, prefix) for db in ("pending", "failed"))

    # -- routing and sending ---------------------------------------------------------

    def enqueue(self, study_key: str, destinations: tuple[str, ...], now: float,
                commitment: tuple[str, ...] = ()) -> int:
        """Route a study: every instance not yet delivered or failed becomes pending.

        `commitment` names the destinations that must also confirm Storage
        Commitment before the study is complete. Destinations of another site than the
        study's (it was assigned elsewhere) lose their positions and commitments and are no
        longer the study's. Safe to repeat; returns how many positions were added.
        """
        key = bytes.fromhex(study_key)
        added = 0
        with self.index.write() as txn:
            study = self.index.get(txn, "studies", key, StudyRecord)
            if study is None:
                return 0
            members = list(self.index.prefixed(txn, "members", key))
            study = self.drop_other_sites(txn, study)
            for dest in destinations:
                for member_key, inst_key in members:
                    position = study_prefix(dest, study) + member_key[16:]
                    if any(txn.get(position, db=self.db[db]) is not None for db in POSITIONS):
                        continue
                    txn.put(position, inst_key + key, db=self.db["pending"])
                    added += 1
            merged = tuple(dict.fromkeys(study.destinations + destinations))
            commits = tuple(dict.fromkeys(study.commit_destinations + commitment))
            # A complete study with new positions (assigned to another site) is complete no
            # more: purge must not take it before the new destinations have it.
            completed_at = None if added else study.completed_at
            self.index.put(txn, "studies", key, replace(
                study, destinations=merged, commit_destinations=commits,
                completed_at=completed_at))
            if added:
                self.journal.event(txn, now, "study queued", study=study.key[:12],
                                   positions=added)
        return added

    def next_batch(
        self, dest: str, *, max_count: int, max_bytes: int, whole_study: bool,
        allowed: Callable[[StudyRecord], bool],
    ) -> list[Queued]:
        """The next instances to send to `dest`, oldest study first.

        Studies for which `allowed` is false are skipped whole. At least one instance is
        returned when any is allowed, even if it alone exceeds `max_bytes`.
        """
        batch: list[Queued] = []
        orphans: list[bytes] = []
        total = 0
        verdicts: dict[bytes, StudyRecord | None] = {}
        with self.index.read() as txn:
            for position, value in self.index.prefixed(txn, "pending", dest.encode() + b"\0"):
                inst_key, study_key = value[:16], value[16:]
                if study_key not in verdicts:
                    if whole_study and batch:
                        break
                    study = self.index.get(txn, "studies", study_key, StudyRecord)
                    verdicts[study_key] = study if study and allowed(study) else None
                study = verdicts[study_key]
                if study is None:
                    continue
                record = self.index.get(txn, "instances", inst_key, InstanceRecord)
                if record is None or record.study_key != study.key:
                    orphans.append(position)  # never block the queue behind it
                    continue
                if batch and (len(batch) >= max_count or total + record.size_bytes > max_bytes):
                    break
                batch.append(Queued(position, record, study))
                total += record.size_bytes
        if orphans:
            self._fail_orphans(dest, orphans)
        return batch

    def _fail_orphans(self, dest: str, positions: list[bytes]) -> None:
        """Positions whose instance record is gone (or belongs to another study now) are
        failed with that reason, so the destination goes on with the rest."""
        with self.index.write() as txn:
            for position in positions:
                value = txn.pop(position, db=self.db["pending"])
                if value is not None:
                    txn.put(position, value[:32] + _ORPHAN, db=self.db["failed"])
                    self.journal.event(txn, time.time(), "instance failed", destination=dest,
                                       reason=_ORPHAN.decode())

    def record_delivered(self, dest: str, item: Queued, now: float,
                         link_class: str | None = None) -> bool:
        """Record one success or warning from `dest` (see `record_delivered_group`);
        True when this completed the study at every destination it is routed to."""
        return bool(self.record_delivered_group(dest, [item], now, link_class))

    def record_delivered_group(self, dest: str, items: list[Queued], now: float,
                               link_class: str | None = None) -> list[str]:
        """Record successes and warnings from `dest` in one transaction, committed before
        returning (a crash before it loses the group's answers: those instances are sent
        again). The bytes count against `link_class`'s traffic in the same transaction.
        An instance replaced while in flight keeps its position pending, so the new version
        is sent; a position no longer pending (its study was assigned elsewhere meanwhile)
        is left alone. Returns the studies this completed at every destination."""
        with self.index.write() as txn:
            for item in items:
                if link_class is not None:
                    self.journal.add_traffic(txn, link_class, item.instance.size_bytes, now)
                if txn.get(item.pending_key, db=self.db["pending"]) is None:
                    continue
                current = self._current(txn, item)
                if current is None or current.digest != item.instance.digest:
                    continue
                txn.delete(item.pending_key, db=self.db["pending"])
                txn.put(item.pending_key, self.index.ack_mark(current), db=self.db["acked"])
            studies = dict.fromkeys(item.study.key for item in items)
            return [key for key in studies if self.complete_if_done(txn, key, now)]

    def record_failed(self, dest: str, item: Queued, reason: str, now: float) -> None:
        """A permanent refusal: the position moves from pending to failed with its reason.
        A refusal of a version replaced meanwhile changes nothing: the new one is sent."""
        with self.index.write() as txn:
            if txn.get(item.pending_key, db=self.db["pending"]) is None:
                return
            current = self._current(txn, item)
            if current is not None and current.digest != item.instance.digest:
                return
            value = txn.pop(item.pending_key, db=self.db["pending"])
            if value is None:  # no longer pending: nothing to fail
                return
            txn.put(item.pending_key, value[:32] + reason.encode(), db=self.db["failed"])
            self.journal.event(txn, now, "instance failed", destination=dest,
                               study=item.study.key[:12], instance=item.instance.key[:12],
                               reason=reason)

    def _current(self, txn: Txn, item: Queued) -> InstanceRecord | None:
        """The instance's record as it is now (another version may have arrived)."""
        return self.index.get(txn, "instances", bytes.fromhex(item.instance.key),
                              InstanceRecord)

    def complete_if_done(self, txn: Txn, study_key: str, now: float) -> bool:
        """Mark a closed study complete when nothing is pending or failed anywhere and every
        commitment asked for is confirmed; returns whether this call completed it."""
        key = bytes.fromhex(study_key)
        study = self.index.get(txn, "studies", key, StudyRecord)
        if study is None or study.phase != "closed" or study.completed_at is not None:
            return False
        if not study.destinations or study.held_reason:
            return False  # held, or routed nowhere: delivered to no one, so never complete
        for dest in study.destinations:
            if self._open_at(txn, dest, study):
                return False
            if dest in study.commit_destinations:
                commitment = self.commitment(txn, dest, study)
                if commitment is None or commitment.state != "confirmed":
                    return False
        self.index.put(txn, "studies", key, replace(study, completed_at=now))
        self.journal.event(txn, now, "study complete", study=study.key[:12])
        return True

    def counts(self, study: StudyRecord, dest: str) -> DeliveryCounts:
        prefix = study_prefix(dest, study)
        with self.index.read() as txn:
            pending = sum(1 for _ in self.index.prefixed(txn, "pending", prefix))
            delivered = sum(1 for _ in self.index.prefixed(txn, "acked", prefix))
            reasons = [v[32:].decode() for _, v in self.index.prefixed(txn, "failed", prefix)]
            commitment = (self.commitment(txn, dest, study)
                          if dest in study.commit_destinations else None)
        awaiting = dest in study.commit_destinations and (
            commitment is None or commitment.state == "requested")
        failed = len(reasons)
        if commitment is not None and commitment.state == "refused":
            reasons.append(commitment.reason or "storage commitment refused")
            failed = max(failed, 1)
        return DeliveryCounts(delivered, pending, failed, tuple(dict.fromkeys(reasons)),
                              awaiting_commitment=awaiting and not pending and not failed)

    def retry_failed(self, study_key: str | None, now: float) -> int:
        """Move failed positions (of one study, or all) back to pending, and forget refused
        commitments so they are asked again; returns how many positions moved."""
        owner = bytes.fromhex(study_key) if study_key else None
        moved = 0
        with self.index.write() as txn:
            for key, raw in list(txn.cursor(db=self.db["commitments"])):
                record = json.loads(raw)
                if record["state"] == "refused" and (owner is None or
                                                     record["study_key"] == owner.hex()):
                    txn.delete(key, db=self.db["commitments"])
                    moved += 1
            for position, value in list(txn.cursor(db=self.db["failed"])):
                if owner is not None and value[16:32] != owner:
                    continue
                txn.delete(position, db=self.db["failed"])
                txn.put(position, value[:32], db=self.db["pending"])
                moved += 1
            if moved:
                self.journal.event(txn, now, "retry", positions=moved)
        return moved

    # -- Storage Commitment toward a destination --------------------------------------

    def commitment(self, txn: Txn, dest: str, study: StudyRecord) -> Commitment | None:
        raw = txn.get(study_prefix(dest, study), db=self.db["commitments"])
        if raw is None:
            return None
        record = json.loads(raw)
        record.pop("study_key", None)
        return Commitment(**record)

    def _put_commitment(self, txn: Txn, dest: str, study: StudyRecord,
                        commitment: Commitment) -> None:
        body = {**asdict(commitment), "study_key": study.key}
        txn.put(study_prefix(dest, study), json.dumps(body).encode(),
                db=self.db["commitments"])

    def awaiting_commitment(self, dest: str, now: float, retry_s: float) -> list[StudyRecord]:
        """Studies fully acknowledged at `dest` whose commitment is still to be asked for
        (never asked, or asked more than `retry_s` ago without an answer)."""
        due = []
        with self.index.read() as txn:
            for study in self.index.records(txn, "studies", StudyRecord):
                if dest not in study.commit_destinations or study.phase != "closed":
                    continue
                if self._open_at(txn, dest, study):
                    continue
                commitment = self.commitment(txn, dest, study)
                if commitment is None or (commitment.state == "requested"
                                          and now - commitment.requested_at >= retry_s):
                    due.append(study)
        return due

    def commitment_requested(self, dest: str, study: StudyRecord, transaction_uid: str,
                             now: float) -> None:
        with self.index.write() as txn:
            self._put_commitment(txn, dest, study, Commitment(transaction_uid, now, "requested"))
            txn.put(transaction_uid.encode(),
                    study_prefix(dest, study) + bytes.fromhex(study.key),
                    db=self.db["transactions"])

    def commitment_refused(self, dest: str, study: StudyRecord, reason: str,
                           now: float) -> None:
        with self.index.write() as txn:
            self._put_commitment(txn, dest, study, Commitment("", now, "refused", reason))
            self.journal.event(txn, now, "commitment refused", destination=dest,
                               study=study.key[:12], reason=reason)

    def commitment_result(self, transaction_uid: str, failed_uids: set[str],
                          now: float) -> bool:
        """Record a Storage Commitment report. Instances the PACS could not commit go back
        to pending (they are sent again, then committed again). Returns False for an
        unknown transaction."""
        with self.index.write() as txn:
            raw = txn.pop(transaction_uid.encode(), db=self.db["transactions"])
            if raw is None:
                return False
            commit_key, study_key = raw[:-16], raw[-16:]
            dest = commit_key[:-9].decode()
            study = self.index.get(txn, "studies", study_key, StudyRecord)
            if study is None:
                return False
            current = self.commitment(txn, dest, study)
            if current is None or current.state != "requested" or (
                    current.transaction_uid != transaction_uid):
                # asked before the study changed (a late or corrected instance): it does not
                # cover what the study holds now, so it confirms nothing
                self.journal.event(txn, now, "stale commitment report ignored",
                                   destination=dest, study=study.key[:12])
                return True
            if not failed_uids:
                self._put_commitment(txn, dest, study,
                                     Commitment(transaction_uid, now, "confirmed"))
                self.complete_if_done(txn, study.key, now)
                return True
            txn.delete(commit_key, db=self.db["commitments"])
            self._resend(txn, dest, study, failed_uids)
            self.journal.event(txn, now, "commitment failed", destination=dest,
                               study=study.key[:12], instances=len(failed_uids))
            return True

    def _resend(self, txn: Txn, dest: str, study: StudyRecord, uids: set[str]) -> None:
        """Acknowledged instances of `study` a PACS did not commit become pending again."""
        for uid in uids:
            inst_key = self.index.hash(uid)
            record = self.index.get(txn, "instances", inst_key, InstanceRecord)
            if record is None or record.study_key != study.key:
                continue
            position = position_key(dest, study.seq, record.seq)
            if txn.delete(position, db=self.db["acked"]):
                txn.put(position, inst_key + bytes.fromhex(study.key), db=self.db["pending"])
