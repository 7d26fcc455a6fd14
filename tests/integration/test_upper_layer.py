"""The box's DICOM upper layer (issue 11, part 2; PRODUCT.md, Guarantees: memory is
bounded whatever a peer sends): a PDU longer than allowed is refused with A-ABORT and
costs nothing; what the box sends honours the PACS's maximum PDU and stays bounded
when the PACS announces none; connections that never associate lock no one out."""

from __future__ import annotations

import hashlib
import struct
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.pdu import P_DATA_TF

from appliance.demo.synthetic import write_multiframe
from appliance.upper_layer import (
    ASSOCIATION_PDU_MAX,
    COMMAND_SET_MAX,
    DEFAULT_MAX_PDU,
    SEND_MAX_PDU,
    WAITING_MAX,
)
from tests import rawpdu
from tests.integration.conftest import dest
from tests.peers import dataset_sha256, free_port, received_dataset, store_responses, storescu

FILLER_BYTES = 256 * 1024 * 1024  # what a peer pushes after a huge length field
GROWTH_LIMIT = 24 * 1024 * 1024  # what the box may grow by meanwhile (one PDU, buffers)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def box(make_box):
    """A box whose PACS is a closed port: nothing it holds leaves meanwhile."""
    return make_box([dest("pacs", "PACS", free_port())]).start()


def _echo_succeeds(port: int) -> bool:
    ae = AE(ae_title="CHECK")
    ae.add_requested_context(rawpdu.VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="FLUXBOX")
    try:
        return assoc.is_established and int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release() if assoc.is_established else None


def _associated(port: int, contexts=None):
    sock = rawpdu.connect(port)
    kwargs = {"contexts": contexts} if contexts else {}
    sock.sendall(rawpdu.associate_rq(**kwargs))
    accept = rawpdu.read_reply(sock, 10)
    assert accept is not None and accept.pdu_type == rawpdu.ASSOCIATE_AC, accept
    return sock, accept


