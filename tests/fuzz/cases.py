"""What the fuzzer sends: hypothesis strategies for malformed DICOM upper-layer traffic.

A `Case` is a list of byte strings sent in order on one fresh connection, after a
valid association or not. The strategies start from valid PDUs (tests/rawpdu.py)
and break them: truncations; PDU, item, PDV and element lengths that are wrong,
huge or negative-looking (top bit set); random bytes; valid PDUs in the wrong state.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache

import pydicom
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from tests import rawpdu

UID_ROOT = "1.2.826.0.1.3680043.8.498.4711."
STUDY_UID = UID_ROOT + "1"
# Lengths worth trying: zero, tiny, off by one around common sizes, the top bit set
# (negative as a signed int), all ones, just under all ones.
LENGTHS = [0, 1, 2, 3, 4, 5, 6, 7, 255, 16383, 16384, 16385, 65535, 65536, 262143,
           262144, 262145, 1 << 20, (1 << 20) + 1, 0x7FFF_FFFF, 0x8000_0000, 0x8000_0001,
           0xFFFF_FFF0, 0xFFFF_FFFE, 0xFFFF_FFFF]
LENGTH = st.sampled_from(LENGTHS) | st.integers(0, 0xFFFF_FFFF)
SHORT_LENGTH = st.sampled_from([0, 1, 2, 3, 4, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]) | st.integers(
    0, 0xFFFF)


@dataclass(frozen=True)
class Case:
    """One connection's worth of bytes. `sop_instance`: the UID a C-STORE in it carries."""

    kind: str
    chunks: tuple[bytes, ...]
    associate: bool = False
    sop_instance: str | None = None

    def __repr__(self) -> str:  # hypothesis prints failing cases; the bytes are in the file
        sizes = ",".join(str(len(c)) for c in self.chunks)
        return f"Case({self.kind!r}, associate={self.associate}, chunk bytes {sizes})"

    def to_json(self) -> dict:
        return {"kind": self.kind, "associate": self.associate,
                "sop_instance": self.sop_instance, "chunks": [c.hex() for c in self.chunks]}

    @classmethod
    def from_json(cls, data: dict) -> Case:
        return cls(data["kind"], tuple(bytes.fromhex(c) for c in data["chunks"]),
                   data["associate"], data.get("sop_instance"))


@cache
def _base_dataset() -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = UID_ROOT + "2"
    return ds


def dataset_bytes(sop_instance: str) -> bytes:
    """A valid CT Image (Explicit VR Little Endian, 32 KB of pixels) with this SOP Instance UID."""
    ds = _base_dataset().copy()
    ds.SOPInstanceUID = sop_instance
    return rawpdu.encode_dataset(ds)


# --------------------------------------------------------------------------- byte mutations

@st.composite
def mutated(draw, data: bytes, *, keep_header: bool = False) -> bytes:
    """`data` with one to three of: truncation, byte flips, an overwritten 2- or 4-byte
    length, inserted random bytes, appended random bytes."""
    out = bytearray(data)
    start = 6 if keep_header and len(out) > 6 else 0
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["truncate", "flip", "length32", "length16", "insert",
                                    "append"]))
        at = draw(st.integers(start, max(start, len(out) - 1)))
        if how == "truncate":
            del out[max(at, 1):]
        elif how == "flip" and out:
            out[min(at, len(out) - 1)] ^= draw(st.integers(1, 255))
        elif how == "length32":
            value = draw(LENGTH)
            out[at:at + 4] = struct.pack(draw(st.sampled_from([">L", "<L"])), value)
        elif how == "length16":
            out[at:at + 2] = struct.pack(draw(st.sampled_from([">H", "<H"])), draw(SHORT_LENGTH))
        elif how == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            out += draw(st.binary(min_size=1, max_size=256))
    return bytes(out)


def with_length(pdu: bytes, length: int) -> bytes:
    """`pdu` with its 4-byte length field replaced."""
    return pdu[:2] + struct.pack(">L", length) + pdu[6:]


# --------------------------------------------------------------------------- cases

CONTEXTS = [(rawpdu.VERIFICATION, [rawpdu.IMPLICIT_LE]),
            (rawpdu.CT_IMAGE_STORAGE, [rawpdu.EXPLICIT_LE, rawpdu.IMPLICIT_LE])]
ECHO_CONTEXT, STORE_CONTEXT = 1, 3


def association_request() -> bytes:
    return rawpdu.associate_rq(contexts=CONTEXTS)


