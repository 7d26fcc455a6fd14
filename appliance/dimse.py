"""pynetdicom settings, set in one place (the status codes are in `appliance.statuses`).

`configure()`, called once by the composition root (`app.Box`), applies them: chunked
receive and send (large instances never sit in memory), the PDU limits of
`appliance.upper_layer`, identifier logging off (no patient data in logs), and
TCP_NODELAY on every association socket (pynetdicom never sets it, and Nagle's algorithm
costs small instances a round trip each), and P-DATA-TF PDUs encoded and sent without
pynetdicom's copies of each value. Every pynetdicom internal patched here or in
`upper_layer` is checked by a test that fails loudly when pynetdicom changes it
(tests/unit/test_upper_layer.py, tests/unit/test_dimse.py).
"""

from __future__ import annotations

import functools
import queue
import socket
import struct
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

import pynetdicom.acse
import pynetdicom.association
import pynetdicom.dimse_messages
from pydicom import config as pydicom_config
from pynetdicom import AE, _config, evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_RELEASE, P_DATA
from pynetdicom.transport import AssociationSocket

from appliance import upper_layer

# Outgoing P-DATA PDUs queued per association. pynetdicom's queue is unbounded: a
# sender reading a 1 GB file faster than the link drains it would hold it all in memory.
MAX_QUEUED_PDUS = 32
# pynetdicom's association threads poll with fixed sleeps (1 ms per turn), which costs a
# round of latency per instance: measured 16 % of ingest and 30 % of delivery time. While an
# association is open they poll at most this long; with none open nothing polls at all.
POLL_S = 0.0002

def _nodelay(sock: socket.socket | None) -> None:
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
    if getattr(AssociationSocket, "_fluxbox_nodelay", False):
        return
    _bound_send_queue()
    _shorten_polling()
    _lean_data_path()
    create_socket, init = AssociationSocket._create_socket, AssociationSocket.__init__

    def _create_socket(self, address):  # outgoing associations
        sock = create_socket(self, address)
        _nodelay(sock)
        return sock

    def __init__(self, *args, **kwargs):  # accepted associations arrive with a socket
        init(self, *args, **kwargs)
        _nodelay(getattr(self, "socket", None))

    AssociationSocket._create_socket = _create_socket
    AssociationSocket.__init__ = __init__
    AssociationSocket._fluxbox_nodelay = True


def calling_ae(ae_title: str, *, connect_timeout_s: float, dimse_timeout_s: float) -> AE:
    """An AE for an association the box opens (to a PACS, a RIS, a worklist server, a
    modality): the connection and association request wait `connect_timeout_s`, every
    answer `dimse_timeout_s`. The caller adds its presentation contexts."""
    ae = AE(ae_title=ae_title)
    ae.connection_timeout = ae.acse_timeout = connect_timeout_s
    ae.dimse_timeout = ae.network_timeout = dimse_timeout_s
    return ae


def spool_to(directory: Path, keep_free_bytes: int = 0) -> None:
    """Where pynetdicom spools a C-STORE data set while it arrives: the box's spool
    directory on the data partition, where start-up scrubs what a crash left behind (and
    nothing else of the process's temporary files goes there). A data set that would
    leave less than `keep_free_bytes` free there is aborted as it arrives."""
    pynetdicom.dimse_messages.NamedTemporaryFile = functools.partial(
        tempfile.NamedTemporaryFile, dir=str(directory))
    upper_layer.guard_spool(directory, keep_free_bytes)


def accept_any_storage(ae, preference: list[str]) -> None:
    """Make `ae` accept every storage SOP class a modality proposes, also private and
    unknown ones (PRODUCT.md: the box refuses only what it cannot keep faithfully; issue 11),
    in the first transfer syntax of `preference` the modality offers for that context; a
    context offering none of them is refused (transfer syntaxes not supported). The
    negotiation that does it is installed by `configure` (`_prefer_syntaxes`)."""
    ae._fluxbox_preference = list(preference)


def _prefer_syntaxes() -> None:
    """pynetdicom's unrestricted storage service accepts every storage class for every
    acceptor of the process, and always in the first proposed syntax, which would let a
    modality's lossy proposal win over its lossless one. Its negotiation is therefore
    wrapped: an AE marked by `accept_any_storage` (the negotiation runs on the
    association's own thread) gets its preference; any other acceptor in the process
    negotiates as pynetdicom always does."""
    if getattr(pynetdicom.acse, "_fluxbox_wrapped", False):
        return
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    unrestricted = pynetdicom.acse.negotiate_unrestricted
    restricted = pynetdicom.acse.negotiate_as_acceptor

    def negotiate(rq_contexts, ac_contexts, roles=None):
        acceptor = getattr(threading.current_thread(), "ae", None)
        preference = getattr(acceptor, "_fluxbox_preference", None)
        if preference is None:
            return restricted(rq_contexts, ac_contexts, roles)
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

    pynetdicom.acse.negotiate_unrestricted = negotiate
    pynetdicom.acse._fluxbox_wrapped = True


