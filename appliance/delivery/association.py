"""One association to a destination, in pynetdicom: C-STORE of an instance in the best
syntax both sides take (its data set streamed from the decrypted blob, `cstore` and
`wire`; the next instance read ahead while the PACS answers), MPPS N-CREATE and N-SET,
Storage Commitment N-ACTION, DICOM TLS."""

from __future__ import annotations

import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.pdu import A_ABORT_RQ

from appliance import commitment, encoding, mpps, statuses
from appliance.config import DestinationConfig
from appliance.config.tls import tls_client_problems
from appliance.crypto import BlobCorrupt
from appliance.delivery import cstore, wire
from appliance.delivery.cstore import hard_abort
from appliance.delivery.outcomes import Answer, LinkDown, PeerAborted, Unsendable
from appliance.store import InstanceRecord, PlainStream, Queued

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from appliance.delivery.worker import DestinationWorker


# Set on an association when its peer's application sends A-ABORT (source 0, the service
# user), as opposed to a connection lost or an abort by the peer's DICOM stack.
PEER_ABORT_MARK = "fluxbox_peer_aborted"
# What is decrypted of the next instance while the PACS answers one (per association).
READ_AHEAD_BYTES = 2 * 1024 * 1024
__all__ = ["AssociationAsker", "AssociationSender", "hard_abort", "note_peer_abort"]


def note_peer_abort(event: Any) -> None:
    """EVT_PDU_RECV handler: marks the association the peer's application aborted."""
    if isinstance(event.pdu, A_ABORT_RQ) and event.pdu.source == 0:
        setattr(event.assoc, PEER_ABORT_MARK, True)


