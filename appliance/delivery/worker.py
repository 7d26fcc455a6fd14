"""Sending to one destination: batches, acknowledgments, back-off.

Each destination has one worker. Its position lives in the store: successes and
warnings are committed in groups (`acks.AckGroup`: one commit per 64 answers or 0.2 s,
and whatever is held when an association's work ends, broken or not), so after a link
drop only unacknowledged instances are sent again (at most those in flight at the drop
can reach the PACS twice), and after a crash at most those and one uncommitted group.
While the PACS answers one instance, the next one's first bytes are decrypted
(`AssociationSender`), so the link does not wait for decryption.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from appliance import commitment, dimse, encoding, mpps, statuses
from appliance.backoff import Backoff
from appliance.config import DestinationConfig, TransmitConfig
from appliance.delivery.acks import AckGroup
from appliance.delivery.association import (
    AssociationAsker,
    AssociationSender,
    hard_abort,
    note_peer_abort,
    sop_name,
    tls_context,
    tls_problem,
)
from appliance.delivery.outcomes import (
    BatchResult,
    CommitmentAsker,
    LinkDown,
    NoContextAccepted,
    PeerAborted,
    PeerRejected,
    Sender,
    TransientRefusal,
    Unsendable,
)
from appliance.encoding import UNCOMPRESSED
from appliance.inflight import InFlight
from appliance.logs import event
from appliance.pacing import Pacing, Throttle
from appliance.store import Queued, Store, StudyRecord

log = logging.getLogger("fluxbox.delivery")

MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1-255
COMMIT_ASK_AGAIN_S = 600.0  # a commitment request with no report by then is asked again
LAST_SUCCESS_SAVE_S = 30.0  # the last delivery time goes to the store at most this often
# A PACS that aborts the association on one instance this often fails that instance (its
# reason shown), so it does not hold up the destination's queue for ever.
PEER_ABORTS_MAX = 3


def contexts_for(items: list[Queued], preferred: list[str] | None = None
                 ) -> list[tuple[str, list[str]]]:
    """Presentation contexts for a batch (see encoding.proposals)."""
    pairs = list(dict.fromkeys((i.instance.sop_class_uid, i.instance.transfer_syntax)
                               for i in items))
    return encoding.proposals(pairs, preferred or [])


class DestinationWorker:
    """Delivers one destination's queue. `deliver_once` is the one step; `run` loops it."""

    def __init__(
        self, store: Store, dest_id: str, dest: DestinationConfig, transmit: TransmitConfig,
        *, calling_ae: str, gate: Callable[[StudyRecord, float], str | None],
        on_progress: Callable[[], None] = lambda: None,
        link_class: Callable[[], str | None] = lambda: None,
        pacing: Pacing | None = None, throttle: Throttle | None = None,
        in_flight: InFlight | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.dest_id = dest_id
        self.dest = dest
        self.transmit = transmit
        self.calling_ae = calling_ae
        self.gate = gate
        self.on_progress = on_progress
        self.link_class = link_class
        self.pacing = pacing or Pacing(transmit)
        self.throttle = throttle or Throttle(transmit)
        self.in_flight = in_flight or InFlight()  # shared with `assign` (app.Box wires it)
        self.clock = clock  # every step's "now" (the gate just before each send, acks, back-off)
        self.backoff = Backoff(transmit.retry_initial_s, transmit.retry_max_s)
        self.peer_aborts: dict[bytes, int] = {}  # pending key -> PACS aborts while it was sent
        self.last_error: str | None = None
        self.last_round_at: float | None = None  # when the worker last looked at its queue
        # set when the box stops (`run` takes the box's event): a batch ends after the
        # instance in flight, the rest stays pending
        self.stopping = threading.Event()
        # kept in the store (at most every LAST_SUCCESS_SAVE_S): a restart does not make the
        # front panel say "never"
        saved = store.get_setting(self._last_success_setting)
        self.last_success_at: float | None = float(saved) if saved else None
        self._last_success_saved = self.last_success_at or 0.0

    @property
    def retry_at(self) -> float | None:
        """When the worker tries again after a failure (None: it is not backing off)."""
        return self.backoff.next_at or None

    def retry_now(self) -> None:
        """`fluxbox retry`: forget the back-off; the next step tries at once."""
        self.backoff.clear()

    @property
    def _last_success_setting(self) -> str:
        return f"last_success_at:{self.dest_id}"

    def _record_success(self, now: float) -> None:
        self.last_success_at = now
        if now - self._last_success_saved >= LAST_SUCCESS_SAVE_S:
            self.store.set_setting(self._last_success_setting, repr(now))
            self._last_success_saved = now

    # -- one step ------------------------------------------------------------

    def deliver_once(self, now: float | None = None) -> BatchResult:
        """Send the next batch, if back-off and policy allow; record every response."""
        now = self.clock() if now is None else now
        self.last_round_at = now
        if not self.backoff.ready(now):
            return BatchResult()
        batch = self._next_batch(now)
        if not batch:
            return self._request_commitments(now) if self.dest.commitment else BatchResult()
        # Parallel associations take instances from one shared queue, so a fast one is
        # never left idle while a slow one still holds its share.
        work = iter(batch)
        contexts = contexts_for(batch, encoding.configured(self.dest.transfer_syntaxes))
        outcomes = [BatchResult() for _ in range(self._associations(batch))]
        if len(outcomes) == 1:
            self._send_part(work, contexts, outcomes[0])
        else:
            threads = [threading.Thread(target=self._send_part, args=(work, contexts, o),
                                        daemon=True) for o in outcomes]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return self._settle(outcomes, self.clock())

    def _next_batch(self, now: float) -> list[Queued]:
        t = self.transmit
        max_count = t.batch_count if t.batch == "count" else 10_000
        max_bytes = t.batch_mb * 1024 * 1024 if t.batch == "size" else 1 << 62
        batch = self.store.next_batch(
            self.dest_id, max_count=max_count, max_bytes=max_bytes,
            whole_study=t.batch == "study", allowed=lambda s: self.gate(s, now) is None,
        )
        return self._fit_contexts(batch)

    def _fit_contexts(self, batch: list[Queued]) -> list[Queued]:
        """Keep the batch within what one association can negotiate; the rest waits."""
        preferred = encoding.configured(self.dest.transfer_syntaxes)
        pairs: dict[tuple[str, str], None] = {}
        for end, item in enumerate(batch):
            pairs[(item.instance.sop_class_uid, item.instance.transfer_syntax)] = None
            if len(encoding.proposals(list(pairs), preferred)) > MAX_CONTEXTS:
                return batch[:max(end, 1)]
        return batch

    def _associations(self, batch: list[Queued]) -> int:
        """As many as pacing wants, but one for MPPS messages: the N-CREATE and N-SETs of a
        procedure step must reach the RIS in order."""
        if any(item.instance.sop_class_uid == mpps.MPPS_CLASS for item in batch):
            return 1
        wanted = self.pacing.associations(self.dest_id, self.link_class())
        return max(1, min(wanted, len(batch)))

    def _settle(self, outcomes: list[BatchResult], now: float) -> BatchResult:
        total = BatchResult()
        for o in outcomes:
            total.sent += o.sent
            total.failed += o.failed
            total.completed += o.completed
            total.error = total.error or o.error
        if total.error:
            self.pacing.record_failure(self.dest_id, self.link_class())
            delay = self.backoff.failed(now)
            if self.last_error != total.error or self.backoff.failures <= 1:
                event(log, "delivery interrupted", logging.WARNING, destination=self.dest_id,
                      reason=total.error, retry_in_s=round(delay, 1), sent=total.sent)
            self.last_error = total.error
        else:
            self.backoff.succeeded()
            self.last_error = None
        if total.sent:
            self._record_success(now)
        for study_key in total.completed:
            event(log, "study delivered", destination=self.dest_id, study=study_key[:12])
        if total.sent or total.failed:
            self.on_progress()
        return total

    # -- one association -----------------------------------------------------

    def _send_part(self, work: Iterator[Queued], contexts: list[tuple[str, list[str]]],
                   outcome: BatchResult) -> None:
        """One association sending from the shared `work` until it is empty or fails."""
        link_class = self.link_class()
        try:
            started = time.monotonic()
            assoc = self._associate(contexts, [(evt.EVT_PDU_RECV, note_peer_abort)])
            self.pacing.record_rtt(self.dest_id, link_class, time.monotonic() - started)
        except NoContextAccepted:
            # A permanent refusal of these instances, not a link problem: failing them lets
            # the rest of the queue go on (found by the interoperability matrix, issue 11:
            # one retired SOP class blocked every study behind it).
            while (item := _take(work)) is not None:
                self._fail(item, outcome, "PACS accepts none of the presentation contexts for "
                           f"{sop_name(item.instance)}")
            return
        except (LinkDown, PeerRejected) as exc:
            outcome.error = str(exc)
            return
        dimse.pace(assoc, throttle=self.throttle.for_class(link_class),
                   stall_s=self.transmit.stall_s)
        sender = AssociationSender(self, assoc, link_class)
        try:
            self.send_each(work, sender, outcome, link_class)
        except (LinkDown, TransientRefusal, dimse.Stalled) as exc:
            outcome.error = str(exc)
            hard_abort(assoc)
            return
        except Exception:
            hard_abort(assoc)
            raise
        finally:
            sender.close()
        assoc.release()

    def send_each(self, work: Iterator[Queued], sender: Sender, outcome: BatchResult,
                  link_class: str | None = None) -> None:
        """Send each instance of `work` that may still go, and record its answer.

        The gate is asked again of each instance just before its send, and the study's
        `in_flight` guard is held from that check to the answer, so `assign` never slips
        between the two. The sender is told the instance that follows (to read it ahead).
        Answers are committed in groups, the last one before this returns or raises.
        LinkDown, TransientRefusal and dimse.Stalled end the batch (the caller aborts the
        association), and so does `stopping`, after the instance in flight; what was not
        answered stays pending."""
        acks = AckGroup(lambda items: self.store.record_delivered_group(
            self.dest_id, items, self.clock(), link_class), self.in_flight)
        try:
            item = _take(work)
            while item is not None and not self.stopping.is_set():
                following = _take(work)
                outcome.completed += acks.flush_if_due()
                self._send_one(item, following, sender, outcome, link_class, acks)
                item = following
        finally:
            outcome.completed += acks.flush()

    def _send_one(self, item: Queued, following: Queued | None, sender: Sender,
                  outcome: BatchResult, link_class: str | None, acks: AckGroup) -> None:
        def commit_held() -> None:  # an assign waits for them: commit before waiting on it
            outcome.completed.extend(acks.flush())

        with self.in_flight.sending(item.study.key, commit_held):
            if not self.may_send(item, self.clock()):
                return
            try:
                answer = sender.send(item, following)
            except Unsendable as exc:
                self._fail(item, outcome, str(exc))
                return
            except PeerAborted:
                self._peer_aborted(item, outcome)
                raise
            self._record_status(item, outcome, answer.status, link_class, answer.elapsed_s,
                                acks)

    def _peer_aborted(self, item: Queued, outcome: BatchResult) -> None:
        """The PACS aborted while taking `item`: after PEER_ABORTS_MAX times the instance
        fails with that reason (`fluxbox retry` sends it again); until then it is retried
        with the batch. A link that drops is never counted (PeerAborted is the PACS's own
        A-ABORT)."""
        count = self.peer_aborts.get(item.pending_key, 0) + 1
        if count < PEER_ABORTS_MAX:
            self.peer_aborts[item.pending_key] = count
            return
        self.peer_aborts.pop(item.pending_key, None)
        self._fail(item, outcome, f"PACS aborted the association while taking this instance, "
                   f"{count} times")

    def may_send(self, item: Queued, now: float) -> bool:
        """Whether `item` may still go, asked of its study as it is now, just before the send:
        since the batch was taken the study may have been assigned to another site, or held.
        One that may not stays pending (the gate decides again at the next batch)."""
        study = self.store.study(item.study.key)
        return study is not None and self.gate(study, now) is None

    # -- storage commitment ------------------------------------------------------

    def commitments_due(self, now: float) -> list[StudyRecord]:
        """Fully acknowledged studies whose commitment is to be asked for and that the gate
        lets go now (none: no association is opened)."""
        return [s for s in self.store.awaiting_commitment(self.dest_id, now, COMMIT_ASK_AGAIN_S)
                if self.gate(s, now) is None]

    def ask_commitments(self, due: list[StudyRecord], asker: CommitmentAsker,
                        outcome: BatchResult) -> None:
        """Ask the PACS to commit each study of `due` (PS3.4 J.3), each asked of the gate
        again, under its `in_flight` guard, just before its request. Raises LinkDown."""
        for study in due:
            with self.in_flight.sending(study.key):
                current = self.store.study(study.key)
                if current is None or self.gate(current, self.clock()) is not None:
                    continue
                self._request_commitment(asker, current)
                outcome.sent += 1

    def _request_commitments(self, now: float) -> BatchResult:
        """Ask the PACS to commit every fully acknowledged study the gate lets go."""
        due = self.commitments_due(now)
        if not due:
            return BatchResult()
        outcome = BatchResult()
        try:
            # Verification rides along so that a PACS without Storage Commitment still
            # accepts the association, and the box can tell it says no.
            assoc = self._associate(
                [(commitment.StorageCommitmentPushModel, list(UNCOMPRESSED[:2])),
                 (Verification, list(UNCOMPRESSED[:2]))],
                handlers=[(evt.EVT_N_EVENT_REPORT,
                           lambda event: commitment.handle_report(self.store, event))])
        except (LinkDown, PeerRejected) as exc:
            outcome.error = str(exc)
            return self._settle([outcome], self.clock())
        try:
            self.ask_commitments(due, AssociationAsker(assoc), outcome)
        except LinkDown as exc:
            outcome.error = str(exc)
            assoc.abort()
            return self._settle([outcome], self.clock())
        assoc.release()
        return self._settle([outcome], self.clock())

    def _request_commitment(self, asker: CommitmentAsker, study: StudyRecord) -> None:
        if not asker.supports_commitment():
            self.store.commitment_refused(self.dest_id, study,
                                          "PACS does not support Storage Commitment", self.clock())
            return
        request = commitment.request_dataset(self.store.study_instances(study.key))
        # Recorded first: the report may arrive on another association at once.
        self.store.commitment_requested(self.dest_id, study, request.TransactionUID, self.clock())
        status = asker.ask(request)
        if "Status" not in status:
            raise LinkDown("no response to the commitment request")
        if not statuses.is_success_or_warning(int(status.Status)):
            self.store.commitment_refused(
                self.dest_id, study,
                f"PACS refused the commitment request: status 0x{int(status.Status):04X}",
                self.clock())

    def _associate(self, wanted: list[tuple[str, list[str]]],
                   handlers: list[EventHandlerType] | None = None) -> Association:
        t = self.transmit
        ae = dimse.calling_ae(self.calling_ae, connect_timeout_s=t.connect_timeout_s,
                              dimse_timeout_s=t.dimse_timeout_s)
        for sop_class, syntaxes in wanted:
            ae.add_requested_context(sop_class, syntaxes)
        tls = tls_context(self.dest)
        assoc = ae.associate(self.dest.host, self.dest.port, ae_title=self.dest.ae_title,
                             evt_handlers=handlers or [],
                             tls_args=(tls, self.dest.host) if tls else None)
        if assoc.is_established:
            return assoc
        if assoc.is_rejected:
            raise PeerRejected(f"association rejected by {self.dest.ae_title}")
        if assoc.is_aborted and assoc.rejected_contexts and not assoc.accepted_contexts:
            raise NoContextAccepted(f"{self.dest.ae_title} accepts none of the contexts")
        problem = tls_problem(self.dest, tls, t.connect_timeout_s) if tls else None
        raise LinkDown(problem or f"cannot reach {self.dest.host}:{self.dest.port}")

    def _record_status(self, item: Queued, outcome: BatchResult, status: Dataset,
                       link_class: str | None, elapsed: float, acks: AckGroup) -> None:
        """Success or warning joins the group of answers to commit; a transient refusal
        retries the batch; anything else fails this item with its reason while the rest
        go on."""
        if "Status" not in status:
            raise LinkDown("no response from PACS (association aborted or timed out)")
        code = int(status.Status)
        if statuses.is_success_or_warning(code):
            self.pacing.record_transfer(self.dest_id, link_class, item.instance.size_bytes,
                                        elapsed)
            self.peer_aborts.pop(item.pending_key, None)
            outcome.completed += acks.add(item)
            outcome.sent += 1
        elif statuses.is_transient(code):
            raise TransientRefusal(f"PACS answered 0x{code:04X} (out of resources)")
        else:
            self._fail(item, outcome, f"PACS refused the instance: status 0x{code:04X}")

    def _fail(self, item: Queued, outcome: BatchResult, reason: str) -> None:
        self.store.record_failed(self.dest_id, item, reason, self.clock())
        event(log, "instance refused", logging.WARNING, destination=self.dest_id,
              study=item.study.key[:12], reason=reason)
        outcome.failed += 1

    # -- the loop --------------------------------------------------------------

    def run(self, stop: threading.Event, wake: threading.Event, idle_s: float = 5.0) -> None:
        """Loop `deliver_once` until `stop`; sleeps on `wake` when idle or backing off."""
        self.stopping = stop
        while not stop.is_set():
            try:
                outcome = self.deliver_once()
            except Exception as exc:  # a worker never dies; the error is visible in status
                event(log, "delivery error", logging.ERROR, destination=self.dest_id,
                      error=type(exc).__name__)
                self.last_error = f"internal error: {type(exc).__name__}"
                self.backoff.failed(self.clock())
                outcome = BatchResult(error=self.last_error)
            if outcome.sent or outcome.failed:
                continue
            wait_s = idle_s
            if self.backoff.next_at:
                wait_s = max(0.05, min(idle_s, self.backoff.next_at - self.clock()))
            wake.wait(wait_s)
            wake.clear()


_TAKE_LOCK = threading.Lock()


def _take(work: Iterator[Queued]) -> Queued | None:
    """The next instance of a batch shared by several associations."""
    with _TAKE_LOCK:
        return next(work, None)
