"""What the store keeps and hands out: record types, outcomes and the store's exceptions.

Plain values, no I/O and no LMDB, so every module can import them. Records are kept as
sealed JSON of their fields (`index.Index.seal_record`): renaming or removing a field
changes the on-disk format, adding one with a default does not.

Invariant kept: none on its own; the parts that store these records keep them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

SEQ = struct.Struct(">Q")  # a sequence number as a big-endian key part (sorts in order)


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
    facts: dict[str, Any] = field(default_factory=dict)
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
        return SEQ.pack(self.seq)


@dataclass(frozen=True)
class MppsMessage:
    """One MPPS message of a procedure step, as the modality sent it (`messages.py`)."""

    step_uid: str
    kind: str  # "create" (N-CREATE) | "set" (N-SET)
    seq: int  # arrival order within the step
    payload: bytes  # the data set, encoded as received


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


R = TypeVar("R")


def record_from_json(cls: type[R], raw: bytes) -> R:
    """A record from its JSON fields; JSON arrays become the tuples the record declares."""
    data = json.loads(raw)
    for name in ("destinations", "findings", "commit_destinations", "position", "expected"):
        if name in data:
            data[name] = tuple(data[name]) if data[name] is not None else None
    return cls(**data)
