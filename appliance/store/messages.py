"""MPPS messages, queued for the RIS like a study so they share the delivery worker.

Outside the store a message is an `MppsMessage` (`message`, `step_messages`); only this
module knows how one is kept. The messages of one procedure step are one StudyRecord of kind
"mpps" (keyed by the hash of "mpps:" + step UID, closed from the start), so the queue's
positions, acknowledgments, retries and purge treat a step like any study; each message is
one queue item with no blob, its kind and data set sealed with the record. The layout is
kept as boxes in the field wrote it, so messages queued before an update still go out.

Invariants kept: *durable before success* and *resumable delivery*, in arrival order:
each message is committed, with its pending position, before the N-CREATE or N-SET is
answered. Proved by `test_mpps.py`:
`test_mpps_reaches_the_ris_in_order_after_an_outage_and_completed_closes_the_study`.
"""

from __future__ import annotations

import base64
from dataclasses import replace

from appliance.store.index import Index
from appliance.store.journal import Journal
from appliance.store.queue import Queue
from appliance.store.records import SEQ, InstanceRecord, MppsMessage, StudyRecord

_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


class Messages:
    def __init__(self, index: Index, journal: Journal, queue: Queue) -> None:
        self.index = index
        self.journal = journal
        self.queue = queue

    def put_message(self, step_uid: str, kind: str, payload: bytes, *, site: str | None,
                    dest: str | None, now: float, sop_class_uid: str,
                    performed_study_uid: str = "") -> StudyRecord:
        """Queue one MPPS message (N-CREATE or N-SET) for `dest`, durable on return.

        The messages of one procedure step form one queue entry in arrival order, so they
        reach the RIS in order. With no `dest` the message is kept, not relayed.
        """
        step_key = self.index.hash("mpps:" + step_uid)
        with self.index.write() as txn:
            step = self.index.get(txn, "studies", step_key, StudyRecord) or StudyRecord(
                key=step_key.hex(), seq=self.index.next_seq(txn), study_uid=step_uid, site=site,
                site_source=None, phase="closed", kind="mpps", first_at=now, closed_at=now,
                performed_study_uid=performed_study_uid)
            seq = self.index.next_seq(txn)
            inst_key = self.index.hash(f"mpps:{step_uid}:{seq}")
            record = InstanceRecord(
                key=inst_key.hex(), seq=seq, study_key=step.key, sop_instance_uid=step_uid,
                sop_class_uid=sop_class_uid, series_uid="",
                transfer_syntax=_EXPLICIT_VR_LITTLE_ENDIAN, size_bytes=len(payload), blob="",
                digest=f"{kind}:{seq}", received_at=now,
                facts={"kind": kind, "payload": base64.b64encode(payload).decode()})
            destinations = (dest,) if dest else ()
            step = replace(step, instances=step.instances + 1, last_at=now,
                           size_bytes=step.size_bytes + len(payload),
                           completed_at=None if dest else now,  # kept, nothing to relay
                           destinations=tuple(dict.fromkeys(step.destinations + destinations)))
            self.index.put(txn, "instances", inst_key, record)
            self.index.put(txn, "studies", step_key, step)
            txn.put(step_key + SEQ.pack(seq), inst_key, db=self.index.db["members"])
            if dest:
                self.queue.add_pending(txn, dest, step, record)
            self.journal.event(txn, now, "mpps queued", step=step.key[:12], kind=kind)
            return step


    def step_messages(self, step_key: str) -> list[MppsMessage]:
        """The messages of one procedure step, in arrival order."""
        prefix = bytes.fromhex(step_key)
        with self.index.read() as txn:
            records = [self.index.get(txn, "instances", inst_key, InstanceRecord)
                       for _, inst_key in self.index.prefixed(txn, "members", prefix)]
        return [message(r) for r in records if r is not None]


def message(record: InstanceRecord) -> MppsMessage:
    """The MPPS message a queue item of an "mpps" step carries."""
    return MppsMessage(step_uid=record.sop_instance_uid, kind=record.facts["kind"],
                       seq=record.seq, payload=base64.b64decode(record.facts["payload"]))
