"""The DICOM Upper Layer (PS3.8) as the box runs it: bounded PDUs, and a DUL that
survives whatever a peer sends.

PRODUCT.md, Guarantees: the box announces a bounded maximum PDU and never allocates
for a PDU longer than negotiated, or for a length field it has not validated, before
or after association. pynetdicom's DUL reads a whole PDU into memory from its length
field, whatever that says, and sends a whole instance in one PDU to a peer announcing
"unlimited" (0). `install()` replaces that reading with one that checks the length
first, caps what pynetdicom sends, and caps the DIMSE message parts pynetdicom keeps in
memory.

It also closes the ways a peer could wedge an association (found by the fuzzer,
tests/fuzz): a DIMSE message that does not decode (unknown context, no Command Field)
raised out of the state machine, and the box's own response arriving after the DUL had
already aborted (Evt7 or Evt9 in Sta13) raised InvalidEventError, each killing the DUL
thread; both now end in A-ABORT. And a connection that ends before its A-ASSOCIATE-RQ
no longer holds an association slot for 30 s.

A refused PDU is answered as PS3.8 9.2 answers an invalid one (Evt19: A-ABORT, then the
connection closes when the peer goes or the ARTIM timer runs out); the bytes that follow
it are read and dropped in small pieces, never kept. Applied once by `appliance.dimse`;
`tests/unit/test_upper_layer.py` fails loudly when pynetdicom changes underneath.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, cast

from appliance import tcp
from appliance.logs import event

if TYPE_CHECKING:  # pynetdicom is imported by `install`, once the box configures it
    from pynetdicom.association import Association
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dimse_messages import DIMSEMessage
    from pynetdicom.dul import DULServiceProvider
    from pynetdicom.fsm import StateMachine
    from pynetdicom.pdu_primitives import P_DATA
    from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger("fluxbox.upper_layer")

# The maximum PDU length the box announces unless `box.max_pdu` says otherwise, chosen by
# measurement (README, "Memory"): ingest throughput is flat from 64 KiB up, and every
# association holds a few copies of one PDU at a time.
DEFAULT_MAX_PDU = 262_144
# `box.max_pdu` may be set within these (PS3.8 D.1 sets no bounds; below 4 KiB the
# per-PDU overhead dominates, above 4 MiB sixteen associations no longer fit 200 MB).
MIN_MAX_PDU = 4_096
MAX_MAX_PDU = 4_194_304
# The box never sends a P-DATA PDU longer than this, even to a peer announcing more or
# "unlimited" (0): sending less than the peer's maximum is always allowed (PS3.8 D.1).
SEND_MAX_PDU = DEFAULT_MAX_PDU
# Association PDUs have no negotiated limit. 128 presentation contexts each proposing
# every transfer syntax pynetdicom knows, plus user identity, stay under 200 KB; decoding one
# costs about 50 times its size, so the cap is what bounds that.
ASSOCIATION_PDU_MAX = 262_144
# DIMSE parts pynetdicom assembles in memory (C-STORE data sets go to a spool file):
# command sets are a few hundred bytes; the largest data set the box receives otherwise
# is a Storage Commitment list (about 130 bytes per instance).
COMMAND_SET_MAX = 65_536
MESSAGE_DATA_SET_MAX = 2_097_152  # about 16,000 commitment references
# Requests decoded and waiting for the association's thread (or, N-EVENT-REPORT, on a
# thread of their own). The box negotiates no asynchronous operations window, so a peer
# may have one request outstanding (PS3.7 D.3.3.3); one that goes on sending without
# reading the responses is aborted here, instead of queuing up to 2 MiB a request.
REQUESTS_WAITING_MAX = 4
# What an association PDU may hold, counted from its bytes before it is decoded: decoding
# costs about 400 bytes per item, so a 256 KiB request of tiny items would cost 13 MB.
# PS3.8 9.3.2.2: context IDs are odd numbers 1 to 255, so 128 contexts at most; every
# transfer syntax the box knows (59) fits in one context, and 8,192 items in all fit 128
# contexts proposing each of them (a lazy pynetdicom sender) with a role selection each.
PROPOSED_CONTEXTS_MAX = 128
SYNTAXES_PER_CONTEXT_MAX = 64
ASSOCIATION_ITEMS_MAX = 8_192
# Connections accepted whose A-ASSOCIATE-RQ is not answered yet (a modality's request is
# answered within milliseconds); beyond this, a new connection gets an A-ASSOCIATE-RJ
# (transient, local limit exceeded) before anything is read from it. Each such connection
# costs a thread and at most one decoded request (a few MB), whatever the peer sends.
WAITING_MAX = 8

ASSOCIATE_RQ, ASSOCIATE_AC = 0x01, 0x02
P_DATA_TF = 0x04
KNOWN_PDU_TYPES = frozenset(range(0x01, 0x08))
_HEADER = struct.Struct(">BBL")
_ITEM = struct.Struct(">BBH")
_DISCARD_BYTES = 65_536
_ASSOCIATE_FIXED_BYTES = 68  # protocol version, reserved, AE titles, reserved (PS3.8 9.3.2)
_CONTEXT_ITEMS = frozenset({0x20, 0x21})  # presentation context, in the RQ and the AC
_TRANSFER_SYNTAX = 0x40
_USER_INFORMATION = 0x50
# PS3.8 9.3.4: A-ASSOCIATE-RJ, rejected-transient, by the service provider (presentation
# related function), local-limit-exceeded: the modality may try again.
LIMIT_REJECT = bytes([0x03, 0, 0, 0, 0, 4, 0, 0x02, 0x03, 0x02])


# Marks the box leaves on pynetdicom's objects (read back with getattr, default unset).
_INSTALLED_MARK = "fluxbox_upper_layer"  # on DULServiceProvider: `install` has run
_REQUEST_SEEN_MARK = "fluxbox_request_seen"  # on a DUL: its A-ASSOCIATE-RQ reached the user
_ANSWERED_MARK = "fluxbox_answered"  # on a DUL: its waiting slot is freed
_REFUSED_MARK = "fluxbox_refused"  # on a DUL: a PDU was refused, later bytes are dropped
_WAITING_MARK = "fluxbox_waiting"  # on a server: its WaitingConnections
_SERVING_MARK = "fluxbox_serving"  # on an association: N-EVENT-REPORT threads not finished


def patch(owner: object, name: str, replacement: object) -> None:
    """Set pynetdicom's `owner.name` (a method, a global, a mark), which mypy rightly refuses;
    tests/unit/test_upper_layer.py and test_dimse.py check each one is still there."""
    setattr(owner, name, replacement)


class PduRefused(Exception):
    """A PDU or DIMSE message longer than the box accepts."""


def local_max_pdu(assoc: Association) -> int:
    """The maximum P-DATA length this side announced on `assoc` (0: unlimited)."""
    own = assoc.acceptor if assoc.is_acceptor else assoc.requestor
    return int(own.maximum_length or 0)


def pdu_limit(pdu_type: int, local_max: int) -> int:
    """The longest variable field the box reads for a PDU of `pdu_type`.

    P-DATA-TF: what this side announced (PS3.8 D.1: the limit covers the PDV list, the
    PDU's whole variable field); a side announcing 0 still reads at most MAX_MAX_PDU.
    Every other PDU: ASSOCIATION_PDU_MAX, whatever the state."""
    if pdu_type == P_DATA_TF:
        return local_max if 0 < local_max <= MAX_MAX_PDU else MAX_MAX_PDU
    return ASSOCIATION_PDU_MAX


def send_pdu_size(peer_max: int) -> int:
    """The P-DATA length the box sends to a peer that announced `peer_max` (0: unlimited)."""
    return SEND_MAX_PDU if peer_max == 0 else min(peer_max, SEND_MAX_PDU)


def _sub_items(body: bytes | bytearray, start: int, end: int) -> list[int]:
    """The item types found from `start` to `end` (a truncated item ends the walk: the
    decoder refuses it)."""
    types: list[int] = []
    while start + _ITEM.size <= end:
        item_type, _, length = _ITEM.unpack_from(body, start)
        types.append(item_type)
        start += _ITEM.size + length
    return types


def association_problem(body: bytes | bytearray) -> str | None:
    """Why an A-ASSOCIATE-RQ or -AC variable field holds more than the box decodes (too
    many presentation contexts, transfer syntaxes or items), or None. Reads only item
    headers: no object is made for the request."""
    items = 0
    contexts = 0
    at = _ASSOCIATE_FIXED_BYTES
    while at + _ITEM.size <= len(body):
        item_type, _, length = _ITEM.unpack_from(body, at)
        end = min(at + _ITEM.size + length, len(body))
        sub: list[int] = []
        if item_type in _CONTEXT_ITEMS:
            contexts += 1
            sub = _sub_items(body, at + _ITEM.size + 4, end)
            if sub.count(_TRANSFER_SYNTAX) > SYNTAXES_PER_CONTEXT_MAX:
                return f"over {SYNTAXES_PER_CONTEXT_MAX} transfer syntaxes in a context"
        elif item_type == _USER_INFORMATION:
            sub = _sub_items(body, at + _ITEM.size, end)
        items += 1 + len(sub)
        at += _ITEM.size + length
    if contexts > PROPOSED_CONTEXTS_MAX:
        return f"over {PROPOSED_CONTEXTS_MAX} presentation contexts"
    if items > ASSOCIATION_ITEMS_MAX:
        return f"over {ASSOCIATION_ITEMS_MAX} items"
    return None


def check_message(command_bytes: int, data_set_bytes: int) -> None:
    """Raise PduRefused when a DIMSE message held in memory would pass its cap."""
    if command_bytes > COMMAND_SET_MAX:
        raise PduRefused(f"command set over {COMMAND_SET_MAX} bytes")
    if data_set_bytes > MESSAGE_DATA_SET_MAX:
        raise PduRefused(f"data set over {MESSAGE_DATA_SET_MAX} bytes")


# --------------------------------------------------------------------------- pynetdicom


def _release_waiting_acceptor(dul: DULServiceProvider) -> None:
    """The association ended before an A-ASSOCIATE-RQ arrived (anything else came first,
    the connection closed, the ARTIM timer ran out): wake the association thread waiting
    for the request, as its own time-out would 30 s later. Until then it counts against
    `maximum_associations`: sixteen such connections would lock every modality out."""
    if dul.assoc.is_acceptor and not getattr(dul, _REQUEST_SEEN_MARK, False):
        setattr(dul, _REQUEST_SEEN_MARK, True)  # once
        # receive_pdu() returns it as "timed out" (its queue is typed without None)
        cast("queue.Queue[object]", dul.to_user_queue).put(None)


class WaitingConnections:
    """The connections a server accepted whose A-ASSOCIATE-RQ is not answered yet.

    `admit` runs on the server's thread for each new connection (socketserver's
    `verify_request`): False, after an A-ASSOCIATE-RJ, when `limit` are waiting already;
    the server then closes the connection. `answered` frees the slot once the request is
    answered or the association ends; a connection closed meanwhile frees it too."""

    def __init__(self, limit: int = WAITING_MAX) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._waiting: set[socket.socket] = set()
        self._refusing = False  # logged once per run of refusals, not per connection

    def admit(self, sock: socket.socket, _address: object = None) -> bool:
        with self._lock:
            self._waiting = {s for s in self._waiting if s.fileno() != -1}
            admitted = len(self._waiting) < self.limit
            if admitted:
                self._waiting.add(sock)
            first_refusal, self._refusing = not admitted and not self._refusing, not admitted
        if admitted:
            return True
        if first_refusal:
            event(log, "connections refused", logging.WARNING,
                  reason="too many waiting to associate", limit=self.limit)
        with contextlib.suppress(OSError, ValueError):
            sock.settimeout(1.0)  # 10 bytes on a new connection: never blocks in practice
            sock.sendall(LIMIT_REJECT)
        return False

    def answered(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._waiting.discard(sock)


def limit_waiting(server: ThreadedAssociationServer,
                  limit: int = WAITING_MAX) -> WaitingConnections:
    """Make pynetdicom's association `server` admit at most `limit` connections waiting to
    associate (pynetdicom starts a thread for every connection and counts associations only
    once their request is decoded)."""
    waiting = WaitingConnections(limit)
    setattr(server, _WAITING_MARK, waiting)
    patch(server, "verify_request", waiting.admit)
    return waiting


def _request_answered(dul: DULServiceProvider) -> None:
    """The association left the wait for its request (accepted, rejected, aborted, closed)."""
    if getattr(dul, _ANSWERED_MARK, False):
        return
    setattr(dul, _ANSWERED_MARK, True)  # once: this runs for every event after
    waiting: WaitingConnections | None = getattr(
        getattr(dul.assoc, "_server", None), _WAITING_MARK, None)
    if waiting is not None:
        waiting.answered(getattr(dul.socket, "socket", None))


def _closed(dul: DULServiceProvider) -> None:
    """Evt17: the connection closed."""
    dul.event_queue.put("Evt17")


def _refuse(dul: DULServiceProvider, reason: str, **fields: object) -> None:
    """Evt19 (invalid PDU): the state machine sends A-ABORT; later bytes are dropped."""
    event(log, "pdu refused", logging.WARNING, reason=reason, **fields)
    setattr(dul, _REFUSED_MARK, True)
    dul.event_queue.put("Evt19")


def _discard(dul: DULServiceProvider) -> None:
    """After a refusal: read what is there (never more than _DISCARD_BYTES) and drop it."""
    sock: socket.socket | None = getattr(dul.socket, "socket", None)
    try:
        data = sock.recv(_DISCARD_BYTES) if sock is not None else b""
    except OSError:
        data = b""
    if not data:
        _closed(dul)


def read_pdu(dul: DULServiceProvider) -> None:
    """pynetdicom's `DULServiceProvider._read_pdu_data`, with the length checked first.

    Same events as pynetdicom's: Evt17 when the connection closes mid-PDU, Evt19 for an
    unknown type, a PDU that does not decode or one longer than `pdu_limit` allows;
    otherwise the decoded PDU's event, with the PDU on `dul._recv_pdu`."""
    if getattr(dul, _REFUSED_MARK, False):
        _discard(dul)
        return
    header = tcp.recv_exact(dul.socket, _HEADER.size)
    if len(header) != _HEADER.size:
        _closed(dul)
        return
    pdu_type, _, length = _HEADER.unpack(header)
    if pdu_type not in KNOWN_PDU_TYPES:
        _refuse(dul, "unknown PDU type", pdu_type=f"0x{pdu_type:02X}")
        return
    limit = pdu_limit(pdu_type, local_max_pdu(dul.assoc))
    if length > limit:
        _refuse(dul, "PDU longer than allowed", pdu_type=f"0x{pdu_type:02X}",
                length=length, limit=limit)
        return
    pdu_bytes = tcp.recv_exact(dul.socket, length, prefix=header)
    if len(pdu_bytes) != _HEADER.size + length:
        _closed(dul)
        return
    problem = (association_problem(bytes(pdu_bytes[_HEADER.size:]))
               if pdu_type in (ASSOCIATE_RQ, ASSOCIATE_AC) else None)
    if problem:
        _refuse(dul, problem)
        return
    try:
        pdu, pdu_event = dul._decode_pdu(pdu_bytes)
    except Exception:  # any malformed PDU: pynetdicom's decoders raise many types
        _refuse(dul, "PDU does not decode", pdu_type=f"0x{pdu_type:02X}")
        return
    dul.event_queue.put(pdu_event)
    dul._recv_pdu.put(pdu)


