"""One C-STORE-RQ on an established pynetdicom association, its data set streamed.

pynetdicom's `send_c_store` sends a data set from a file or a loaded `Dataset`; the box
has neither (a stored instance is decrypted chunk by chunk, never written in clear). Here
the command set is encoded as pynetdicom encodes it, the data set comes from an iterator
of byte pieces, and both are cut into P-DATA PDUs no longer than the peer's maximum PDU
(`upper_layer.send_pdu_size`) and handed to `DULServiceProvider.send_pdu` one by one, so
the bounded queue, the throttle and the stall limit of `appliance.dimse` act on each.
Association, negotiation, the response and its time-out stay pynetdicom's.

While this thread owns the association's DIMSE queue, its reactor must be parked:
pynetdicom's own pause (`_is_paused`) can read a stale True right after a resume, and the
reactor then takes the C-STORE-RSP off the queue (a send waits out its time-out; found
with small instances sent back to back). `Checkpoint` replaces the association's
checkpoint and says when the reactor truly waits at it. After a response it stays parked
for the next C-STORE (no pause and resume per instance); pynetdicom's own requests and
release resume it, and so does a send that gets no response (the reactor then sees the
abort or the closed connection).

The first fragment is taken from the source before anything is sent, so a source that
fails at once (an instance the read-ahead decrypted whole) fails with the association
intact; one that fails later aborts the association, since a data set cannot be taken
back half sent.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom.pdu_primitives import P_DATA

if TYPE_CHECKING:
    from pynetdicom.association import Association

# PS3.8 E.2: message control header of a PDV (bit 0: command, bit 1: last fragment).
DATA, DATA_LAST, COMMAND, COMMAND_LAST = 0x00, 0x02, 0x01, 0x03
PDV_OVERHEAD = 6  # item length (4), presentation context ID (1), control header (1)
PRIORITY = 2  # pynetdicom's default for C-STORE (low)
BATCH_BYTES = 256 * 1024  # data set fragments handed to the DUL thread at once
_PAUSE_POLL_S = 0.01
_HEADER, _US, _UL = struct.Struct("<HHL"), struct.Struct("<H"), struct.Struct("<L")


def send(assoc: Association, context_id: int, sop_class_uid: str, sop_instance_uid: str,
         data_set: Iterable[bytes | memoryview], *, message_id: int,
         meanwhile: Callable[[], None] = lambda: None) -> Dataset:
    """Send a C-STORE-RQ whose data set is the concatenation of `data_set` (encoded in the
    context's transfer syntax) and return the response's status, or an empty Dataset when
    none came (DIMSE time-out, abort, connection lost), as `send_c_store` does.
    `meanwhile` runs once everything is handed over, before the response is awaited.
    Raises what the source raises, and dimse.Stalled; the association is then aborted."""
    size = assoc.dimse.maximum_pdu_size - PDV_OVERHEAD
    fragments = _fragments(data_set, size)
    first = next(fragments, None)
    if first is None:
        raise ValueError("empty data set")
    command = _command_set(message_id, sop_class_uid, sop_instance_uid)
    _pause_reactor(assoc)
    try:
        _send_command(assoc, context_id, command, size)
        _send_data(assoc, context_id, first, fragments)
    except BaseException:
        assoc._reactor_checkpoint.set()
        hard_abort(assoc)
        raise
    meanwhile()
    _, response = assoc.dimse.get_msg(block=True)
    if response is None:
        assoc._reactor_checkpoint.set()  # the reactor sees the abort or closes the association
        assoc._handle_no_response()
        return Dataset()
    return assoc._check_received_status(response)  # the reactor stays parked: see above


def hard_abort(assoc: Association) -> None:
    """Abort, first shutting the socket so a send blocked on a dead link returns."""
    with contextlib.suppress(Exception):
        assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    with contextlib.suppress(Exception):
        assoc.abort()


def _command_set(message_id: int, sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """The C-STORE-RQ command set, Implicit VR Little Endian (PS3.7 6.3.1, 9.3.1.1), as
    pynetdicom encodes it (tests/unit/test_wire.py compares them)."""
    body = b"".join((
        _element(0x0002, _uid(sop_class_uid)),  # Affected SOP Class UID
        _element(0x0100, _US.pack(0x0001)),  # Command Field: C-STORE-RQ
        _element(0x0110, _US.pack(message_id)),  # Message ID
        _element(0x0700, _US.pack(PRIORITY)),  # Priority
        _element(0x0800, _US.pack(0x0001)),  # Command Data Set Type: a data set follows
        _element(0x1000, _uid(sop_instance_uid)),  # Affected SOP Instance UID
    ))
    return _element(0x0000, _UL.pack(len(body))) + body  # Command Group Length


def _element(element: int, value: bytes) -> bytes:
    return _HEADER.pack(0x0000, element, len(value)) + value


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _fragments(pieces: Iterable[bytes | memoryview], size: int) -> Iterator[bytearray]:
    """`pieces` regrouped into fragments of `size` bytes (the last one shorter), each
    behind one spare byte for its control header."""
    fragment = bytearray(1)
    for piece in pieces:
        view = memoryview(piece)
        while view:
            room = size + 1 - len(fragment)
            fragment += view[:room]
            view = view[room:]
            if len(fragment) == size + 1:
                yield fragment
                fragment = bytearray(1)
    if len(fragment) > 1:
        yield fragment


def _send_command(assoc: Association, context_id: int, command: bytes, size: int) -> None:
    for start in range(0, len(command), size):
        last = start + size >= len(command)
        piece = bytearray((COMMAND_LAST if last else COMMAND,)) + command[start:start + size]
        _send_pdvs(assoc, context_id, [piece])


def _send_data(assoc: Association, context_id: int, first: bytearray,
               rest: Iterator[bytearray]) -> None:
    """Each fragment once the next is known (the last one is flagged), handed over in
    groups of about BATCH_BYTES (one PDU each on the wire: `dimse.encode_p_data_tf`), so
    pynetdicom's per-PDU work is paid once per group to a PACS announcing small PDUs;
    stops early when the association ends (its response wait then returns at once)."""
    batch: list[bytearray] = []
    size = 0
    current = first
    for following in rest:
        current[0] = DATA
        batch.append(current)
        size += len(current)
        if size >= BATCH_BYTES:
            if _gone(assoc):
                return
            _send_pdvs(assoc, context_id, batch)
            batch, size = [], 0
        current = following
    current[0] = DATA_LAST
    batch.append(current)
    if not _gone(assoc):
        _send_pdvs(assoc, context_id, batch)


def _send_pdvs(assoc: Association, context_id: int, pdvs: list[bytearray]) -> None:
    primitive = P_DATA()
    for pdv in pdvs:
        primitive.presentation_data_value_list.append((context_id, pdv))  # type: ignore[arg-type]
    assoc.dul.send_pdu(primitive)


def ended(assoc: Association) -> bool:
    """Whether the association ended (A-ABORT, connection lost), also while its reactor is
    parked and has not noticed yet."""
    return not assoc.is_established or _gone(assoc)


def _gone(assoc: Association) -> bool:
    """The association ended (A-ABORT, connection lost): nothing more goes out on it."""
    dul = assoc.dul
    return bool(dul._kill_thread or not dul.is_alive() or assoc.is_aborted)


class Checkpoint:
    """The association reactor's checkpoint (used as pynetdicom uses its Event: `set`,
    `clear`, `is_set`, `wait`), which also knows whether the reactor is parked at it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._set = True
        self._parked = False

    def set(self) -> None:
        with self._cond:
            self._set = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._set = False

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """The reactor's wait: it leaves only while set, and is parked until then."""
        with self._cond:
            self._parked = True
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._set, timeout)
            finally:
                self._parked = False

    def pause(self, gone: Callable[[], bool]) -> None:
        """Clear, then return once the reactor waits here (or `gone()`: it has ended)."""
        with self._cond:
            self._set = False
            while not self._parked and not gone():
                self._cond.wait(_PAUSE_POLL_S)


def _pause_reactor(assoc: Association) -> None:
    """Keep the association's reactor off the DIMSE queue while this thread owns it."""
    checkpoint: object = assoc._reactor_checkpoint
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint()  # the reactor runs: the old Event is set, never cleared
        setattr(assoc, "_reactor_checkpoint", checkpoint)  # noqa: B010 (typed as an Event)
    checkpoint.pause(lambda: assoc._kill or not assoc.is_alive())