class PeerReleasing(Exception):
    """The peer's A-RELEASE-RQ has arrived: nothing more may be sent on that association."""


# The state of an acceptor that received the peer's A-RELEASE-RQ and has not answered yet
# (PS3.8 9.2, AR-2). A peer that is releasing drops any request it gets (pynetdicom does).
RELEASE_REQUESTED_STATE = "Sta8"
_WAIT_SLICE_S = 0.02


def release_requested(assoc) -> bool:
    """True once the peer's A-RELEASE-RQ has arrived on `assoc`, answered or not."""
    dul = assoc.dul
    if dul.state_machine.current_state == RELEASE_REQUESTED_STATE:
        return True
    with dul.to_user_queue.mutex:
        waiting = list(dul.to_user_queue.queue)
    return any(isinstance(p, A_RELEASE) and p.result is None for p in waiting)


def releasing_within(assoc, seconds: float) -> bool:
    """True if the peer asks to release `assoc` (or it ends) within `seconds`. A modality
    that releases right after its request does so within milliseconds; a report sent in
    that window crosses its A-RELEASE-RQ and makes it abort (it cannot answer in Sta7)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if release_requested(assoc) or not assoc.is_established:
            return True
        time.sleep(_WAIT_SLICE_S)
    return release_requested(assoc) or not assoc.is_established


def request_unless_releasing(assoc, request: Any, context_id: int, timeout_s: float) -> Any:
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


def _response(assoc, deadline: float) -> Any:
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


def pace(assoc, *, throttle=None, stall_s: float | None = None) -> None:
    """Attach a throttle (a callable taking a byte count, which blocks to keep the rate) and
    a stall limit to an outgoing association; both act on every P-DATA PDU it sends."""
    assoc.dul.fluxbox_throttle = throttle
    assoc.dul.fluxbox_stall_s = stall_s


def _bound_send_queue() -> None:
    send_pdu = DULServiceProvider.send_pdu

    def bounded_send_pdu(self, primitive):
        queue = self.to_provider_queue
        if isinstance(primitive, P_DATA):
            throttle = getattr(self, "fluxbox_throttle", None)
            if throttle is not None:
                throttle(sum(len(data) for _, data in primitive.presentation_data_value_list))
            stall_s = getattr(self, "fluxbox_stall_s", None)
            waited_since = time.monotonic()
            with queue.not_full:  # every get() notifies, whatever the maxsize
                while queue._qsize() >= MAX_QUEUED_PDUS and self.is_alive() and not (
                        self._kill_thread):
                    if stall_s is not None and time.monotonic() - waited_since > stall_s:
                        raise Stalled(f"no progress for {stall_s:.0f} s")
                    queue.not_full.wait(0.5)
        send_pdu(self, primitive)

    DULServiceProvider.send_pdu = bounded_send_pdu


def encode_p_data_tf(pdu) -> bytes:
    """P-DATA-TF PDUs (PS3.8 9.3.5) as pynetdicom encodes them, one PDU per PDV, with one
    copy of each value: pynetdicom adds its fields together (a 256 KiB value copied three
    times). pynetdicom sends one PDV per P-DATA; the box's C-STORE (`delivery/cstore.py`)
    hands over several at once, each of them at most the peer's maximum PDU, so each goes
    as its own PDU (a PDU holding them all could exceed that maximum)."""
    parts = []
    for item in pdu.presentation_data_value_items:
        value = item.presentation_data_value
        parts.append(_PDU_HEAD.pack(0x04, 0x00, len(value) + 5))
        parts.append(_PDV_HEAD.pack(len(value) + 1, item.presentation_context_id))
        parts.append(value)
    return b"".join(parts)


_PDV_HEAD, _PDU_HEAD = struct.Struct(">IB"), struct.Struct(">BBI")


def send_all(self, bytestream: bytes) -> None:
    """AssociationSocket.send without a copy of the rest after each partial send (it
    slices `bytestream` each time); same events."""
    view = memoryview(bytestream)
    try:
        while view:
            view = view[self.socket.send(view):]
        evt.trigger(self.assoc, evt.EVT_DATA_SENT, {"data": bytestream})
    except Exception:
        self.event_queue.put("Evt17")  # transport connection closed


def _lean_data_path() -> None:
    P_DATA_TF.encode = encode_p_data_tf
    AssociationSocket.send = send_all


def _shorten_polling() -> None:
    real_sleep = time.sleep
    shim = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time)
                                    if not name.startswith("__")})
    shim.sleep = lambda seconds: real_sleep(min(seconds, POLL_S))
    pynetdicom.association.time = shim
    init = DULServiceProvider.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._run_loop_delay = POLL_S

    DULServiceProvider.__init__ = __init__