def _held_bytes(message: DIMSEMessage | None, primitive: P_DATA) -> tuple[int, int]:
    """Command and in-memory data set bytes `message` holds once `primitive` is added
    (a C-STORE data set going to its spool file counts nothing)."""
    command = data_set = 0
    if message is not None:
        command = message.encoded_command_set.tell()
        in_memory = cast(BytesIO, message.data_set)  # a received message's always is
        data_set = in_memory.tell() if message._data_set_file is None else 0
    for _, data in primitive.presentation_data_value_list:
        if data and data[0] & 1:
            command += len(data) - 1
        elif message is None or message._data_set_file is None:
            data_set += max(len(data) - 1, 0)
    return command, data_set


# Where C-STORE data sets are spooled, and the free space they must leave on its file
# system: a data set that would eat into it (an endless C-STORE, a disk filling up) is
# aborted and its file removed. Set by `dimse.guard_disk`.
_spool_floor: tuple[str, int] | None = None


def guard_spool(directory: Path, keep_free_bytes: int) -> None:
    global _spool_floor
    _spool_floor = (str(directory), keep_free_bytes)


def _spool_full() -> bool:
    if _spool_floor is None:
        return False
    directory, keep_free = _spool_floor
    try:
        fs = os.statvfs(directory)
    except OSError:
        return False
    return fs.f_bavail * fs.f_frsize < keep_free


