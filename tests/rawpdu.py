"""DICOM Upper Layer PDUs as raw bytes (PS3.8 9.3), for tests that send what no real
peer would: wrong lengths, truncations, PDUs in the wrong state.

Valid PDUs are built by hand here so that a test (or the fuzzer) can change any
field; DIMSE messages are encoded by pynetdicom.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
IMPLEMENTATION_UID = b"1.2.826.0.1.3680043.8.498.77"

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07
# Replies longer than this are not read (the box never sends one).
REPLY_MAX = 1 << 20


def pdu(pdu_type: int, body: bytes, *, length: int | None = None) -> bytes:
    """A PDU: type, reserved, 4-byte big-endian length (the real one unless given), body."""
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _uid(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def presentation_context(context_id: int, abstract: str, syntaxes: Iterable[str]) -> bytes:
    subitems = item(0x30, _uid(abstract)) + b"".join(item(0x40, _uid(ts)) for ts in syntaxes)
    return item(0x20, bytes([context_id, 0, 0, 0]) + subitems)


def associate_rq(*, called: str = "FLUXBOX", calling: str = "RAWPDU",
                 contexts: Iterable[tuple[str, list[str]]] = (
                     (VERIFICATION, [IMPLICIT_LE]), (CT_IMAGE_STORAGE, [EXPLICIT_LE])),
                 max_pdu: int = 16384) -> bytes:
    """A valid A-ASSOCIATE-RQ; presentation context IDs 1, 3, 5, ... in `contexts` order."""
    user_info = item(0x50, item(0x51, struct.pack(">L", max_pdu))
                     + item(0x52, IMPLEMENTATION_UID))
    body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16)
            + bytes(32) + item(0x10, APPLICATION_CONTEXT)
            + b"".join(presentation_context(2 * n + 1, abstract, syntaxes)
                       for n, (abstract, syntaxes) in enumerate(contexts))
            + user_info)
    return pdu(ASSOCIATE_RQ, body)


def release_rq() -> bytes:
    return pdu(RELEASE_RQ, bytes(4))


def p_data(pdvs: Iterable[tuple[int, int, bytes]]) -> bytes:
    """A P-DATA-TF of (context ID, message control header, fragment) PDVs."""
    body = b"".join(struct.pack(">LBB", len(data) + 2, context_id, control) + data
                    for context_id, control, data in pdvs)
    return pdu(P_DATA_TF, body)


def _command_set(message) -> bytes:
    return b"".join(
        data[1:] for pdata in message.encode_msg(1, 0)
        for _, data in pdata.presentation_data_value_list if data[0] & 1)


def c_echo(context_id: int = 1, message_id: int = 1) -> bytes:
    """A C-ECHO-RQ in one P-DATA-TF."""
    primitive = C_ECHO()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = VERIFICATION
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)
    return p_data([(context_id, 0x03, _command_set(message))])


def store_command(sop_instance: str, *, message_id: int = 1,
                  sop_class: str = CT_IMAGE_STORAGE) -> bytes:
    """The command set of a C-STORE-RQ (Implicit VR Little Endian, as PS3.7 fixes it)."""
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Priority = 0
    primitive.DataSet = BytesIO(b"\x00")  # any: only the command set is kept
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return _command_set(message)


def encode_dataset(ds: Dataset) -> bytes:
    """`ds` in Explicit VR Little Endian, without file meta (as it travels)."""
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return out.getvalue()


def c_store(sop_instance: str, dataset: bytes, *, context_id: int = 3,
            message_id: int = 1, fragment: int = 16000,
            sop_class: str = CT_IMAGE_STORAGE) -> list[bytes]:
    """A C-STORE-RQ: one P-DATA-TF for the command, then the data set in fragments."""
    command = store_command(sop_instance, message_id=message_id, sop_class=sop_class)
    out = [p_data([(context_id, 0x03, command)])]
    pieces = [dataset[i:i + fragment] for i in range(0, len(dataset), fragment)] or [b""]
    for n, piece in enumerate(pieces):
        out.append(p_data([(context_id, 0x02 if n == len(pieces) - 1 else 0x00, piece)]))
    return out


@dataclass
class Reply:
    """One PDU from the box: its type and body (None for a length too large to read)."""

    pdu_type: int
    length: int
    body: bytes | None


def _recv_exact(sock: socket.socket, count: int, deadline: float) -> bytes | None:
    data = bytearray()
    while len(data) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(count - len(data), 65536))
        except (TimeoutError, OSError):
            return None
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def read_reply(sock: socket.socket, timeout_s: float) -> Reply | None:
    """The next PDU the box sends, or None when it closes or stays silent for `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    header = _recv_exact(sock, 6, deadline)
    if header is None:
        return None
    pdu_type, _, length = struct.unpack(">BBL", header)
    if length > REPLY_MAX:
        return Reply(pdu_type, length, None)
    body = _recv_exact(sock, length, deadline)
    return None if body is None else Reply(pdu_type, length, body)


def announced_max_pdu(accept: Reply) -> int:
    """The Maximum Length sub-item (0x51) of an A-ASSOCIATE-AC."""
    body = accept.body or b""
    at = 68  # fixed fields of the A-ASSOCIATE-AC
    while at + 4 <= len(body):
        item_type, _, length = struct.unpack(">BBH", body[at:at + 4])
        if item_type == 0x50:
            sub = at + 4
            while sub + 4 <= at + 4 + length:
                sub_type, _, sub_length = struct.unpack(">BBH", body[sub:sub + 4])
                if sub_type == 0x51:
                    return struct.unpack(">L", body[sub + 4:sub + 8])[0]
                sub += 4 + sub_length
        at += 4 + length
    raise ValueError("no Maximum Length sub-item")


def store_status(reply: Reply) -> int | None:
    """The Status (0000,0900) of a response in a P-DATA-TF reply, if it carries one."""
    body = reply.body or b""
    marker = b"\x00\x00\x00\x09\x02\x00\x00\x00"  # (0000,0900) US, implicit VR, length 2
    at = body.find(marker)
    return None if at < 0 else struct.unpack("<H", body[at + 8:at + 10])[0]


def connect(port: int, timeout_s: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send all of `data`; False when the box has closed or reset the connection."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False