@st.composite
def association_requests(draw) -> Case:
    """A broken A-ASSOCIATE-RQ, or a valid one with a wrong, huge or negative-looking
    length field, on a fresh connection."""
    request = association_request()
    how = draw(st.sampled_from(["mutate", "pdu length", "truncate"]))
    if how == "mutate":
        data = draw(mutated(request))
    elif how == "pdu length":
        data = with_length(request, draw(LENGTH))
    else:
        data = request[:draw(st.integers(1, len(request) - 1))]
    return Case(f"A-ASSOCIATE-RQ {how}", (data,))


@st.composite
def random_bytes(draw) -> Case:
    """Random bytes, half the time behind a real PDU type and a length."""
    body = draw(st.binary(max_size=2048))
    if draw(st.booleans()):
        body = struct.pack(">BBL", draw(st.integers(1, 7)), 0, draw(LENGTH)) + body
    return Case("random bytes", (body,) if body else (b"\x00",))


def _uid(draw) -> str:
    return UID_ROOT + str(draw(st.integers(10, 10**12)))


@st.composite
def p_data(draw) -> Case:
    """After a valid association: a C-ECHO or C-STORE whose P-DATA-TFs are broken."""
    if draw(st.booleans()):
        pdus = [rawpdu.c_echo(ECHO_CONTEXT)]
        sop_instance = None
    else:
        sop_instance = _uid(draw)
        pdus = rawpdu.c_store(sop_instance, dataset_bytes(sop_instance),
                              context_id=STORE_CONTEXT, fragment=draw(
                                  st.sampled_from([4000, 16000, 65000])))
    index = draw(st.integers(0, len(pdus) - 1))
    how = draw(st.sampled_from(["mutate", "pdu length", "pdv length", "context id",
                                "control header", "truncate", "stop early"]))
    pdu = pdus[index]
    if how == "mutate":
        pdus[index] = draw(mutated(pdu, keep_header=True))
    elif how == "pdu length":
        pdus[index] = with_length(pdu, draw(LENGTH))
    elif how == "pdv length":
        pdus[index] = pdu[:6] + struct.pack(">L", draw(LENGTH)) + pdu[10:]
    elif how == "context id":
        pdus[index] = pdu[:10] + bytes([draw(st.integers(0, 255))]) + pdu[11:]
    elif how == "control header":
        pdus[index] = pdu[:11] + bytes([draw(st.integers(0, 255))]) + pdu[12:]
    elif how == "truncate":
        pdus[index] = pdu[:draw(st.integers(1, len(pdu) - 1))]
        pdus = pdus[:index + 1]
    else:
        pdus = pdus[:index]
    return Case(f"P-DATA {how}", tuple(pdus) or (rawpdu.release_rq(),), associate=True,
                sop_instance=sop_instance)


@st.composite
def datasets(draw) -> Case:
    """After a valid association: a well-framed C-STORE whose data set is broken
    (truncated values, wrong or undefined element lengths, flipped bytes)."""
    sop_instance = _uid(draw)
    data = draw(mutated(dataset_bytes(sop_instance)))
    pdus = rawpdu.c_store(sop_instance, data, context_id=STORE_CONTEXT)
    return Case("data set", (*pdus, rawpdu.release_rq()), associate=True,
                sop_instance=sop_instance)


def _other_pdus() -> dict[str, bytes]:
    return {
        "A-ASSOCIATE-RQ": association_request(),
        "A-ASSOCIATE-AC": rawpdu.pdu(rawpdu.ASSOCIATE_AC, association_request()[6:]),
        "A-ASSOCIATE-RJ": rawpdu.pdu(rawpdu.ASSOCIATE_RJ, bytes([0, 1, 1, 1])),
        "P-DATA C-ECHO": rawpdu.c_echo(ECHO_CONTEXT),
        "A-RELEASE-RQ": rawpdu.release_rq(),
        "A-RELEASE-RP": rawpdu.pdu(rawpdu.RELEASE_RP, bytes(4)),
        "A-ABORT": rawpdu.pdu(rawpdu.ABORT, bytes([0, 0, 0, 0])),
    }


@st.composite
def wrong_state(draw) -> Case:
    """Valid PDUs in an order the state machine (PS3.8 9.2) does not expect."""
    pdus = _other_pdus()
    associate = draw(st.booleans())
    names = draw(st.lists(st.sampled_from(sorted(pdus)), min_size=1, max_size=4))
    return Case("wrong state " + ",".join(names), tuple(pdus[n] for n in names),
                associate=associate)


def cases() -> st.SearchStrategy[Case]:
    return st.one_of(association_requests(), random_bytes(), p_data(), datasets(),
                     wrong_state())