def drop_message(message: DIMSEMessage | None) -> None:
    """Forget a half-received message, and the file of its data set if it has one."""
    spool = getattr(message, "_data_set_file", None)
    if spool is not None:
        spool.close()
        with contextlib.suppress(OSError):
            Path(spool.name).unlink(missing_ok=True)


def requests_waiting(provider: DIMSEServiceProvider) -> int:
    """Requests `provider` (a DIMSEServiceProvider) decoded that are not served yet: those
    queued for the association's thread, and N-EVENT-REPORTs on threads of their own.
    Responses (to the box's own requests) are not counted."""
    with provider.msg_queue.mutex:
        queued = [p for _, p in provider.msg_queue.queue
                  if p is not None and getattr(p, "Status", None) is None]
    serving: int = getattr(provider.assoc, _SERVING_MARK, 0)
    return len(queued) + serving


def _guard_messages(provider_class: type[DIMSEServiceProvider]) -> None:
    receive_primitive = provider_class.receive_primitive

    def guarded_receive_primitive(self: DIMSEServiceProvider, primitive: P_DATA) -> None:
        try:
            check_message(*_held_bytes(self.message, primitive))
        except PduRefused as exc:
            drop_message(self.message)
            self.message = None
            _refuse(self.dul, str(exc))
            return
        try:
            receive_primitive(self, primitive)
        except Exception:  # pynetdicom's decoders raise many types for malformed messages
            drop_message(self.message)
            self.message = None
            _refuse(self.dul, "DIMSE message does not decode")
            return
        if getattr(self.message, "_data_set_file", None) is not None and _spool_full():
            drop_message(self.message)
            self.message = None
            _refuse(self.dul, "data set reached the disk reserve while it arrived")
            return
        if requests_waiting(self) > REQUESTS_WAITING_MAX:
            _refuse(self.dul, "requests sent without reading responses",
                    limit=REQUESTS_WAITING_MAX)

    patch(provider_class, "receive_primitive", guarded_receive_primitive)


