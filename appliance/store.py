"""Encrypted blobs and the LMDB index: the only module that opens LMDB or holds the data key.

Durability order for every instance (PRODUCT.md, Guarantees): encrypt into a
temporary file, fsync, rename into place, fsync the directory, commit the
index in one LMDB transaction, and only then return. A crash at any point
leaves either the old state or the new one; `repair()` removes the leftovers.

Index layout (every value that may hold patient data is sealed; every UID used
as a key or file name is a keyed hash):

- ``instances``  inst_key -> sealed InstanceRecord
- ``studies``    study_key -> sealed StudyRecord
- ``members``    study_key + inst_seq -> inst_key (a study's instances in arrival order)
- ``pending`` / ``acked`` / ``failed``  dest + NUL + study_seq + inst_seq -> the
  delivery position of one instance at one destination (pending and failed hold
  inst_key + study_key, failed then the reason; acked holds the digest sent). ``pending`` keys
  sort oldest study first, so a destination's queue is a cursor walk.
- ``events``     time_ns + counter -> sealed audit event
- ``meta``       counters and settings (the pinned site)
- ``commit_requests``  hash of a Transaction UID -> sealed CommitRequest: a modality's
  Storage Commitment request, kept until its report is delivered
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import shutil
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path

import lmdb

from appliance.crypto import BlobCorrupt, Keys, decrypt_stream, encrypt_stream
from appliance.validation import InstanceHeader

_SEQ = struct.Struct(">Q")
_EVENT_KEY = struct.Struct(">QI")
MAP_SIZE_BYTES = 8 << 30
EVENTS_KEPT = 100_000


class StoreFull(Exception):
    """Free space is below the reserve, or a write hit ENOSPC: answer 0xA700."""


class StoreFault(Exception):
    """The store could not make an instance durable for another reason: answer 0xA700."""


class Outcome(Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    REPLACED = "replaced"


@dataclass(frozen=True)
class InstanceRecord:
    key: str
    seq: int
    study_key: str
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    transfer_syntax: str
    size_bytes: int
    blob: str
    digest: str
    received_at: float
    facts: dict = field(default_factory=dict)
    version: int = 1


@dataclass(frozen=True)
class StudyRecord:
    key: str
    seq: int
    study_uid: str
    site: str | None
    site_source: str | None
    phase: str = "receiving"  # "receiving" | "closed"; delivery state is derived, see studies.py
    held_reason: str | None = None
    destinations: tuple[str, ...] = ()
    commit_destinations: tuple[str, ...] = ()  # destinations that must confirm commitment
    first_at: float = 0.0
    last_at: float = 0.0
    closed_at: float | None = None
    completed_at: float | None = None
    instances: int = 0
    size_bytes: int = 0
    findings: tuple[str, ...] = ()
    corrections: int = 0
    modality: str = ""
    station_name: str = ""
    calling_aet: str = ""
    study_description: str = ""
    position: tuple[float, float] | None = None  # where the vehicle was when it arrived
    kind: str = "study"  # or "mpps": the messages of one procedure step, queued like a study
    expected: tuple[str, ...] = ()  # instance keys an MPPS COMPLETED listed
    expect_until: float | None = None  # ... waited for until then
    performed_study_uid: str = ""  # of an MPPS step: the study it performed

    @property
    def seq_bytes(self) -> bytes:
        return _SEQ.pack(self.seq)


@dataclass(frozen=True)
class Queued:
    """One instance waiting at one destination, as handed to a delivery worker."""

    pending_key: bytes
    instance: InstanceRecord
    study: StudyRecord


@dataclass(frozen=True)
class DeliveryCounts:
    delivered: int
    pending: int
    failed: int
    reasons: tuple[str, ...] = ()
    awaiting_commitment: bool = False  # every instance acknowledged, commitment not yet confirmed


@dataclass(frozen=True)
class Commitment:
    """Storage Commitment of one study at one destination."""

    transaction_uid: str
    requested_at: float
    state: str  # "requested" | "confirmed" | "refused"
    reason: str | None = None


@dataclass(frozen=True)
class CommitRequest:
    """A modality's Storage Commitment request (N-ACTION), kept until it is reported.

    `held` says, per reference, whether the box held that instance (same SOP Class) when
    the request arrived.
    """

    transaction_uid: str
    calling_aet: str
    references: tuple[tuple[str, str], ...]  # (SOP Class UID, SOP Instance UID)
    held: tuple[bool, ...]
    received_at: float


class InstanceCommit(Enum):
    """Where one instance stands for a modality's commitment request."""

    COMMITTED = "committed"  # durable on the box (and, end to end, confirmed everywhere)
    WAITING = "waiting"  # end to end: not yet delivered or confirmed everywhere
    FAILED = "failed"  # end to end: a destination refused it for good
    MISSING = "missing"  # the box does not hold this SOP Instance UID
    CLASS_CONFLICT = "class-conflict"  # held, but with another SOP Class


@dataclass
class RepairReport:
    temp_files_removed: int = 0
    orphan_blobs_removed: int = 0
    missing_blobs: int = 0
    studies_checked: int = 0
    damaged_records: int = 0  # index values that fail authentication or do not parse

    def __str__(self) -> str:
        return (
            f"temp_files_removed={self.temp_files_removed} "
            f"orphan_blobs_removed={self.orphan_blobs_removed} missing_blobs={self.missing_blobs}"
            f" damaged_records={self.damaged_records}"
        )


def destination_site(dest_id: str) -> str:
    """The site of a destination id ("SITE/name", `routing.destination_id`)."""
    return dest_id.split("/", 1)[0]


