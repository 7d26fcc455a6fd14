"""pynetdicom settings, set in one place (the status codes are in `appliance.statuses`).

`configure()`, called once by the composition root (`app.Box`), applies them: chunked
receive and send (large instances never sit in memory), the PDU limits of
`appliance.upper_layer`, identifier logging off (no patient data in logs), and
TCP_NODELAY on every association socket (pynetdicom never sets it, and Nagle's algorithm
costs small instances a round trip each), and P-DATA-TF PDUs encoded and sent without
pynetdicom's copies of each value. Every pynetdicom internal patched here or in
`upper_layer` is checked by a test that fails loudly when pynetdicom changes it
(tests/unit/test_upper_layer.py, tests/unit/test_dimse.py).

It is also where the box's event handlers meet pynetdicom's `Event`: `Handler` is the type
they share, and the accessors below narrow what pynetdicom types loosely (`event.request`
is any DIMSE request).
"""

from __future__ import annotations

import queue
import socket
import struct
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pynetdicom.acse
import pynetdicom.association
import pynetdicom.dimse_messages
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND, C_STORE, N_CREATE, N_SET, DimsePrimitiveType
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event, EventType
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_ABORT, A_ASSOCIATE, A_P_ABORT, A_RELEASE, P_DATA
from pynetdicom.presentation import CXNegotiationReturn, ListCXType, RoleType
from pynetdicom.transport import AddressInformation, AssociationSocket

from appliance import tcp, upper_layer
from appliance.upper_layer import patch

# Outgoing P-DATA PDUs queued per association. pynetdicom's queue is unbounded: a
# sender reading a 1 GB file faster than the link drains it would hold it all in memory.
MAX_QUEUED_PDUS = 32
# pynetdicom's association threads poll with fixed sleeps (1 ms per turn), which costs a
# round of latency per instance: measured 16 % of ingest and 30 % of delivery time. While an
# association is open they poll at most this long; with none open nothing polls at all.
POLL_S = 0.0002
# Marks the box leaves on pynetdicom's objects (read back with getattr, default unset).
_INTAKE_MARK = "_fluxbox_intake"  # on an AE: where its C-STORE data sets go
_NODELAY_MARK = "_fluxbox_nodelay"  # on AssociationSocket: configure() has run
_PREFERENCE_MARK = "_fluxbox_preference"  # on an AE: its storage syntax preference
_WRAPPED_MARK = "_fluxbox_wrapped"  # on pynetdicom.acse: the negotiation is wrapped
_THROTTLE_MARK, _STALL_MARK = "fluxbox_throttle", "fluxbox_stall_s"  # on a DUL
_PduPrimitive = A_ASSOCIATE | A_RELEASE | A_ABORT | A_P_ABORT | P_DATA  # what a DUL sends


# -- the handlers' side --------------------------------------------------------------

Answer = tuple[int, Dataset | None]
"""A DIMSE-N handler's answer (status, data set), and each answer of a C-FIND."""
HandlerResult = int | Answer | Iterator[Answer] | None
Handler = Callable[[Event], HandlerResult]
"""An event handler as the box writes them (statuses as ints; notifications return None)."""
Handlers = list[tuple[EventType, Handler]]


def calling_aet(ev: Event) -> str:
    """The AE title of the peer that opened the event's association."""
    return ev.assoc.requestor.ae_title


def store_request(ev: Event) -> C_STORE:
    """The request of an EVT_C_STORE."""
    return cast(C_STORE, ev.request)


def find_request(ev: Event) -> C_FIND:
    """The request of an EVT_C_FIND."""
    return cast(C_FIND, ev.request)


def create_request(ev: Event) -> N_CREATE:
    """The request of an EVT_N_CREATE."""
    return cast(N_CREATE, ev.request)


def set_request(ev: Event) -> N_SET:
    """The request of an EVT_N_SET."""
    return cast(N_SET, ev.request)


# -- settings --------------------------------------------------------------------------