# Events that come from this side's own service user (PS3.8 9.2.1): a peer cannot send
# them, but its abort can overtake one already queued.
LOCAL_EVENTS = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})


def _guard_state_machine(machine_class: type[StateMachine],
                         transitions: dict[tuple[str, str], str]) -> None:
    do_action = machine_class.do_action

    def guarded_do_action(self: StateMachine, event: str) -> None:
        state = self.current_state
        if state == "Sta13" and event in LOCAL_EVENTS and (event, state) not in transitions:
            # Aborted already: drop the primitive that raised this event, so the
            # reactor neither raises InvalidEventError nor sees it again.
            with contextlib.suppress(queue.Empty):
                self.dul.to_provider_queue.get(False)
            return
        do_action(self, event)
        if self.current_state in ("Sta1", "Sta6", "Sta13"):
            _request_answered(self.dul)
        if event == "Evt6" and self.current_state == "Sta3":
            setattr(self.dul, _REQUEST_SEEN_MARK, True)  # the association thread has it
        elif self.current_state in ("Sta1", "Sta13"):  # any A-ABORT is on the wire by now
            _release_waiting_acceptor(self.dul)

    patch(machine_class, "do_action", guarded_do_action)


_SERVING_LOCK = threading.Lock()
Target = Callable[..., object]  # a thread's target, as pynetdicom's `make_target` takes one