def _record_from_json(cls, raw: bytes):
    data = json.loads(raw)
    for name in ("destinations", "findings", "commit_destinations", "position", "expected"):
        if name in data:
            data[name] = tuple(data[name]) if data[name] is not None else None
    return cls(**data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """The box's persistent state. Thread-safe: LMDB serialises writers."""

    def __init__(self, data_dir: Path, data_key: bytes, *, reserve_bytes: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.reserve_bytes = reserve_bytes
        self.keys = Keys(data_key)
        self.blob_dir = self.data_dir / "blobs"
        self.temp_dir = self.data_dir / "tmp"
        self.spool_dir = self.data_dir / "spool"
        for path in (self.data_dir, self.blob_dir, self.temp_dir, self.spool_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._make_blob_dirs()
        self.env = lmdb.open(
            str(self.data_dir / "index"), map_size=MAP_SIZE_BYTES, max_dbs=16,
            max_readers=256, subdir=True,
        )
        names = ("instances", "studies", "members", "pending", "acked", "failed", "events", "meta",
                 "commitments", "transactions", "worklist", "variants", "commit_requests")
        self._db = {name: self.env.open_db(name.encode()) for name in names}
        self._event_counter = 0
        self._event_lock = threading.Lock()

    def close(self) -> None:
        self.env.close()

    def _make_blob_dirs(self) -> None:
        """All 256 fan-out directories up front: no mkdir and parent fsync while ingesting."""
        made = False
        for n in range(256):
            folder = self.blob_dir / f"{n:02x}"
            if not folder.exists():
                folder.mkdir(mode=0o700)
                made = True
        if made:
            _fsync_dir(self.blob_dir)

    # -- small helpers -------------------------------------------------------

    def uid_key(self, uid: str) -> str:
        return self.keys.uid_hash(uid).hex()

    def _ack_mark(self, record: InstanceRecord) -> bytes:
        """What an acknowledgment keeps of the version it acknowledged: a keyed hash of its
        digest (a plain content digest would tell whether a known file is on the box)."""
        return self.keys.uid_hash("ack\0" + record.digest)

    def _ack_marks(self, record: InstanceRecord) -> tuple[bytes, bytes]:
        """The marks that acknowledge `record`: the keyed one, and the plain digest that
        stores written before it hold."""
        return self._ack_mark(record), record.digest.encode()

    def _seal_record(self, record) -> bytes:
        return self.keys.seal(json.dumps(asdict(record), separators=(",", ":")).encode())

    def _get(self, txn, db: str, key: bytes, cls):
        raw = txn.get(key, db=self._db[db])
        return None if raw is None else _record_from_json(cls, self.keys.open(raw))

    def _next_seq(self, txn) -> int:
        raw = txn.get(b"seq", db=self._db["meta"])
        seq = (_SEQ.unpack(raw)[0] if raw else 0) + 1
        txn.put(b"seq", _SEQ.pack(seq), db=self._db["meta"])
        return seq

    def _blob_path(self, name: str) -> Path:
        return self.blob_dir / name[:2] / f"{name}.blob"

    def free_bytes(self) -> int:
        stats = os.statvfs(self.data_dir)
        return stats.f_bavail * stats.f_frsize

    def check_space(self) -> None:
        if self.free_bytes() < self.reserve_bytes:
            raise StoreFull("free space below reserve")

    # -- ingest --------------------------------------------------------------

    def put_instance(
        self, path: Path, header: InstanceHeader, *, calling_aet: str, site: str | None,
        site_source: str | None, now: float | None = None,
        position: tuple[float, float] | None = None,
    ) -> Outcome:
        """Make one received instance durable; returns once payload and index are on disk.

        Raises StoreFull (below reserve, ENOSPC) or StoreFault; nothing half-stored
        remains either way. The same content again changes nothing (DUPLICATE); the
        same SOP Instance UID with other content replaces the old version (REPLACED)
        and queues it again wherever the old one was routed.
        """
        now = time.time() if now is None else now
        self.check_space()
        temp, digest, size = self._encrypt_to_temp(path, header)
        inst_key = self.keys.uid_hash(header.sop_instance_uid)
        with self.env.begin() as txn:
            existing = self._get(txn, "instances", inst_key, InstanceRecord)
        if existing is not None and existing.digest == digest:
            temp.unlink(missing_ok=True)
            return Outcome.DUPLICATE
        blob = self.uid_key(f"{header.sop_instance_uid}\0{digest}")
        final = self._blob_path(blob)
        try:
            self._place(temp, final)
            outcome, old_blob = self._commit_instance(
                inst_key, header, blob, digest, size, calling_aet, site, site_source, now,
                position,
            )
        except (lmdb.MapFullError, lmdb.DiskError) as exc:  # DiskError: ENOSPC at commit
            final.unlink(missing_ok=True)
            raise StoreFull(f"index full or disk full ({type(exc).__name__})") from exc
        except lmdb.Error as exc:
            final.unlink(missing_ok=True)
            raise StoreFault(f"index write failed ({type(exc).__name__})") from exc
        except OSError as exc:
            temp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            raise (StoreFull if exc.errno == errno.ENOSPC else StoreFault)(str(exc)) from exc
        if old_blob and old_blob != blob:
            self._blob_path(old_blob).unlink(missing_ok=True)
        return outcome

    def _encrypt_to_temp(self, path: Path, header: InstanceHeader) -> tuple[Path, str, int]:
        """Encrypt the received file into tmp/, fsynced; digest covers syntax + dataset bytes."""
        digest = hashlib.blake2b(header.transfer_syntax.encode() + b"\0", digest_size=32)
        skip = [header.dataset_offset]

        def feed(chunk: bytes) -> None:
            if skip[0] >= len(chunk):
                skip[0] -= len(chunk)
                return
            digest.update(memoryview(chunk)[skip[0]:])
            skip[0] = 0

        temp = self.temp_dir / f"{uuid.uuid4().hex}.part"
        try:
            with open(path, "rb") as source, open(temp, "wb") as sink:
                size = encrypt_stream(self.keys.blob_key, source, sink, feed=feed)
                sink.flush()
                os.fsync(sink.fileno())
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise (StoreFull if exc.errno == errno.ENOSPC else StoreFault)(str(exc)) from exc
        return temp, digest.hexdigest(), size

    def _place(self, temp: Path, final: Path) -> None:
        os.replace(temp, final)
        _fsync_dir(final.parent)

    def _commit_instance(
        self, inst_key: bytes, header: InstanceHeader, blob: str, digest: str, size: int,
        calling_aet: str, site: str | None, site_source: str | None, now: float,
        position: tuple[float, float] | None,
    ) -> tuple[Outcome, str | None]:
        study_key = self.keys.uid_hash(header.study_uid)
        with self.env.begin(write=True) as txn:
            existing = self._get(txn, "instances", inst_key, InstanceRecord)
            if existing is not None and existing.digest == digest:
                return Outcome.DUPLICATE, None
            if existing is not None and existing.study_key != study_key.hex():
                self._leave_study(txn, existing, now)  # re-sent under another Study UID
            same_study = existing is not None and existing.study_key == study_key.hex()
            study = self._get(txn, "studies", study_key, StudyRecord) or StudyRecord(
                key=study_key.hex(), seq=self._next_seq(txn), study_uid=header.study_uid,
                site=site, site_source=site_source, first_at=now, modality=header.modality,
                station_name=header.station_name, calling_aet=calling_aet,
                study_description=header.study_description, position=position,
            )
            facts = {
                "series_number": header.series_number,
                "instance_number": header.instance_number,
                "images_in_acquisition": header.images_in_acquisition,
                "number_of_frames": header.number_of_frames,
                "remarks": list(header.remarks),
            }
            record = InstanceRecord(
                key=inst_key.hex(), seq=existing.seq if existing else self._next_seq(txn),
                study_key=study.key, sop_instance_uid=header.sop_instance_uid,
                sop_class_uid=header.sop_class_uid, series_uid=header.series_uid,
                transfer_syntax=header.transfer_syntax, size_bytes=size, blob=blob,
                digest=digest, received_at=now, facts=facts,
                version=existing.version + 1 if existing else 1,
            )
            study = replace(
                study, phase="receiving", last_at=now, closed_at=None, completed_at=None,
                instances=study.instances + (0 if same_study else 1),
                size_bytes=study.size_bytes + size - (existing.size_bytes if same_study else 0),
                corrections=study.corrections + (1 if existing else 0),
            )
            txn.put(inst_key, self._seal_record(record), db=self._db["instances"])
            txn.put(study_key, self._seal_record(study), db=self._db["studies"])
            txn.put(study_key + _SEQ.pack(record.seq), inst_key, db=self._db["members"])
            self._reset_commitments(txn, study)  # a confirmation covers the study as it was
            if same_study:
                self._requeue(txn, study, record)
                self._event(txn, now, "instance corrected", study=study.key[:12],
                            instance=record.key[:12], version=record.version)
            return (Outcome.REPLACED if existing else Outcome.STORED), (
                existing.blob if existing else None
            )

    def _leave_study(self, txn, record: InstanceRecord, now: float) -> None:
        """An instance re-sent under another Study UID leaves its old study: no member
        entry, no position, no count there points at it any more (so purging the old study
        cannot touch the new version)."""
        old_key = bytes.fromhex(record.study_key)
        old = self._get(txn, "studies", old_key, StudyRecord)
        txn.delete(old_key + _SEQ.pack(record.seq), db=self._db["members"])
        if old is None:
            return
        for dest in old.destinations:
            position = self._position_key(dest, old.seq, record.seq)
            for db in ("pending", "acked", "failed"):
                txn.delete(position, db=self._db[db])
        old = replace(old, instances=max(0, old.instances - 1),
                      size_bytes=max(0, old.size_bytes - record.size_bytes))
        if old.instances == 0:  # nothing left of it: it goes, not held or queued forever
            self._drop_empty_study(txn, old, now)
            return
        txn.put(old_key, self._seal_record(old), db=self._db["studies"])
        self._event(txn, now, "instance moved to another study", study=old.key[:12],
                    instance=record.key[:12])
        self._complete_if_done(txn, old.key, now)

    def _forget_destination(self, txn, dest: str, study: StudyRecord) -> None:
        """Every position (pending, acknowledged, failed) and the commitment of `study` at
        `dest`."""
        txn.delete(self._commit_key(dest, study), db=self._db["commitments"])
        prefix = dest.encode() + b"\0" + study.seq_bytes
        for db in ("pending", "acked", "failed"):
            for position, _ in list(self._prefixed(txn, db, prefix)):
                txn.delete(position, db=self._db[db])

    def _drop_empty_study(self, txn, study: StudyRecord, now: float) -> None:
        for dest in study.destinations:
            self._forget_destination(txn, dest, study)
        txn.delete(bytes.fromhex(study.key), db=self._db["studies"])
        self._event(txn, now, "study emptied", study=study.key[:12])

    def _reset_commitments(self, txn, study: StudyRecord) -> None:
        """The study's content changed: every destination must be asked to commit again."""
        for dest in study.destinations:
            txn.delete(self._commit_key(dest, study), db=self._db["commitments"])

    def _requeue(self, txn, study: StudyRecord, record: InstanceRecord) -> None:
        """A new version must reach every destination the old one was routed to."""
        for dest in study.destinations:
            key = self._position_key(dest, study.seq, record.seq)
            txn.delete(key, db=self._db["acked"])
            txn.delete(key, db=self._db["failed"])
            txn.put(key, bytes.fromhex(record.key) + bytes.fromhex(study.key),
                    db=self._db["pending"])

    # -- studies -------------------------------------------------------------

    def studies(self) -> list[StudyRecord]:
        """Every study, oldest first."""
        with self.env.begin() as txn:
            records = list(self._all_studies(txn))
        return sorted(records, key=lambda s: s.seq)

    def study(self, study_key: str) -> StudyRecord | None:
        with self.env.begin() as txn:
            return self._get(txn, "studies", bytes.fromhex(study_key), StudyRecord)

    def study_by_uid(self, study_uid: str) -> StudyRecord | None:
        return self.study(self.uid_key(study_uid))

    def update_study(self, study_key: str, expect_last_at: float | None = None,
                     **changes) -> StudyRecord | None:
        """Change fields of a study in one transaction.

        With `expect_last_at`, nothing changes if an instance arrived meanwhile
        (so a closing decision never races a late arrival). Returns the new record.
        """
        key = bytes.fromhex(study_key)
        with self.env.begin(write=True) as txn:
            study = self._get(txn, "studies", key, StudyRecord)
            if study is None or (expect_last_at is not None and study.last_at != expect_last_at):
                return None
            study = replace(study, **changes)
            txn.put(key, self._seal_record(study), db=self._db["studies"])
            return study

    def study_instances(self, study_key: str) -> list[InstanceRecord]:
        prefix = bytes.fromhex(study_key)
        with self.env.begin() as txn:
            return [
                self._get(txn, "instances", inst_key, InstanceRecord)
                for _, inst_key in self._prefixed(txn, "members", prefix)
            ]

    def _prefixed(self, txn, db: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        cursor = txn.cursor(db=self._db[db])
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value

    # -- delivery positions ----------------------------------------------------

    @staticmethod
    def _position_key(dest: str, study_seq: int, inst_seq: int) -> bytes:
        return dest.encode() + b"\0" + _SEQ.pack(study_seq) + _SEQ.pack(inst_seq)

    def enqueue(self, study_key: str, destinations: tuple[str, ...], now: float,
                commitment: tuple[str, ...] = ()) -> int:
        """Route a study: every instance not yet delivered or failed becomes pending.

        `commitment` names the destinations that must also confirm Storage
        Commitment before the study is complete. Destinations of another site than the
        study's (it was assigned elsewhere) lose their positions and commitments and are no longer
        the study's. Safe to repeat; returns how many positions were added.
        """
        key = bytes.fromhex(study_key)
        added = 0
        with self.env.begin(write=True) as txn:
            study = self._get(txn, "studies", key, StudyRecord)
            if study is None:
                return 0
            members = list(self._prefixed(txn, "members", key))
            study = self._drop_other_sites(txn, study)
            for dest in destinations:
                for member_key, inst_key in members:
                    position = dest.encode() + b"\0" + study.seq_bytes + member_key[16:]
                    if any(txn.get(position, db=self._db[db]) is not None
                           for db in ("pending", "acked", "failed")):
                        continue
                    txn.put(position, inst_key + key, db=self._db["pending"])
                    added += 1
            merged = tuple(dict.fromkeys(study.destinations + destinations))
            commits = tuple(dict.fromkeys(study.commit_destinations + commitment))
            # A complete study with new positions (assigned to another site) is complete no
            # more: purge must not take it before the new destinations have it.
            completed_at = None if added else study.completed_at
            txn.put(key, self._seal_record(replace(study, destinations=merged,
                                                   commit_destinations=commits,
                                                   completed_at=completed_at)),
                    db=self._db["studies"])
            if added:
                self._event(txn, now, "study queued", study=study.key[:12], positions=added)
        return added

    def assign_site(self, study_key: str, site: str, site_source: str,
                    held_reason: str | None) -> StudyRecord | None:
        """Give a study another site. In the same transaction it loses the old site's
        positions and commitments, whatever its phase (a study still
        receiving keeps none for the old site's workers to find). Returns the new record."""
        key = bytes.fromhex(study_key)
        with self.env.begin(write=True) as txn:
            study = self._get(txn, "studies", key, StudyRecord)
            if study is None:
                return None
            study = replace(study, site=site, site_source=site_source,
                            held_reason=held_reason)
            study = self._drop_other_sites(txn, study)
            txn.put(key, self._seal_record(study), db=self._db["studies"])
            return study

    def _drop_other_sites(self, txn, study: StudyRecord) -> StudyRecord:
        """The study without destinations of other sites, nor any of their positions (`retry`
        would queue failed ones again; purge, which looks at the study's own destinations,
        would leave them behind) and commitments."""
        own = [d for d in study.destinations if destination_site(d) == study.site]
        others = [d for d in study.destinations if destination_site(d) != study.site]
        for dest in others:
            self._forget_destination(txn, dest, study)
        if not others:
            return study
        commits = tuple(d for d in study.commit_destinations if destination_site(d) == study.site)
        return replace(study, destinations=tuple(own), commit_destinations=commits)

    def next_batch(
        self, dest: str, *, max_count: int, max_bytes: int, whole_study: bool,
        allowed: Callable[[StudyRecord], bool],
    ) -> list[Queued]:
        """The next instances to send to `dest`, oldest study first.

        Studies for which `allowed` is false are skipped whole. At least one instance is
        returned when any is allowed, even if it alone exceeds `max_bytes`.
        """
        prefix = dest.encode() + b"\0"
        batch: list[Queued] = []
        orphans: list[bytes] = []
        total = 0
        verdicts: dict[bytes, StudyRecord | None] = {}
        with self.env.begin() as txn:
            for position, value in self._prefixed(txn, "pending", prefix):
                inst_key, study_key = value[:16], value[16:]
                if study_key not in verdicts:
                    if whole_study and batch:
                        break
                    study = self._get(txn, "studies", study_key, StudyRecord)
                    verdicts[study_key] = study if study and allowed(study) else None
                study = verdicts[study_key]
                if study is None:
                    continue
                record = self._get(txn, "instances", inst_key, InstanceRecord)
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
        reason = b"the box no longer holds this instance"
        with self.env.begin(write=True) as txn:
            for position in positions:
                value = txn.pop(position, db=self._db["pending"])
                if value is not None:
                    txn.put(position, value[:32] + reason, db=self._db["failed"])
                    self._event(txn, time.time(), "instance failed", destination=dest,
                                reason=reason.decode())

    def record_delivered(self, dest: str, item: Queued, now: float,
                         link_class: str | None = None) -> bool:
        """Record a success or warning from `dest`; committed before returning.

        The bytes count against `link_class`'s traffic in the same transaction.
        If the instance was replaced while in flight, the position stays
        pending so the new version is sent. Returns True when this completed
        the study at every destination it is routed to.
        """
        with self.env.begin(write=True) as txn:
            if link_class is not None:
                self._add_traffic(txn, link_class, item.instance.size_bytes, now)
            current = self._get(txn, "instances", bytes.fromhex(item.instance.key),
                                InstanceRecord)
            if current is None or current.digest != item.instance.digest:
                return False
            txn.delete(item.pending_key, db=self._db["pending"])
            txn.put(item.pending_key, self._ack_mark(current), db=self._db["acked"])
            return self._complete_if_done(txn, item.study.key, now)

    def record_failed(self, dest: str, item: Queued, reason: str, now: float) -> None:
        """A permanent refusal: the position moves from pending to failed with its reason.
        A refusal of a version replaced meanwhile changes nothing: the new one is sent."""
        with self.env.begin(write=True) as txn:
            if txn.get(item.pending_key, db=self._db["pending"]) is None:
                return
            current = self._get(txn, "instances", bytes.fromhex(item.instance.key),
                                InstanceRecord)
            if current is not None and current.digest != item.instance.digest:
                return
            value = txn.pop(item.pending_key, db=self._db["pending"])
            txn.put(item.pending_key, value[:32] + reason.encode(), db=self._db["failed"])
            self._event(txn, now, "instance failed", destination=dest,
                        study=item.study.key[:12], instance=item.instance.key[:12],
                        reason=reason)

    def complete_if_done(self, study_key: str, now: float) -> bool:
        """Mark a closed study complete when nothing is pending or failed anywhere."""
        with self.env.begin(write=True) as txn:
            return self._complete_if_done(txn, study_key, now)

    def _complete_if_done(self, txn, study_key: str, now: float) -> bool:
        key = bytes.fromhex(study_key)
        study = self._get(txn, "studies", key, StudyRecord)
        if study is None or study.phase != "closed" or study.completed_at is not None:
            return False
        if not study.destinations or study.held_reason:
            return False  # held, or routed nowhere: delivered to no one, so never complete
        for dest in study.destinations:
            prefix = dest.encode() + b"\0" + study.seq_bytes
            for db in ("pending", "failed"):
                if next(self._prefixed(txn, db, prefix), None) is not None:
                    return False
            if dest in study.commit_destinations:
                commitment = self._commitment(txn, dest, study)
                if commitment is None or commitment.state != "confirmed":
                    return False
        txn.put(key, self._seal_record(replace(study, completed_at=now)),
                db=self._db["studies"])
        self._event(txn, now, "study complete", study=study.key[:12])
        return True

    def counts(self, study: StudyRecord, dest: str) -> DeliveryCounts:
        prefix = dest.encode() + b"\0" + study.seq_bytes
        with self.env.begin() as txn:
            pending = sum(1 for _ in self._prefixed(txn, "pending", prefix))
            delivered = sum(1 for _ in self._prefixed(txn, "acked", prefix))
            reasons = [v[32:].decode() for _, v in self._prefixed(txn, "failed", prefix)]
            commitment = (self._commitment(txn, dest, study)
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
        with self.env.begin(write=True) as txn:
            for key, raw in list(txn.cursor(db=self._db["commitments"])):
                record = json.loads(raw)
                if record["state"] == "refused" and (owner is None or
                                                     record["study_key"] == owner.hex()):
                    txn.delete(key, db=self._db["commitments"])
                    moved += 1
            for position, value in list(txn.cursor(db=self._db["failed"])):
                if owner is not None and value[16:32] != owner:
                    continue
                txn.delete(position, db=self._db["failed"])
                txn.put(position, value[:32], db=self._db["pending"])
                moved += 1
            if moved:
                self._event(txn, now, "retry", positions=moved)
        return moved

    # -- storage commitment -------------------------------------------------------

    @staticmethod
    def _commit_key(dest: str, study: StudyRecord) -> bytes:
        return dest.encode() + b"\0" + study.seq_bytes

    def _commitment(self, txn, dest: str, study: StudyRecord) -> Commitment | None:
        raw = txn.get(self._commit_key(dest, study), db=self._db["commitments"])
        if raw is None:
            return None
        record = json.loads(raw)
        record.pop("study_key", None)
        return Commitment(**record)

    def _put_commitment(self, txn, dest: str, study: StudyRecord, commitment: Commitment):
        body = {**asdict(commitment), "study_key": study.key}
        txn.put(self._commit_key(dest, study), json.dumps(body).encode(),
                db=self._db["commitments"])

    def awaiting_commitment(self, dest: str, now: float, retry_s: float) -> list[StudyRecord]:
        """Studies fully acknowledged at `dest` whose commitment is still to be asked for
        (never asked, or asked more than `retry_s` ago without an answer)."""
        due = []
        with self.env.begin() as txn:
            for study in self._all_studies(txn):
                if dest not in study.commit_destinations or study.phase != "closed":
                    continue
                prefix = self._commit_key(dest, study)
                if any(next(self._prefixed(txn, db, prefix), None) is not None
                       for db in ("pending", "failed")):
                    continue
                commitment = self._commitment(txn, dest, study)
                if commitment is None or (commitment.state == "requested"
                                          and now - commitment.requested_at >= retry_s):
                    due.append(study)
        return due

    def commitment_requested(self, dest: str, study: StudyRecord, transaction_uid: str,
                             now: float) -> None:
        with self.env.begin(write=True) as txn:
            self._put_commitment(txn, dest, study, Commitment(transaction_uid, now, "requested"))
            txn.put(transaction_uid.encode(), self._commit_key(dest, study) + bytes.fromhex(
                study.key), db=self._db["transactions"])

    def commitment_refused(self, dest: str, study: StudyRecord, reason: str,
                           now: float) -> None:
        with self.env.begin(write=True) as txn:
            self._put_commitment(txn, dest, study, Commitment("", now, "refused", reason))
            self._event(txn, now, "commitment refused", destination=dest,
                        study=study.key[:12], reason=reason)

    def commitment_result(self, transaction_uid: str, failed_uids: set[str],
                          now: float) -> bool:
        """Record a Storage Commitment report. Instances the PACS could not commit go back
        to pending (they are sent again, then committed again). Returns False for an
        unknown transaction."""
        with self.env.begin(write=True) as txn:
            raw = txn.pop(transaction_uid.encode(), db=self._db["transactions"])
            if raw is None:
                return False
            commit_key, study_key = raw[:-16], raw[-16:]
            dest = commit_key[:-9].decode()
            study = self._get(txn, "studies", study_key, StudyRecord)
            if study is None:
                return False
            current = self._commitment(txn, dest, study)
            if current is None or current.state != "requested" or (
                    current.transaction_uid != transaction_uid):
                # asked before the study changed (a late or corrected instance): it does not
                # cover what the study holds now, so it confirms nothing
                self._event(txn, now, "stale commitment report ignored", destination=dest,
                            study=study.key[:12])
                return True
            if not failed_uids:
                self._put_commitment(txn, dest, study,
                                     Commitment(transaction_uid, now, "confirmed"))
                self._complete_if_done(txn, study.key, now)
                return True
            txn.delete(commit_key, db=self._db["commitments"])
            for uid in failed_uids:
                inst_key = self.keys.uid_hash(uid)
                record = self._get(txn, "instances", inst_key, InstanceRecord)
                if record is None or record.study_key != study.key:
                    continue
                position = self._position_key(dest, study.seq, record.seq)
                if txn.delete(position, db=self._db["acked"]):
                    txn.put(position, inst_key + study_key, db=self._db["pending"])
            self._event(txn, now, "commitment failed", destination=dest,
                        study=study.key[:12], instances=len(failed_uids))
            return True

    # -- storage commitment requested by modalities ------------------------------

    def put_commit_request(self, request: CommitRequest) -> None:
        """Keep a modality's request until `drop_commit_request`; durable on return.
        The same Transaction UID again replaces it."""
        key = self.keys.uid_hash("commit-request:" + request.transaction_uid)
        with self.env.begin(write=True) as txn:
            txn.put(key, self._seal_record(request), db=self._db["commit_requests"])

    def commit_requests(self) -> list[CommitRequest]:
        """Every request not yet reported, oldest first."""
        with self.env.begin() as txn:
            found = []
            for _, value in txn.cursor(db=self._db["commit_requests"]):
                data = json.loads(self.keys.open(value))
                data["references"] = tuple(tuple(pair) for pair in data["references"])
                data["held"] = tuple(data["held"])
                found.append(CommitRequest(**data))
        return sorted(found, key=lambda r: r.received_at)

    def drop_commit_request(self, transaction_uid: str) -> None:
        """Forget a reported request; safe to repeat."""
        key = self.keys.uid_hash("commit-request:" + transaction_uid)
        with self.env.begin(write=True) as txn:
            txn.delete(key, db=self._db["commit_requests"])

    def instance_commit(self, sop_class_uid: str, sop_instance_uid: str, *,
                        end_to_end: bool) -> InstanceCommit:
        """Whether the box can commit one instance to a modality. Without `end_to_end` a
        held instance of that SOP Class is committed; with it, only once every destination
        of its study acknowledged the current version (and confirmed commitment where that
        destination asks for it)."""
        with self.env.begin() as txn:
            record = self._get(txn, "instances", self.keys.uid_hash(sop_instance_uid),
                               InstanceRecord)
            if record is None:
                return InstanceCommit.MISSING
            if record.sop_class_uid != sop_class_uid:
                return InstanceCommit.CLASS_CONFLICT
            if not end_to_end:
                return InstanceCommit.COMMITTED
            study = self._get(txn, "studies", bytes.fromhex(record.study_key), StudyRecord)
            if study is None or study.phase != "closed" or not study.destinations:
                return InstanceCommit.WAITING
            for dest in study.destinations:
                position = self._position_key(dest, study.seq, record.seq)
                if txn.get(position, db=self._db["failed"]) is not None:
                    return InstanceCommit.FAILED
                if txn.get(position, db=self._db["acked"]) not in self._ack_marks(record):
                    return InstanceCommit.WAITING
                if dest in study.commit_destinations:
                    confirmation = self._commitment(txn, dest, study)
                    if confirmation is not None and confirmation.state == "refused":
                        return InstanceCommit.FAILED
                    if confirmation is None or confirmation.state != "confirmed":
                        return InstanceCommit.WAITING
        return InstanceCommit.COMMITTED

    def _all_studies(self, txn) -> Iterator[StudyRecord]:
        """Every study record that reads; a damaged one is skipped (repair counts it)."""
        for _, value in txn.cursor(db=self._db["studies"]):
            try:
                yield _record_from_json(StudyRecord, self.keys.open(value))
            except (BlobCorrupt, ValueError, TypeError, KeyError):
                continue

    # -- MPPS messages ------------------------------------------------------------

    def put_message(self, step_uid: str, kind: str, payload: bytes, *, site: str | None,
                    dest: str | None, now: float, sop_class_uid: str,
                    performed_study_uid: str = "") -> StudyRecord:
        """Queue one MPPS message (N-CREATE or N-SET) for `dest`, durable on return.

        The messages of one procedure step form one queue entry in arrival order, so they
        reach the RIS in order. With no `dest` the message is kept, not relayed.
        """
        step_key = self.keys.uid_hash("mpps:" + step_uid)
        with self.env.begin(write=True) as txn:
            step = self._get(txn, "studies", step_key, StudyRecord) or StudyRecord(
                key=step_key.hex(), seq=self._next_seq(txn), study_uid=step_uid, site=site,
                site_source=None, phase="closed", kind="mpps", first_at=now, closed_at=now,
                performed_study_uid=performed_study_uid)
            seq = self._next_seq(txn)
            inst_key = self.keys.uid_hash(f"mpps:{step_uid}:{seq}")
            record = InstanceRecord(
                key=inst_key.hex(), seq=seq, study_key=step.key, sop_instance_uid=step_uid,
                sop_class_uid=sop_class_uid, series_uid="",
                transfer_syntax="1.2.840.10008.1.2.1",  # explicit VR little endian
                size_bytes=len(payload), blob="", digest=f"{kind}:{seq}", received_at=now,
                facts={"kind": kind, "payload": base64.b64encode(payload).decode()})
            destinations = (dest,) if dest else ()
            step = replace(step, instances=step.instances + 1, last_at=now,
                           size_bytes=step.size_bytes + len(payload),
                           completed_at=None if dest else now,  # kept, nothing to relay
                           destinations=tuple(dict.fromkeys(step.destinations + destinations)))
            txn.put(inst_key, self._seal_record(record), db=self._db["instances"])
            txn.put(step_key, self._seal_record(step), db=self._db["studies"])
            txn.put(step_key + _SEQ.pack(seq), inst_key, db=self._db["members"])
            if dest:
                txn.put(self._position_key(dest, step.seq, seq), inst_key + step_key,
                        db=self._db["pending"])
            self._event(txn, now, "mpps queued", step=step.key[:12], kind=kind)
            return step

    @staticmethod
    def message_payload(record: InstanceRecord) -> bytes:
        return base64.b64decode(record.facts["payload"])

    # -- payloads --------------------------------------------------------------

    def write_plaintext(self, record: InstanceRecord, target: Path) -> None:
        """Decrypt an instance's blob into `target` (a Part 10 file), chunk by chunk.

        A blob that is missing, unreadable or damaged raises BlobCorrupt (that instance
        cannot be sent, ever); an error writing `target` (a full disk) stays an OSError."""
        try:
            source = open(self._blob_path(record.blob), "rb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise BlobCorrupt(f"blob missing or unreadable ({exc.strerror})") from exc
        with source, open(target, "wb") as sink:
            chunks = decrypt_stream(self.keys.blob_key, source)
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                except OSError as exc:
                    raise BlobCorrupt(f"blob unreadable ({exc.strerror})") from exc
                sink.write(chunk)

    # -- compressed variants ---------------------------------------------------------

    def put_variant(self, record: InstanceRecord, transfer_syntax: str, path: Path) -> None:
        """Keep `path` (the instance compressed to `transfer_syntax`, made ahead of sending)
        as an encrypted variant; durable on return. A variant of an older version is never
        used (it is tied to the record's digest)."""
        temp = self.temp_dir / f"{uuid.uuid4().hex}.part"
        with open(path, "rb") as source, open(temp, "wb") as sink:
            size = encrypt_stream(self.keys.blob_key, source, sink)
            sink.flush()
            os.fsync(sink.fileno())
        blob = self.uid_key(f"{record.sop_instance_uid}:{record.digest}:{transfer_syntax}")
        self._place(temp, self._blob_path(blob))
        body = {"blob": blob, "digest": record.digest, "size_bytes": size}
        with self.env.begin(write=True) as txn:
            txn.put(bytes.fromhex(record.key) + transfer_syntax.encode(),
                    self.keys.seal(json.dumps(body).encode()), db=self._db["variants"])

    def variant(self, record: InstanceRecord, transfer_syntax: str) -> InstanceRecord | None:
        """The instance as kept in `transfer_syntax`, if a current variant exists."""
        with self.env.begin() as txn:
            raw = txn.get(bytes.fromhex(record.key) + transfer_syntax.encode(),
                          db=self._db["variants"])
        if raw is None:
            return None
        body = json.loads(self.keys.open(raw))
        if body["digest"] != record.digest:
            return None
        return replace(record, blob=body["blob"], size_bytes=body["size_bytes"],
                       transfer_syntax=transfer_syntax)

    def _variant_blobs(self, txn, inst_key: bytes) -> list[tuple[bytes, str]]:
        return [(key, json.loads(self.keys.open(value))["blob"])
                for key, value in self._prefixed(txn, "variants", inst_key)]

    @contextlib.contextmanager
    def plaintext(self, record: InstanceRecord) -> Iterator[Path]:
        """A short-lived decrypted copy in the spool directory, removed on exit."""
        target = self.spool_dir / f"{uuid.uuid4().hex}.dcm"
        try:
            self.write_plaintext(record, target)
            yield target
        finally:
            target.unlink(missing_ok=True)

    # -- audit trail -----------------------------------------------------------

    def _event(self, txn, now: float, name: str, **fields) -> None:
        with self._event_lock:
            self._event_counter = (self._event_counter + 1) & 0xFFFFFFFF
            key = _EVENT_KEY.pack(int(now * 1e9), self._event_counter)
        body = json.dumps({"at": now, "event": name, **fields}, separators=(",", ":"))
        txn.put(key, self.keys.seal(body.encode()), db=self._db["events"])

    def add_event(self, name: str, now: float | None = None, **fields) -> None:
        with self.env.begin(write=True) as txn:
            self._event(txn, time.time() if now is None else now, name, **fields)

    def events(self, limit: int = 50) -> list[dict]:
        """The newest `limit` audit events, newest last."""
        out = []
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self._db["events"])
            if cursor.last():
                for _, value in cursor.iterprev():
                    out.append(json.loads(self.keys.open(value)))
                    if len(out) >= limit:
                        break
        return out[::-1]

    # -- settings --------------------------------------------------------------

    def get_setting(self, name: str) -> str | None:
        with self.env.begin() as txn:
            raw = txn.get(b"setting:" + name.encode(), db=self._db["meta"])
        return None if raw is None else raw.decode()

    def set_setting(self, name: str, value: str | None) -> None:
        with self.env.begin(write=True) as txn:
            key = b"setting:" + name.encode()
            if value is None:
                txn.delete(key, db=self._db["meta"])
            else:
                txn.put(key, value.encode(), db=self._db["meta"])

    # -- worklist cache ----------------------------------------------------------------

    def replace_worklist(self, site_id: str, entries: list[bytes], now: float,
                         result: str) -> None:
        """Replace a site's cached worklist atomically (entries are encoded datasets;
        patient data, so sealed)."""
        prefix = site_id.encode() + b"\0"
        with self.env.begin(write=True) as txn:
            for key, _ in list(self._prefixed(txn, "worklist", prefix)):
                txn.delete(key, db=self._db["worklist"])
            for index, entry in enumerate(entries):
                txn.put(prefix + _SEQ.pack(index), self.keys.seal(entry),
                        db=self._db["worklist"])
            meta = {"synced_at": now, "result": result, "entries": len(entries)}
            txn.put(b"worklist:" + site_id.encode(), json.dumps(meta).encode(),
                    db=self._db["meta"])

    def note_worklist_sync(self, site_id: str, now: float, result: str) -> None:
        """Record a sync attempt that kept the last good list (failed or partial)."""
        with self.env.begin(write=True) as txn:
            raw = txn.get(b"worklist:" + site_id.encode(), db=self._db["meta"])
            meta = json.loads(raw) if raw else {"synced_at": None, "entries": 0}
            meta.update(result=result, attempted_at=now)
            txn.put(b"worklist:" + site_id.encode(), json.dumps(meta).encode(),
                    db=self._db["meta"])

    def worklist(self, site_id: str) -> list[bytes]:
        prefix = site_id.encode() + b"\0"
        with self.env.begin() as txn:
            return [self.keys.open(v) for _, v in self._prefixed(txn, "worklist", prefix)]

    def worklist_state(self, site_id: str) -> dict:
        """{"synced_at", "result", "entries", ...} of a site's cache ({} if never synced)."""
        with self.env.begin() as txn:
            raw = txn.get(b"worklist:" + site_id.encode(), db=self._db["meta"])
        return json.loads(raw) if raw else {}

    # -- traffic -------------------------------------------------------------------

    def _add_traffic(self, txn, link_class: str, nbytes: int, now: float) -> None:
        """Count bytes sent over a link class, per local day and month (for budgets)."""
        for key in self._traffic_keys(link_class, now):
            raw = txn.get(key, db=self._db["meta"])
            total = (_SEQ.unpack(raw)[0] if raw else 0) + nbytes
            txn.put(key, _SEQ.pack(total), db=self._db["meta"])

    def traffic(self, link_class: str, now: float) -> tuple[int, int]:
        """Bytes sent over `link_class` (today, this month)."""
        with self.env.begin() as txn:
            values = [txn.get(k, db=self._db["meta"])
                      for k in self._traffic_keys(link_class, now)]
        return tuple(_SEQ.unpack(v)[0] if v else 0 for v in values)  # type: ignore[return-value]

    @staticmethod
    def _traffic_keys(link_class: str, now: float) -> tuple[bytes, bytes]:
        day = time.strftime("%Y-%m-%d", time.localtime(now))
        return (f"traffic:{link_class}:{day}".encode(), f"traffic:{link_class}:{day[:7]}".encode())

    # -- housekeeping ------------------------------------------------------------

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
            if not expired and self.free_bytes() >= below_bytes:
                continue
            purged += self._delete_study(study, now)
        self._trim_events()
        return purged

    def _delete_study(self, picked: StudyRecord, now: float) -> bool:
        """Delete a study picked as complete, if it still is, in the same transaction: an
        instance that arrived since the pick (the study is receiving again) keeps it."""
        key = bytes.fromhex(picked.key)
        blobs = []
        with self.env.begin(write=True) as txn:
            study = self._get(txn, "studies", key, StudyRecord)
            if study is None or study.completed_at != picked.completed_at:
                return False
            for member_key, inst_key in list(self._prefixed(txn, "members", key)):
                record = self._get(txn, "instances", inst_key, InstanceRecord)
                if record is not None and record.study_key != study.key:
                    txn.delete(member_key, db=self._db["members"])  # it moved; not ours
                    continue
                if record is not None and record.blob:
                    blobs.append(record.blob)
                for variant_key, blob in self._variant_blobs(txn, inst_key):
                    txn.delete(variant_key, db=self._db["variants"])
                    blobs.append(blob)
                txn.delete(inst_key, db=self._db["instances"])
                txn.delete(member_key, db=self._db["members"])
            for dest in study.destinations:
                self._forget_destination(txn, dest, study)
            txn.delete(key, db=self._db["studies"])
            self._event(txn, now, "study purged", study=study.key[:12])
        for blob in blobs:
            self._blob_path(blob).unlink(missing_ok=True)
        return True

    def _trim_events(self) -> None:
        with self.env.begin(write=True) as txn:
            excess = txn.stat(self._db["events"])["entries"] - EVENTS_KEPT
            cursor = txn.cursor(db=self._db["events"])
            while excess > 0 and cursor.first():
                cursor.delete()
                excess -= 1

    def repair(self) -> RepairReport:
        """At start-up: scrub temp and spool files, drop blobs no index entry names,
        and count index entries whose blob is missing (reported, never hidden).

        A damaged index value is counted, never fatal (the box must start); while any is
        damaged no blob counts as an orphan, since it may be the damaged record's."""
        report = RepairReport()
        for folder in (self.temp_dir, self.spool_dir):
            for leftover in folder.iterdir():
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
                report.temp_files_removed += 1
        known = set()
        with self.env.begin() as txn:
            for _, value in txn.cursor(db=self._db["instances"]):
                try:
                    record = _record_from_json(InstanceRecord, self.keys.open(value))
                except (BlobCorrupt, ValueError, TypeError, KeyError):
                    report.damaged_records += 1
                    continue
                known.add(record.blob)
                if record.blob and not self._blob_path(record.blob).exists():
                    report.missing_blobs += 1
            for _, value in txn.cursor(db=self._db["variants"]):
                try:
                    known.add(json.loads(self.keys.open(value))["blob"])
                except (BlobCorrupt, ValueError, TypeError, KeyError):
                    report.damaged_records += 1
        if report.damaged_records:
            return report
        for blob_file in self.blob_dir.glob("*/*.blob"):
            if blob_file.stem not in known:
                blob_file.unlink(missing_ok=True)
                report.orphan_blobs_removed += 1
        return report

    def verify_blob(self, record: InstanceRecord) -> bool:
        try:
            with open(self._blob_path(record.blob), "rb") as source:
                return sum(len(c) for c in decrypt_stream(self.keys.blob_key, source)) == (
                    record.size_bytes)
        except (OSError, BlobCorrupt):
            return False