def configure() -> None:
    """Apply the box's pynetdicom and pydicom settings (idempotent)."""
    # Values are checked by validation.py; pydicom's own warnings would echo them to the log.
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.STORE_SEND_CHUNKED_DATASET = True
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    upper_layer.install()
    _prefer_syntaxes()
    patch(pynetdicom.dimse_messages, "NamedTemporaryFile", _data_set_file)
    if getattr(AssociationSocket, _NODELAY_MARK, False):
        return
    _bound_send_queue()
    _shorten_polling()
    _lean_data_path()
    create_socket, init = AssociationSocket._create_socket, AssociationSocket.__init__

    def _create_socket(self: AssociationSocket,
                       address: AddressInformation) -> socket.socket:  # outgoing associations
        sock = create_socket(self, address)
        tcp.nodelay(sock)
        return sock

    def __init__(self: AssociationSocket, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)  # accepted associations arrive with a socket
        tcp.nodelay(getattr(self, "socket", None))

    patch(AssociationSocket, "_create_socket", _create_socket)
    patch(AssociationSocket, "__init__", __init__)
    patch(AssociationSocket, _NODELAY_MARK, True)


def calling_ae(ae_title: str, *, connect_timeout_s: float, dimse_timeout_s: float) -> AE:
    """An AE for an association the box opens (to a PACS, a RIS, a worklist server, a
    modality): the connection and association request wait `connect_timeout_s`, every
    answer `dimse_timeout_s`. The caller adds its presentation contexts."""
    ae = AE(ae_title=ae_title)
    ae.connection_timeout = ae.acse_timeout = connect_timeout_s
    ae.dimse_timeout = ae.network_timeout = dimse_timeout_s
    return ae


def receive_into(ae: AE, open_intake: Callable[[], object]) -> None:
    """C-STORE data sets arriving on `ae`'s associations go to `open_intake()`, a file
    object that encrypts them as they come (`store.Intake`), never to a plaintext file.
    pynetdicom writes them from the association's DUL thread (`_data_set_file`); any other
    acceptor in the process spools as pynetdicom always does."""
    setattr(ae, _INTAKE_MARK, open_intake)


def guard_disk(directory: Path, keep_free_bytes: int) -> None:
    """A data set arriving while the file system of `directory` has less than
    `keep_free_bytes` free is aborted as it arrives (an endless C-STORE, a disk filling)."""
    upper_layer.guard_spool(directory, keep_free_bytes)


def received_file(ev: Event) -> object:
    """The file object an EVT_C_STORE's data set was written to (an Intake on the box's
    own associations)."""
    return getattr(ev.request, "_dataset_file", None)


def drop_partial_message(assoc: Association) -> None:
    """Forget the message `assoc` was receiving when it ended, and its data set's file."""
    dimse = getattr(assoc, "dimse", None)
    message = getattr(dimse, "message", None)
    if message is not None and dimse is not None:
        dimse.message = None
        upper_layer.drop_message(message)


def _data_set_file(**kwargs: Any) -> object:
    """pynetdicom's NamedTemporaryFile for a C-STORE data set, per acceptor."""
    assoc = getattr(threading.current_thread(), "assoc", None)
    open_intake = getattr(getattr(assoc, "ae", None), _INTAKE_MARK, None)
    if open_intake is None:
        return tempfile.NamedTemporaryFile(**kwargs)  # noqa: SIM115 (pynetdicom closes it)
    return open_intake()


def accept_any_storage(ae: AE, preference: list[str]) -> None:
    """Make `ae` accept every storage SOP class a modality proposes, also private and
    unknown ones (PRODUCT.md: the box refuses only what it cannot keep faithfully; issue 11),
    in the first transfer syntax of `preference` the modality offers for that context; a
    context offering none of them is refused (transfer syntaxes not supported). The
    negotiation that does it is installed by `configure` (`_prefer_syntaxes`)."""
    setattr(ae, _PREFERENCE_MARK, list(preference))