def _count_serving(make_target: Callable[[Target], Target]) -> Callable[[Target], Target]:
    """pynetdicom's `make_target`, as the DIMSE provider uses it for an N-EVENT-REPORT
    request (a thread each, not queued): the association counts the threads not finished,
    from the moment one is made, so `requests_waiting` sees them."""

    def counting(target_fn: Target) -> Target:
        run = make_target(target_fn)
        assoc = getattr(target_fn, "__self__", None)
        if assoc is None:
            return run
        with _SERVING_LOCK:
            setattr(assoc, _SERVING_MARK, getattr(assoc, _SERVING_MARK, 0) + 1)

        def counted(*args: object, **kwargs: object) -> None:
            try:
                run(*args, **kwargs)
            finally:
                with _SERVING_LOCK:
                    setattr(assoc, _SERVING_MARK, getattr(assoc, _SERVING_MARK) - 1)

        return counted

    return counting


def install() -> None:
    """Apply the limits to pynetdicom, once per process."""
    import pynetdicom.dimse
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dul import DULServiceProvider
    from pynetdicom.fsm import TRANSITION_TABLE, StateMachine

    if getattr(DULServiceProvider, _INSTALLED_MARK, False):
        return
    patch(DULServiceProvider, "_read_pdu_data", read_pdu)
    patch(DIMSEServiceProvider, "maximum_pdu_size", property(
        lambda self: send_pdu_size(int(
            (self.assoc.acceptor if self.assoc.is_requestor else self.assoc.requestor)
            .maximum_length or 0))))
    _guard_messages(DIMSEServiceProvider)
    # imported into pynetdicom.dimse from pynetdicom.utils, not re-exported
    make_target = pynetdicom.dimse.make_target  # type: ignore[attr-defined]
    patch(pynetdicom.dimse, "make_target", _count_serving(make_target))
    _guard_state_machine(StateMachine, TRANSITION_TABLE)
    patch(DULServiceProvider, _INSTALLED_MARK, True)