def _push_filler(sock, total: int) -> None:
    """Up to `total` bytes after the header, until the box closes the connection."""
    chunk = bytes(1 << 20)
    for _ in range(total // len(chunk)):
        if not rawpdu.send_quietly(sock, chunk):
            return


def _abort_after_huge_length(box, sock, header: bytes) -> rawpdu.Reply | None:
    before = _rss_bytes(box.proc.pid)
    sock.sendall(header)
    _push_filler(sock, FILLER_BYTES)
    reply = rawpdu.read_reply(sock, 10)
    grown = _rss_bytes(box.proc.pid) - before
    assert grown < GROWTH_LIMIT, f"the box grew by {grown >> 20} MB"
    return reply


def test_association_request_claiming_4_gb_is_aborted_and_allocates_nothing(box):
    with rawpdu.connect(box.port) as sock:
        reply = _abort_after_huge_length(
            box, sock, struct.pack(">BBL", rawpdu.ASSOCIATE_RQ, 0, 0xFFFF_FFFF))
    assert reply is not None and reply.pdu_type == rawpdu.ABORT
    assert _echo_succeeds(box.port)


def test_valid_association_request_just_over_the_limit_is_aborted(box):
    # Well-formed: presentation contexts each proposing 1,000 (unknown) transfer syntaxes
    # (about 64 KB a context), enough of them to pass the limit.
    syntaxes = [f"1.2.826.0.1.3680043.8.498.{n:031d}" for n in range(1000)]
    count = ASSOCIATION_PDU_MAX // 64_000 + 1
    request = rawpdu.associate_rq(contexts=[(rawpdu.VERIFICATION, syntaxes)] * count)
    assert ASSOCIATION_PDU_MAX < len(request) - 6 < ASSOCIATION_PDU_MAX + 131072
    with rawpdu.connect(box.port) as sock:
        sock.sendall(request)
        reply = rawpdu.read_reply(sock, 10)
    assert reply is not None and reply.pdu_type == rawpdu.ABORT


def test_the_box_announces_its_bounded_maximum_pdu(box):
    sock, accept = _associated(box.port)
    with sock:
        assert rawpdu.announced_max_pdu(accept) == DEFAULT_MAX_PDU


def test_p_data_claiming_4_gb_after_association_is_aborted_and_allocates_nothing(box):
    sock, _ = _associated(box.port)
    with sock:
        reply = _abort_after_huge_length(
            box, sock, struct.pack(">BBL", rawpdu.P_DATA_TF, 0, 0xFFFF_FFFF))
    assert reply is not None and reply.pdu_type == rawpdu.ABORT
    assert _echo_succeeds(box.port)


def _store_in_pdus_of(box, tmp_path, extra: int) -> rawpdu.Reply | None:
    """A valid C-STORE whose data set P-DATA-TFs are `extra` bytes longer than negotiated;
    the box's first reply after the last of them."""
    path = write_multiframe(tmp_path / "mf.dcm", size_bytes=3 * DEFAULT_MAX_PDU,
                            rows=256, cols=256)
    ds = dcmread(path)
    sock, accept = _associated(box.port, [(str(ds.SOPClassUID), [rawpdu.EXPLICIT_LE])])
    limit = rawpdu.announced_max_pdu(accept)
    # PDV header: item length 4, context ID 1, control header 1
    pdus = rawpdu.c_store(str(ds.SOPInstanceUID), rawpdu.encode_dataset(ds), context_id=1,
                          fragment=limit - 6 + extra, sop_class=str(ds.SOPClassUID))
    assert max(len(p) - 6 for p in pdus) == limit + extra
    with sock:
        for p in pdus:
            if not rawpdu.send_quietly(sock, p):
                break
        reply = rawpdu.read_reply(sock, 30)
        if reply is not None and reply.pdu_type == rawpdu.P_DATA_TF:
            sock.sendall(rawpdu.release_rq())
            assert rawpdu.read_reply(sock, 10).pdu_type == rawpdu.RELEASE_RP
    return reply


def test_p_data_of_exactly_the_negotiated_length_is_accepted(box, tmp_path):
    reply = _store_in_pdus_of(box, tmp_path, 0)
    assert reply is not None and reply.pdu_type == rawpdu.P_DATA_TF, reply
    assert rawpdu.store_status(reply) == 0x0000
    assert box.studies()[0]["instances"] == 1


def test_p_data_one_byte_longer_than_negotiated_is_aborted(box, tmp_path):
    reply = _store_in_pdus_of(box, tmp_path, 1)
    assert reply is not None and reply.pdu_type == rawpdu.ABORT, reply
    assert box.studies() == []


def test_endless_command_set_is_aborted(box):
    sock, _ = _associated(box.port)
    fragment = rawpdu.p_data([(1, 0x01, bytes(8000))])  # command, not the last fragment
    with sock:
        for _ in range(COMMAND_SET_MAX // 8000 + 2):
            if not rawpdu.send_quietly(sock, fragment):
                break
        reply = rawpdu.read_reply(sock, 10)
    assert reply is not None and reply.pdu_type == rawpdu.ABORT
    assert _echo_succeeds(box.port)


def test_connections_that_never_associate_do_not_lock_modalities_out(box):
    # More than the box's 16 associations at once, each ending before an A-ASSOCIATE-RQ:
    # an A-ABORT, random bytes, or nothing at all. A modality must get in at once, not
    # after the 30 s the box would otherwise wait for each request.
    openers = [rawpdu.pdu(rawpdu.ABORT, bytes(4)), b"\xa6\x06\xfb", b""] * 8
    for opener in openers:
        with rawpdu.connect(box.port) as sock:
            rawpdu.send_quietly(sock, opener)
            rawpdu.read_reply(sock, 0.2)
    assert _echo_succeeds(box.port)


class _RecordingPacs:
    """A pynetdicom PACS announcing `max_pdu` that records every P-DATA-TF length."""

    def __init__(self, max_pdu: int, sop_class: str) -> None:
        self.lengths: list[int] = []
        self.received: list[bytes] = []
        ae = AE(ae_title="PACS")
        ae.maximum_pdu_size = max_pdu
        ae.add_supported_context(sop_class, rawpdu.EXPLICIT_LE)
        handlers = [(evt.EVT_PDU_RECV, self._on_pdu), (evt.EVT_C_STORE, self._on_store)]
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.port = self.server.server_address[1]

    def _on_pdu(self, event) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            self.lengths.append(event.pdu.pdu_length)

    def _on_store(self, event) -> int:
        self.received.append(received_dataset(event))
        return 0x0000


@pytest.mark.parametrize(("pacs_max", "expected_max"), [(0, SEND_MAX_PDU), (16384, 16384)],
                         ids=["unlimited", "16384"])
def test_delivery_honours_the_pacs_maximum_pdu_and_caps_an_unlimited_one(
        make_box, tmp_path, pacs_max, expected_max):
    path = write_multiframe(tmp_path / "mf.dcm", size_bytes=8 * SEND_MAX_PDU,
                            rows=256, cols=256)
    sop_class = str(dcmread(path, stop_before_pixels=True).SOPClassUID)
    pacs = _RecordingPacs(pacs_max, sop_class)
    try:
        box = make_box([dest("pacs", "PACS", pacs.port)]).start()
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(sop_class, rawpdu.EXPLICIT_LE)
        assoc = ae.associate("127.0.0.1", box.port, ae_title="FLUXBOX")
        assert int(assoc.send_c_store(path).Status) == 0
        assoc.release()
        box.wait_states("complete", timeout_s=60)
    finally:
        pacs.server.shutdown()
    (received,) = pacs.received
    assert hashlib.sha256(received).hexdigest() == dataset_sha256(path)
    assert max(pacs.lengths) == expected_max  # full PDUs, none longer



# Issue 7: a request of tiny items just under ASSOCIATION_PDU_MAX decodes to about 13 MB of
# objects (sixteen at once: 190 MB), one within the item limits to a few MB. 32 at once
# measured: without the item limits over 200 MB, without the waiting limit 47 MB (within
# the item limits), with both 6 MB and 18 MB.
FLOOD_CONNECTIONS = 32
FLOOD_GROWTH_LIMIT = 32 * 1024 * 1024


def _flood(port: int, request: bytes) -> list[rawpdu.Reply | None]:
    """FLOOD_CONNECTIONS connections at once, each sending `request`: the box's replies."""
    socks = [rawpdu.connect(port) for _ in range(FLOOD_CONNECTIONS)]
    try:
        for sock in socks:
            rawpdu.send_quietly(sock, request)
        return [rawpdu.read_reply(sock, 30) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _near_cap_request(contexts: int, uid_chars: int) -> bytes:
    """A well-formed A-ASSOCIATE-RQ just under ASSOCIATION_PDU_MAX: `contexts` contexts,
    each proposing as many transfer syntaxes of `uid_chars` characters as fit."""
    per_context = (ASSOCIATION_PDU_MAX - 4096) // contexts // (uid_chars + 4)
    digits = uid_chars - 2
    syntaxes = [f"1.{n % 10**digits:0{digits}d}" for n in range(per_context)]
    request = rawpdu.associate_rq(contexts=[(rawpdu.VERIFICATION, syntaxes)] * contexts)
    assert ASSOCIATION_PDU_MAX - 8192 < len(request) - 6 <= ASSOCIATION_PDU_MAX
    return request


@pytest.mark.parametrize(("contexts", "uid_chars", "answers"), [
    (128, 3, {rawpdu.ABORT, rawpdu.ASSOCIATE_RJ}),
    # the waiting ones are accepted (each context refused: unknown syntaxes), the others
    # get a transient A-ASSOCIATE-RJ
    (64, 60, {rawpdu.ASSOCIATE_AC, rawpdu.ASSOCIATE_RJ}),
], ids=["over-the-item-limits", "within-the-item-limits"])
def test_many_near_cap_association_requests_at_once_keep_memory_bounded(
        box, ct_study, contexts, uid_chars, answers):
    request = _near_cap_request(contexts, uid_chars)
    # the first threads of as many connections cost the box's allocator some 20 MB, kept
    _flood(box.port, rawpdu.associate_rq())
    rss_before = box.reset_peak_rss()
    replies = _flood(box.port, request)
    grown = box.peak_rss_bytes() - rss_before
    assert grown < FLOOD_GROWTH_LIMIT, f"the box grew by {grown >> 20} MB"
    assert {reply.pdu_type if reply else None for reply in replies} == answers, replies
    cp = storescu("127.0.0.1", box.port, ct_study, called_aet="FLUXBOX")
    responses = store_responses(cp)
    assert len(responses) == len(ct_study)
    assert all(status == "Success" for _, status in responses), responses


def _closed_by_box(sock, timeout_s: float) -> bool:
    """True once the box closes `sock` (within `timeout_s`), sending nothing first."""
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except (TimeoutError, OSError):
        return False


def test_silent_connections_hold_the_waiting_slots_only_briefly(box):
    # Issue 7: connections that never send fill the few slots for requests not yet
    # answered; a modality then gets a transient A-ASSOCIATE-RJ, and a slot frees when the
    # box closes the silent connection after REQUEST_WAIT_S (10 s), not pynetdicom's 30 s.
    silent = [rawpdu.connect(box.port) for _ in range(WAITING_MAX)]
    try:
        with rawpdu.connect(box.port) as sock:
            sock.sendall(rawpdu.associate_rq())
            reply = rawpdu.read_reply(sock, 10)
        assert reply is not None and reply.pdu_type == rawpdu.ASSOCIATE_RJ, reply
        assert reply.body[1:] == bytes([0x02, 0x03, 0x02])  # transient, local limit
        started = time.monotonic()
        assert all(_closed_by_box(sock, 20 - (time.monotonic() - started)) for sock in silent)
    finally:
        for sock in silent:
            sock.close()
    assert _echo_succeeds(box.port)


# Issue 7: without a bound, requests a peer sends without reading the responses queue in
# the box as decoded messages for as long as it keeps sending (C-ECHO here; C-FIND,
# N-ACTION and the rest queue the same way). The box decodes faster than it answers, so
# with REQUESTS_WAITING_MAX it aborts within the first few.
UNREAD_REQUESTS = 3000


def _replies_until_abort(sock, timeout_s: float) -> list[int]:
    """The PDU types the box sends until it aborts or closes (bounded by count and time)."""
    deadline = time.monotonic() + timeout_s
    types: list[int] = []
    while time.monotonic() < deadline and len(types) <= UNREAD_REQUESTS:
        reply = rawpdu.read_reply(sock, max(0.1, deadline - time.monotonic()))
        if reply is None:
            break
        types.append(reply.pdu_type)
        if reply.pdu_type == rawpdu.ABORT:
            break
    return types


def test_requests_sent_without_reading_responses_are_aborted(box):
    sock, _ = _associated(box.port)
    burst = b"".join(rawpdu.c_echo(message_id=n) for n in range(1, UNREAD_REQUESTS))
    with sock:
        sock.settimeout(30)
        rawpdu.send_quietly(sock, burst)
        types = _replies_until_abort(sock, 30)
    assert types and types[-1] == rawpdu.ABORT, f"{len(types)} replies, no A-ABORT"
    assert _echo_succeeds(box.port)