def _prefer_syntaxes() -> None:
    """pynetdicom's unrestricted storage service accepts every storage class for every
    acceptor of the process, and always in the first proposed syntax, which would let a
    modality's lossy proposal win over its lossless one. Its negotiation is therefore
    wrapped: an AE marked by `accept_any_storage` (the negotiation runs on the
    association's own thread) gets its preference; any other acceptor in the process
    negotiates as pynetdicom always does."""
    if getattr(pynetdicom.acse, _WRAPPED_MARK, False):
        return
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    # Both are imported into pynetdicom.acse from pynetdicom.presentation, not re-exported.
    unrestricted = pynetdicom.acse.negotiate_unrestricted  # type: ignore[attr-defined]
    restricted = pynetdicom.acse.negotiate_as_acceptor  # type: ignore[attr-defined]

    def negotiate(rq_contexts: ListCXType, ac_contexts: ListCXType,
                  roles: RoleType = None) -> CXNegotiationReturn:
        acceptor = getattr(threading.current_thread(), "ae", None)
        preference: list[str] | None = getattr(acceptor, _PREFERENCE_MARK, None)
        if preference is None:
            return restricted(rq_contexts, ac_contexts, roles)
        result: ListCXType
        result, reply_roles = unrestricted(rq_contexts, ac_contexts, roles)
        order = {ts: n for n, ts in enumerate(preference)}
        proposed = {cx.context_id: cx.transfer_syntax for cx in rq_contexts}
        for cx in result:
            offered = [ts for ts in proposed.get(cx.context_id) or [] if ts in order]
            if cx.result != 0x00:
                continue
            if offered:
                cx.transfer_syntax = [min(offered, key=order.__getitem__)]
            else:
                cx.result = 0x04  # transfer syntaxes not supported (PS3.8 9.3.3.2)
        return result, reply_roles

    patch(pynetdicom.acse, "negotiate_unrestricted", negotiate)
    patch(pynetdicom.acse, _WRAPPED_MARK, True)


class PeerReleasing(Exception):
    """The peer's A-RELEASE-RQ has arrived: nothing more may be sent on that association."""


# The state of an acceptor that received the peer's A-RELEASE-RQ and has not answered yet
# (PS3.8 9.2, AR-2). A peer that is releasing drops any request it gets (pynetdicom does).
RELEASE_REQUESTED_STATE = "Sta8"
_WAIT_SLICE_S = 0.02


def release_requested(assoc: Association) -> bool:
    """True once the peer's A-RELEASE-RQ has arrived on `assoc`, answered or not."""
    dul = assoc.dul
    if dul.state_machine.current_state == RELEASE_REQUESTED_STATE:
        return True
    with dul.to_user_queue.mutex:
        waiting = list(dul.to_user_queue.queue)
    return any(isinstance(p, A_RELEASE) and p.result is None for p in waiting)


