"""Storage Commitment for the modality: the box as SCP of the Push Model (PS3.4 Annex J).

A modality asks (N-ACTION, Request Storage Commitment) before it frees its disk. The
request is kept in the store before the answer goes back, so it survives a restart until
it is reported. The report (N-EVENT-REPORT) goes back on the asking association while it
is open, else on a new association to the modality's `[box.modalities.AE_TITLE]` entry;
one that cannot be delivered is tried again with back-off. Nothing is sent on the asking
association once the modality asked to release it (issue 7): the report then takes a new
association, and the release is answered, never aborted.

`box.commitment_mode` decides when an instance counts as committed:
- "box": the box holds it durably with the same SOP Class (reported at once);
- "pacs": every destination of its study acknowledged it, and confirmed commitment
  where that destination asks for it (the report waits until then).
An unknown SOP Instance UID fails with 0x0112, another SOP Class with 0x0119, an instance
a destination refused for good (pacs mode) with 0x0110. An instance held when the
request came and gone since was purged, which the box does only once a study is
complete: it counts as committed.

`appliance/commitment.py` is the other side: the box as SCU asking a PACS.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_role
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.dsutils import encode
from pynetdicom.events import Event

from appliance import dimse, statuses
from appliance.backoff import Backoff
from appliance.commitment import (
    ACTION_REQUEST_COMMIT,
    EVENT_ALL_COMMITTED,
    EVENT_SOME_FAILED,
    PUSH_MODEL_INSTANCE,
    StorageCommitmentPushModel,
)
from appliance.config import BoxConfig, TransmitConfig
from appliance.logs import event
from appliance.store import CommitRequest, InstanceCommit, Store

log = logging.getLogger("fluxbox.commitment")

# N-ACTION statuses (PS3.7 C.4.2) and the Failure Reasons of a report (PS3.3 C.14.1.1)
# share their codes: statuses.NO_SUCH_SOP_INSTANCE, statuses.CLASS_INSTANCE_CONFLICT, ...

MODES = ("box", "pacs")
SAME_ASSOCIATION_TIMEOUT_S = 10.0  # for a modality that keeps it open yet never answers
# A report on the asking association waits this long for a release the modality may
# already have sent (a report crossing it would make the modality abort).
RELEASE_GRACE_S = 1.0
POLL_S = 2.0  # pacs mode: how often waiting requests are looked at again


@dataclass(frozen=True)
class Report:
    """The N-EVENT-REPORT of one request: what is committed, what failed and why."""

    transaction_uid: str
    committed: tuple[tuple[str, str], ...]
    failed: tuple[tuple[str, str, int], ...]  # (SOP Class, SOP Instance, Failure Reason)

    @property
    def event_type(self) -> int:
        return EVENT_SOME_FAILED if self.failed else EVENT_ALL_COMMITTED

    def dataset(self, retrieve_ae_title: str | None) -> Dataset:
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        if retrieve_ae_title and self.committed:
            ds.RetrieveAETitle = retrieve_ae_title
        ds.ReferencedSOPSequence = [_reference(c, i) for c, i in self.committed]
        if self.failed:
            failed = []
            for sop_class, sop_instance, reason in self.failed:
                item = _reference(sop_class, sop_instance)
                item.FailureReason = reason
                failed.append(item)
            ds.FailedSOPSequence = failed
        return ds


def _status_error(status: int) -> str | None:
    """None for the modality's success or warning, else what it answered."""
    if statuses.is_success_or_warning(status):
        return None
    return f"modality answered 0x{status:04X}"