class AssociationSender:
    """`Sender` over a pynetdicom association: C-STORE for instances, N-CREATE and N-SET
    for MPPS messages."""

    def __init__(self, worker: DestinationWorker, assoc: Association,
                 link_class: str | None) -> None:
        self.worker = worker
        self.store = worker.store
        self.assoc = assoc
        self.link_class = link_class
        self._message_id = 0
        self._ahead: tuple[bytes, str, PlainStream] | None = None  # position, blob, stream

    def send(self, item: Queued, following: Queued | None = None) -> Answer:
        record = item.instance
        if record.sop_class_uid == mpps.MPPS_CLASS:
            return self._send_message(item)
        candidates = self._candidates(record)
        if cstore.ended(self.assoc):  # an abort before this send is not this instance's
            raise LinkDown("association lost")
        worker = self.worker
        self.assoc.dimse_timeout = worker.pacing.dimse_timeout_s(
            worker.dest_id, self.link_class, record.size_bytes)
        try:
            source, syntaxes = self._source(item, candidates)
            try:
                return self._store(record, source, syntaxes, following)
            finally:
                source.close()
        except BlobCorrupt as exc:
            raise Unsendable(f"the box's stored copy cannot be sent: {exc}") from exc
        except encoding.CannotEncode as exc:
            raise Unsendable(str(exc)) from exc
        except ValueError as exc:  # pynetdicom cannot encode or send it: trying again won't help
            raise Unsendable(f"the box cannot send this instance: {exc}") from exc

    def _store(self, record: InstanceRecord, source: wire.Source, syntaxes: list[str],
               following: Queued | None) -> Answer:
        """The C-STORE of `record`, its data set streamed from `source`."""
        with wire.outgoing(source, syntaxes) as (syntax, data_set):
            started = time.monotonic()
            status = cstore.send(
                self.assoc, self._context_id(record, syntax), record.sop_class_uid,
                record.sop_instance_uid, data_set, message_id=self._next_message_id(),
                meanwhile=lambda: self._read_ahead(following))
        if "Status" not in status and getattr(self.assoc, PEER_ABORT_MARK, False):
            raise PeerAborted("PACS aborted the association while taking an instance")
        return Answer(status, time.monotonic() - started)

    def _source(self, item: Queued, candidates: list[str]) -> tuple[wire.Source, list[str]]:
        """Where `item`'s bytes come from (a compressed variant made ahead, if the PACS
        takes one, else the stored copy) and the syntaxes to try, best first."""
        record = item.instance
        variant = self._variant(record, candidates)
        chosen = variant or record
        ahead, self._ahead = self._ahead, None
        stream = None
        if ahead is not None and ahead[:2] == (item.pending_key, chosen.blob):
            stream = ahead[2]
        elif ahead is not None:
            ahead[2].close()
        source = wire.Source(chosen, self.store.open_plaintext, stream)
        return source, [chosen.transfer_syntax] if variant else candidates

    def _variant(self, record: InstanceRecord, candidates: list[str]) -> InstanceRecord | None:
        return next((v for ts in candidates if ts != record.transfer_syntax
                     and (v := self.store.variant(record, ts)) is not None), None)

    def _read_ahead(self, following: Queued | None) -> None:
        """Decrypt the first READ_AHEAD_BYTES of the next instance now. Any problem is left
        for its own send to meet (and report)."""
        if following is None or following.instance.sop_class_uid == mpps.MPPS_CLASS:
            return
        stream = None
        try:
            record = following.instance
            chosen = self._variant(record, self._candidates(record)) or record
            stream = self.store.open_plaintext(chosen)
            stream.read_ahead(READ_AHEAD_BYTES)
        except Exception:
            if stream is not None:
                stream.close()
            return
        self._ahead = (following.pending_key, chosen.blob, stream)

    def close(self) -> None:
        """Drop what was read ahead and not sent."""
        if self._ahead is not None:
            self._ahead[2].close()
            self._ahead = None

    def _next_message_id(self) -> int:
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def _context_id(self, record: InstanceRecord, syntax: str) -> int:
        for cx in self.assoc.accepted_contexts:
            if cx.abstract_syntax == record.sop_class_uid and cx.transfer_syntax[0] == syntax:
                return int(cx.context_id)  # type: ignore[arg-type]
        raise Unsendable(f"PACS accepted no context for {sop_name(record)} in "
                         f"{UID(syntax).name}")

    def _candidates(self, record: InstanceRecord) -> list[str]:
        """The syntaxes this instance may travel in on this association, best first."""
        accepted = {cx.transfer_syntax[0] for cx in self.assoc.accepted_contexts
                    if cx.abstract_syntax == record.sop_class_uid}
        if not accepted:
            raise Unsendable(f"PACS does not accept SOP class {sop_name(record)}")
        candidates = [ts for ts in encoding.wire_syntaxes(
            record.transfer_syntax, encoding.configured(self.worker.dest.transfer_syntaxes),
            record.size_bytes) if ts in accepted]
        if not candidates:
            raise Unsendable("PACS does not accept transfer syntax "
                             f"{UID(record.transfer_syntax).name} for {sop_name(record)}")
        return candidates

    def _send_message(self, item: Queued) -> Answer:
        """An MPPS N-CREATE or N-SET, relayed as the modality sent it."""
        record = item.instance
        if not self.assoc.is_established:
            raise LinkDown("association lost")
        if not any(cx.abstract_syntax == mpps.MPPS_CLASS
                   for cx in self.assoc.accepted_contexts):
            raise Unsendable("RIS does not accept MPPS")
        message = self.store.message(record)
        dataset = mpps.decode(message.payload)
        if message.kind == "create":
            return Answer(self._n_create(message.step_uid, dataset))
        status = self._n_set(message.step_uid, dataset)
        if status.get("Status") == statuses.NO_SUCH_SOP_INSTANCE:
            status = self._create_again_then_set(item, dataset)
        return Answer(status)

    def _create_again_then_set(self, item: Queued, dataset: Dataset) -> Dataset:
        """The RIS does not know the step of an N-SET (0x0112: its N-CREATE was lost, or
        went to another RIS): the step's N-CREATE is sent again, then the N-SET, once.
        Raises Unsendable, with a reason for service staff, when that does not help."""
        step_uid = self.store.message(item.instance).step_uid
        create = next((m for m in self.store.step_messages(item.study.key)
                       if m.kind == "create"), None)
        if create is None:
            raise Unsendable("RIS does not know this procedure step (0x0112) and the box "
                             "holds no N-CREATE for it")
        status = self._n_create(step_uid, mpps.decode(create.payload))
        if "Status" not in status:
            return status  # the association is gone: the N-SET stays pending
        code = int(status.Status)
        if code != statuses.DUPLICATE_SOP_INSTANCE and not statuses.is_success_or_warning(code):
            raise Unsendable("RIS does not know this procedure step (0x0112) and refused its "
                             f"N-CREATE sent again: status 0x{code:04X}")
        status = self._n_set(step_uid, dataset)
        if status.get("Status") == statuses.NO_SUCH_SOP_INSTANCE:
            raise Unsendable("RIS does not know this procedure step (0x0112), even after its "
                             "N-CREATE was sent again")
        return status

    def _n_create(self, step_uid: str, dataset: Dataset) -> Dataset:
        if not self.assoc.is_established:
            raise LinkDown("association lost")
        status: Dataset = self.assoc.send_n_create(dataset, mpps.MPPS_CLASS, step_uid)[0]
        return status

    def _n_set(self, step_uid: str, dataset: Dataset) -> Dataset:
        if not self.assoc.is_established:
            raise LinkDown("association lost")
        status: Dataset = self.assoc.send_n_set(dataset, mpps.MPPS_CLASS, step_uid)[0]
        return status