def releasing_within(assoc: Association, seconds: float) -> bool:
    """True if the peer asks to release `assoc` (or it ends) within `seconds`. A modality
    that releases right after its request does so within milliseconds; a report sent in
    that window crosses its A-RELEASE-RQ and makes it abort (it cannot answer in Sta7)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if release_requested(assoc) or not assoc.is_established:
            return True
        time.sleep(_WAIT_SLICE_S)
    return release_requested(assoc) or not assoc.is_established


def request_unless_releasing(assoc: Association, request: DimsePrimitiveType, context_id: int,
                             timeout_s: float) -> DimsePrimitiveType | None:
    """Send the DIMSE `request` on `assoc`, an association the peer opened; return the
    peer's response, or None if none came within `timeout_s` (the association is then
    aborted, as pynetdicom does) or the association ended.

    Raises PeerReleasing, having sent nothing, once the peer asked to release; and raises
    it too if the peer's A-RELEASE-RQ arrives while the answer is awaited: the
    association's reactor then answers the release normally. pynetdicom's own send_n_*
    would wait out the time-out there and abort a peer that only released (issue 7).
    """
    assoc._reactor_checkpoint.clear()  # the reactor would take the response off the queue
    try:
        deadline = time.monotonic() + timeout_s
        while not assoc._is_paused:
            if not assoc.is_established or time.monotonic() > deadline:
                return None
            time.sleep(POLL_S)
        if release_requested(assoc):
            raise PeerReleasing
        assoc.dimse.send_msg(request, context_id)
        return _response(assoc, deadline)
    finally:
        assoc._reactor_checkpoint.set()


def _response(assoc: Association, deadline: float) -> DimsePrimitiveType | None:
    """The next DIMSE message on `assoc` until `deadline`; PeerReleasing as above."""
    while True:
        try:
            _, message = assoc.dimse.msg_queue.get(timeout=_WAIT_SLICE_S)
            return message  # None: the association ended (aborted, connection closed)
        except queue.Empty:
            pass
        if release_requested(assoc):
            raise PeerReleasing
        if not assoc.is_established:
            return None
        if time.monotonic() > deadline:
            assoc.abort()
            return None


class Stalled(Exception):
    """No bytes left for the peer for `stall_s` seconds: the link is dead or hung."""


def pace(assoc: Association, *, throttle: Callable[[int], object] | None = None,
         stall_s: float | None = None) -> None:
    """Attach a throttle (a callable taking a byte count, which blocks to keep the rate) and
    a stall limit to an outgoing association; both act on every P-DATA PDU it sends."""
    setattr(assoc.dul, _THROTTLE_MARK, throttle)
    setattr(assoc.dul, _STALL_MARK, stall_s)


def _bound_send_queue() -> None:
    send_pdu = DULServiceProvider.send_pdu

    def bounded_send_pdu(self: DULServiceProvider, primitive: _PduPrimitive) -> None:
        queue = self.to_provider_queue
        if isinstance(primitive, P_DATA):
            throttle: Callable[[int], object] | None = getattr(self, _THROTTLE_MARK, None)
            if throttle is not None:
                throttle(sum(len(data) for _, data in primitive.presentation_data_value_list))
            stall_s: float | None = getattr(self, _STALL_MARK, None)
            waited_since = time.monotonic()
            with queue.not_full:  # every get() notifies, whatever the maxsize
                while queue._qsize() >= MAX_QUEUED_PDUS and self.is_alive() and not (
                        self._kill_thread):
                    if stall_s is not None and time.monotonic() - waited_since > stall_s:
                        raise Stalled(f"no progress for {stall_s:.0f} s")
                    queue.not_full.wait(0.5)
        send_pdu(self, primitive)

    patch(DULServiceProvider, "send_pdu", bounded_send_pdu)


def encode_p_data_tf(pdu: P_DATA_TF) -> bytes:
    """P-DATA-TF PDUs (PS3.8 9.3.5) as pynetdicom encodes them, one PDU per PDV, with one
    copy of each value: pynetdicom adds its fields together (a 256 KiB value copied three
    times). pynetdicom sends one PDV per P-DATA; the box's C-STORE (`delivery/cstore.py`)
    hands over several at once, each of them at most the peer's maximum PDU, so each goes
    as its own PDU (a PDU holding them all could exceed that maximum)."""
    parts: list[bytes] = []
    for item in pdu.presentation_data_value_items:
        value = item.presentation_data_value or b""
        parts.append(_PDU_HEAD.pack(0x04, 0x00, len(value) + 5))
        parts.append(_PDV_HEAD.pack(len(value) + 1, item.presentation_context_id))
        parts.append(value)
    return b"".join(parts)


_PDV_HEAD, _PDU_HEAD = struct.Struct(">IB"), struct.Struct(">BBI")


def send_all(self: AssociationSocket, bytestream: bytes) -> None:
    """AssociationSocket.send without a copy of the rest after each partial send (it
    slices `bytestream` each time); same events."""
    view = memoryview(bytestream)
    sock = self.socket
    try:
        if sock is None:
            raise OSError("no socket")
        while view:
            view = view[sock.send(view):]
        evt.trigger(self.assoc, evt.EVT_DATA_SENT, {"data": bytestream})
    except Exception:
        self.event_queue.put("Evt17")  # transport connection closed


def _lean_data_path() -> None:
    patch(P_DATA_TF, "encode", encode_p_data_tf)
    patch(AssociationSocket, "send", send_all)


def _shorten_polling() -> None:
    real_sleep = time.sleep
    shim = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time)
                                    if not name.startswith("__")})
    shim.sleep = lambda seconds: real_sleep(min(seconds, POLL_S))
    patch(pynetdicom.association, "time", shim)
    init = DULServiceProvider.__init__

    def __init__(self: DULServiceProvider, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._run_loop_delay = POLL_S

    patch(DULServiceProvider, "__init__", __init__)
