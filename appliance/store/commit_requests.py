"""Storage Commitment asked of the box by a modality: the requests kept until reported,
and where each referenced instance stands.

Owns ``commit_requests`` (keyed hash of "commit-request:" + Transaction UID -> sealed
CommitRequest). Reads instances, studies, positions and commitments; writes nothing else.

Invariants kept: *durable before success* (an instance is committed to a modality only once
the box holds it, of the same SOP Class) and, end to end, *complete means delivered* (only
once every destination of its study acknowledged the current version and confirmed
commitment where it asks for it). Proved by `test_commitment_scp.py`:
`test_end_to_end_an_instance_is_committed_once_delivered_and_confirmed`,
`test_end_to_end_a_replaced_instance_waits_for_its_new_version`,
`test_requests_are_kept_until_dropped_and_survive_reopening`.
"""

from __future__ import annotations

from appliance.store.index import Index, Txn
from appliance.store.queue import Queue, position_key
from appliance.store.records import CommitRequest, InstanceCommit, InstanceRecord, StudyRecord


class CommitRequests:
    def __init__(self, index: Index, queue: Queue) -> None:
        self.index = index
        self.queue = queue

    def _key(self, transaction_uid: str) -> bytes:
        return self.index.hash("commit-request:" + transaction_uid)

    def put_commit_request(self, request: CommitRequest) -> None:
        """Keep a modality's request until `drop_commit_request`; durable on return.
        The same Transaction UID again replaces it."""
        with self.index.write() as txn:
            self.index.put(txn, "commit_requests", self._key(request.transaction_uid), request)

    def commit_requests(self) -> list[CommitRequest]:
        """Every request not yet reported, oldest first."""
        with self.index.read() as txn:
            found = []
            for _, value in txn.cursor(db=self.index.db["commit_requests"]):
                data = self.index.open_json(value)
                data["references"] = tuple(tuple(pair) for pair in data["references"])
                data["held"] = tuple(data["held"])
                found.append(CommitRequest(**data))
        return sorted(found, key=lambda r: r.received_at)

    def drop_commit_request(self, transaction_uid: str) -> None:
        """Forget a reported request; safe to repeat."""
        with self.index.write() as txn:
            txn.delete(self._key(transaction_uid), db=self.index.db["commit_requests"])

    def instance_commit(self, sop_class_uid: str, sop_instance_uid: str, *,
                        end_to_end: bool) -> InstanceCommit:
        """Whether the box can commit one instance to a modality. Without `end_to_end` a
        held instance of that SOP Class is committed; with it, only once every destination
        of its study acknowledged the current version (and confirmed commitment where that
        destination asks for it)."""
        with self.index.read() as txn:
            record = self.index.get(txn, "instances", self.index.hash(sop_instance_uid),
                                    InstanceRecord)
            if record is None:
                return InstanceCommit.MISSING
            if record.sop_class_uid != sop_class_uid:
                return InstanceCommit.CLASS_CONFLICT
            if not end_to_end:
                return InstanceCommit.COMMITTED
            study = self.index.get(txn, "studies", bytes.fromhex(record.study_key), StudyRecord)
            if study is None or study.phase != "closed" or not study.destinations:
                return InstanceCommit.WAITING
            for dest in study.destinations:
                state = self._at(txn, dest, study, record)
                if state is not InstanceCommit.COMMITTED:
                    return state
        return InstanceCommit.COMMITTED

    def _at(self, txn: Txn, dest: str, study: StudyRecord,
            record: InstanceRecord) -> InstanceCommit:
        """Where the current version of `record` stands at one destination."""
        position = position_key(dest, study.seq, record.seq)
        if txn.get(position, db=self.index.db["failed"]) is not None:
            return InstanceCommit.FAILED
        if txn.get(position, db=self.index.db["acked"]) not in self.index.ack_marks(record):
            return InstanceCommit.WAITING
        if dest in study.commit_destinations:
            confirmation = self.queue.commitment(txn, dest, study)
            if confirmation is not None and confirmation.state == "refused":
                return InstanceCommit.FAILED
            if confirmation is None or confirmation.state != "confirmed":
                return InstanceCommit.WAITING
        return InstanceCommit.COMMITTED