def _reference(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


_FAILURE_REASON = {
    InstanceCommit.MISSING: statuses.NO_SUCH_SOP_INSTANCE,
    InstanceCommit.CLASS_CONFLICT: statuses.CLASS_INSTANCE_CONFLICT,
    InstanceCommit.FAILED: statuses.PROCESSING_FAILURE,
}


def verdict(request: CommitRequest, state: Callable[[str, str], InstanceCommit]
            ) -> Report | None:
    """The report of `request`, or None while an instance is still WAITING.

    `state(sop_class, sop_instance)` is where that instance stands now. An instance not
    held when the request came fails even if it arrives later (the modality asked too
    soon); one held then and MISSING now was purged once complete, so it is committed.
    """
    committed, failed = [], []
    for (sop_class, sop_instance), held in zip(request.references, request.held, strict=True):
        now = state(sop_class, sop_instance)
        if now is InstanceCommit.WAITING:
            return None
        if held and now is InstanceCommit.MISSING:
            now = InstanceCommit.COMMITTED
        if not held and now is InstanceCommit.COMMITTED:
            now = InstanceCommit.MISSING
        if now is InstanceCommit.COMMITTED:
            committed.append((sop_class, sop_instance))
        else:
            failed.append((sop_class, sop_instance, _FAILURE_REASON[now]))
    return Report(request.transaction_uid, tuple(committed), tuple(failed))


def parse_request(info: Dataset | None) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """(Transaction UID, references) of an N-ACTION's Action Information; None if unusable."""
    if info is None:
        return None
    transaction_uid = str(info.get("TransactionUID", "") or "").strip()
    references = []
    for item in info.get("ReferencedSOPSequence", None) or []:
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not sop_class or not sop_instance:
            return None
        references.append((sop_class, sop_instance))
    if not transaction_uid or not references:
        return None
    return transaction_uid, tuple(references)


class ModalityCommitment:
    """Answers modalities' commitment requests and delivers their reports.

    `on_n_action` is the EVT_N_ACTION handler; `report_once` is the one step of the
    reporting loop (`run`), callable directly in tests.
    """

    def __init__(self, store: Store, box: BoxConfig, transmit: TransmitConfig) -> None:
        self.store = store
        self.box = box
        self.transmit = transmit
        self.wake = threading.Event()
        self._open: dict[str, Association] = {}  # Transaction UID -> the one that asked
        self._lock = threading.Lock()
        self._backoff: dict[str, Backoff] = {}
        self._message_ids = itertools.count(1)
        self.last_error: str | None = None  # of the latest failed report, until one succeeds

    @property
    def end_to_end(self) -> bool:
        return self.box.commitment_mode == "pacs"

    # -- the request ---------------------------------------------------------------

    def on_n_action(self, ev: Event) -> dimse.Answer:
        """Keep the request durably, then answer; the report follows from `run`."""
        if ev.action_type != ACTION_REQUEST_COMMIT:
            return statuses.NO_SUCH_ACTION_TYPE, None
        try:
            parsed = parse_request(ev.action_information)
        except Exception:  # a dataset that does not decode
            parsed = None
        if parsed is None:
            event(log, "commitment request refused", logging.WARNING,
                  calling_ae=dimse.calling_aet(ev), reason="no transaction or references")
            return statuses.INVALID_ARGUMENT_VALUE, None
        transaction_uid, references = parsed
        held = tuple(self.store.instance_commit(c, i, end_to_end=False)
                     is InstanceCommit.COMMITTED for c, i in references)
        request = CommitRequest(transaction_uid, dimse.calling_aet(ev), references, held,
                                time.time())
        try:
            self.store.put_commit_request(request)
        except Exception:
            log.exception("commitment request not kept")
            return statuses.PROCESSING_FAILURE, None
        with self._lock:
            self._open[transaction_uid] = ev.assoc
        event(log, "commitment requested", calling_ae=request.calling_aet,
              transaction=self.store.uid_key(transaction_uid)[:12],
              instances=len(references), held=sum(held))
        self.wake.set()
        return statuses.SUCCESS, None

    # -- the report ----------------------------------------------------------------

    def report_once(self, now: float | None = None) -> int:
        """Report every request that is ready and due; returns how many were delivered."""
        now = time.time() if now is None else now
        delivered = 0
        for request in self.store.commit_requests():
            backoff = self._backoff.get(request.transaction_uid)
            if backoff is not None and not backoff.ready(now):
                continue
            report = verdict(request, lambda c, i: self.store.instance_commit(
                c, i, end_to_end=self.end_to_end))
            if report is None:
                continue
            error = self._deliver(request, report)
            if error is None:
                self.store.drop_commit_request(request.transaction_uid)
                self._backoff.pop(request.transaction_uid, None)
                self.last_error = None
                delivered += 1
                continue
            self.last_error = f"commitment report to {request.calling_aet} not delivered: {error}"
            backoff = self._backoff.setdefault(request.transaction_uid, Backoff(
                self.transmit.retry_initial_s, self.transmit.retry_max_s))
            delay = backoff.failed(now)
            event(log, "commitment report not delivered", logging.WARNING,
                  calling_ae=request.calling_aet,
                  transaction=self.store.uid_key(request.transaction_uid)[:12],
                  error=error, retry_in_s=f"{delay:.0f}")
        return delivered

    def _deliver(self, request: CommitRequest, report: Report) -> str | None:
        """Send the report: on the asking association if still open, else on a new one.
        Returns None once the modality answered success, else why not."""
        with self._lock:
            self._open = {t: a for t, a in self._open.items() if a.is_established}
            assoc = self._open.get(request.transaction_uid)
        error = None
        if assoc is not None:
            error = self._send(assoc, report, same_association=True)
            if error is None:
                self._forget(request.transaction_uid)
                self._logged(request, report, "same")
                return None
        modality = self.box.modality(request.calling_aet)
        if modality is None:
            return (f"{error} on the open association; " if error else "association closed; "
                    ) + "no [box.modalities] entry for this AE title"
        ae = dimse.calling_ae(self.box.ae_title,
                              connect_timeout_s=self.transmit.connect_timeout_s,
                              dimse_timeout_s=self.transmit.dimse_timeout_s)
        ae.add_requested_context(StorageCommitmentPushModel,
                                 [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        # PS3.4 J.3.3: the SCP opening the association proposes the SCP role.
        role = build_role(StorageCommitmentPushModel, scp_role=True)
        try:
            assoc = ae.associate(modality.host, modality.port, ae_title=modality.ae_title,
                                 ext_neg=[role])
        except OSError as exc:
            return f"cannot connect: {type(exc).__name__}"
        if not assoc.is_established:
            return "association rejected or unanswered"
        try:
            error = self._send(assoc, report, same_association=False)
        finally:
            if assoc.is_established:
                assoc.release()
        if error is None:
            self._forget(request.transaction_uid)
            self._logged(request, report, "new")
        return error

    def _forget(self, transaction_uid: str) -> None:
        with self._lock:
            self._open.pop(transaction_uid, None)

    def _send(self, assoc: Association, report: Report, *,
              same_association: bool) -> str | None:
        dataset = report.dataset(self.box.ae_title if not self.end_to_end else None)
        msg_id = next(self._message_ids) % 65536
        if same_association:
            return self._send_same(assoc, report, dataset, msg_id)
        try:
            status, _ = assoc.send_n_event_report(
                dataset, report.event_type, StorageCommitmentPushModel, PUSH_MODEL_INSTANCE,
                msg_id=msg_id)
        except (RuntimeError, ValueError) as exc:  # no usable context, association gone
            return f"cannot send: {exc}"
        if "Status" not in status:
            return "no answer"
        return _status_error(int(status.Status))

    def _send_same(self, assoc: Association, report: Report, dataset: Dataset,
                   msg_id: int) -> str | None:
        """The report on the asking association, unless the modality is releasing it."""
        contexts = [cx for cx in assoc.accepted_contexts
                    if cx.abstract_syntax == StorageCommitmentPushModel]
        if not contexts:
            return "cannot send: no Storage Commitment context"
        request = N_EVENT_REPORT()
        request.MessageID = msg_id
        request.AffectedSOPClassUID = StorageCommitmentPushModel
        request.AffectedSOPInstanceUID = PUSH_MODEL_INSTANCE
        request.EventTypeID = report.event_type
        syntax = contexts[0].transfer_syntax[0]
        encoded = encode(dataset, syntax.is_implicit_VR, syntax.is_little_endian,
                         syntax.is_deflated)
        if encoded is None:
            return "cannot send: the report does not encode"
        request.EventInformation = BytesIO(encoded)
        if dimse.releasing_within(assoc, RELEASE_GRACE_S):
            return "the modality released the association"
        try:
            context_id = cast(int, contexts[0].context_id)  # an accepted context has one
            response = dimse.request_unless_releasing(
                assoc, request, context_id, SAME_ASSOCIATION_TIMEOUT_S)
        except dimse.PeerReleasing:
            return "the modality released the association"
        status = getattr(response, "Status", None)
        if status is None:
            return "no answer"
        return _status_error(int(status))

    def _logged(self, request: CommitRequest, report: Report, association: str) -> None:
        event(log, "commitment reported", calling_ae=request.calling_aet,
              transaction=self.store.uid_key(request.transaction_uid)[:12],
              committed=len(report.committed), failed=len(report.failed),
              association=association)

    def status(self) -> dict[str, Any]:
        """For `fluxbox status`: the mode, requests not yet reported, the last failure."""
        return {"mode": self.box.commitment_mode, "requests": len(self.store.commit_requests()),
                "last_error": self.last_error}

    def run(self, stop: threading.Event) -> None:
        """Report until `stop`: at once after a request, and every POLL_S for waiting ones."""
        while not stop.is_set():
            try:
                self.report_once()
            except Exception:
                log.exception("commitment report error")
            self.wake.wait(POLL_S)
            self.wake.clear()