class AssociationAsker:
    """`CommitmentAsker` over a pynetdicom association."""

    def __init__(self, assoc: Association) -> None:
        self.assoc = assoc

    def supports_commitment(self) -> bool:
        if not self.assoc.is_established:
            raise LinkDown("association lost")
        return any(cx.abstract_syntax == commitment.StorageCommitmentPushModel
                   for cx in self.assoc.accepted_contexts)

    def ask(self, request: Dataset) -> Dataset:
        status: Dataset = self.assoc.send_n_action(
            request, commitment.ACTION_REQUEST_COMMIT, commitment.StorageCommitmentPushModel,
            commitment.PUSH_MODEL_INSTANCE)[0]
        return status


def tls_context(dest: DestinationConfig) -> ssl.SSLContext | None:
    """DICOM TLS (PS3.15 B.1) towards `dest`, when its config names a CA. A half-configured
    setting raises (check-config refuses it): it never means clear text."""
    problems = tls_client_problems(dest.tls_cert, dest.tls_key, dest.tls_ca)
    if problems:
        raise ValueError(f"destination {dest.name}: " + "; ".join(f"{k} {m}" for k, m in problems))
    if dest.tls_ca is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(dest.tls_ca))
    if dest.tls_cert is not None:
        context.load_cert_chain(str(dest.tls_cert), str(dest.tls_key) if dest.tls_key else None)
    return context


def tls_problem(dest: DestinationConfig, context: ssl.SSLContext, timeout_s: float) -> str | None:
    """Why a TLS handshake with `dest` fails, in words a PACS administrator can act on."""
    try:
        with socket.create_connection((dest.host, dest.port), timeout=timeout_s) as raw, \
                context.wrap_socket(raw, server_hostname=dest.host):
            return None
    except ssl.SSLCertVerificationError as exc:
        return f"TLS: the certificate of {dest.host} does not verify ({exc.verify_message})"
    except ssl.SSLError as exc:
        return f"TLS handshake with {dest.host} failed ({exc.reason or exc})"
    except OSError:
        return None


def sop_name(record: InstanceRecord) -> str:
    name = UID(record.sop_class_uid).name
    return name if name != record.sop_class_uid else record.sop_class_uid
