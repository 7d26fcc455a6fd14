"""Walking a Part 10 file element by element without loading it: the byte sources (the
raw file, or the inflated stream of a deflated data set), element headers, skipping
sequences and large values, and the file meta."""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from appliance.validation.errors import unreadable

HEADER_TAGS: dict[int, str] = {
    0x00080005: "SpecificCharacterSet",
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x00080020: "StudyDate",
    0x00080030: "StudyTime",
    0x00080050: "AccessionNumber",
    0x00080060: "Modality",
    0x00080090: "ReferringPhysicianName",
    0x00081010: "StationName",
    0x00081030: "StudyDescription",
    0x00100010: "PatientName",
    0x00100020: "PatientID",
    0x00100030: "PatientBirthDate",
    0x00100040: "PatientSex",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00200010: "StudyID",
    0x00200011: "SeriesNumber",
    0x00200013: "InstanceNumber",
    0x00201002: "ImagesInAcquisition",
    0x00280002: "SamplesPerPixel",
    0x00280004: "PhotometricInterpretation",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
}
PIXEL_TAGS: dict[int, str] = {
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
    0x7FE00010: "PixelData",
}
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")

_MAX_VALUE = 64 * 1024  # a header value longer than this is not a header value
_MAX_DEPTH = 32  # nesting of sequences / items
_CHUNK = 1 << 16
_UNDEFINED = 0xFFFFFFFF

_ITEM = 0xFFFEE000
_ITEM_DELIM = 0xFFFEE00D
_SEQ_DELIM = 0xFFFEE0DD
_TRANSFER_SYNTAX = 0x00020010

_LONG_VRS = frozenset(
    b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split()
)  # 2 reserved bytes, then a 4-byte length
_SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split())
_UNDEFINED_OK_VRS = frozenset({None, b"SQ", b"UN", b"OB", b"OW"})


class Readable(Protocol):
    """A file read from its start: a plain file, or a blob decrypted as it is read."""

    def read(self, n: int = -1, /) -> bytes: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...
    def tell(self) -> int: ...


class Source(Protocol):
    def read(self, n: int) -> bytes: ...
    def skip(self, n: int) -> None: ...
    def at_end(self) -> bool: ...
    def finish(self) -> None: ...


class FileSource:
    """Reads and seeks in a file that ends at `end`."""

    def __init__(self, fp: Readable, end: int) -> None:
        self._fp = fp
        self._end = end

    def read(self, n: int) -> bytes:
        data = self._fp.read(n)
        if len(data) != n:
            raise unreadable("data set truncated")
        return data

    def skip(self, n: int) -> None:
        pos = self._fp.tell() + n
        if pos > self._end:
            raise unreadable("data set truncated")
        self._fp.seek(pos)

    def at_end(self) -> bool:
        return self._fp.tell() >= self._end

    def finish(self) -> None:
        return None


class InflateSource:
    """Inflates a deflated data set chunk by chunk; skipped bytes are discarded."""

    def __init__(self, fp: Readable) -> None:
        self._fp = fp
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = bytearray()

    def _more(self) -> bool:
        """Inflate at most one chunk more into the buffer; False at the end of input."""
        while not self._z.eof:
            data = self._z.unconsumed_tail or self._fp.read(_CHUNK)
            if not data:
                return False
            out = self._z.decompress(data, _CHUNK)
            if out:
                self._buf += out
                return True
        return False

    def read(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._more():
                raise unreadable("data set truncated")
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            if not self._buf and not self._more():
                raise unreadable("data set truncated")
            k = min(n, len(self._buf))
            del self._buf[:k]
            n -= k

    def at_end(self) -> bool:
        return not self._buf and not self._more()

    def finish(self) -> None:
        if not self._z.eof:
            raise unreadable("deflated data set truncated")


# --- element walking ------------------------------------------------------------------


class Enc(NamedTuple):
    implicit: bool
    little: bool

    @property
    def fmt(self) -> str:
        return "<" if self.little else ">"


EXPLICIT_LE = Enc(implicit=False, little=True)
IMPLICIT_LE = Enc(implicit=True, little=True)


def _element_header(src: Source, enc: Enc, *, strict: bool) -> tuple[int, bytes | None, int]:
    """Read one element (or item) header: tag, VR (None if implicit) and value length."""
    group, elem = struct.unpack(enc.fmt + "HH", src.read(4))
    tag = group << 16 | elem
    if group == 0xFFFE or enc.implicit:
        return tag, None, struct.unpack(enc.fmt + "L", src.read(4))[0]
    vr = src.read(2)
    if vr in _LONG_VRS:
        src.skip(2)
        return tag, vr, struct.unpack(enc.fmt + "L", src.read(4))[0]
    if vr in _SHORT_VRS:
        return tag, vr, struct.unpack(enc.fmt + "H", src.read(2))[0]
    if strict:
        raise unreadable("encoding does not match the transfer syntax")
    # some writers switch to implicit VR inside sequences
    return tag, None, struct.unpack(enc.fmt + "L", vr + src.read(2))[0]


def _inner_enc(vr: bytes | None, enc: Enc) -> Enc:
    """Encoding of an undefined-length value's content (UN holds implicit VR LE)."""
    return IMPLICIT_LE if vr == b"UN" else enc


def _skip_items(src: Source, enc: Enc, depth: int) -> None:
    """Skip the items of an undefined-length value, through its sequence delimiter."""
    if depth > _MAX_DEPTH:
        raise unreadable("sequences nested too deeply")
    while True:
        group, elem, length = struct.unpack(enc.fmt + "HHL", src.read(8))
        tag = group << 16 | elem
        if tag == _SEQ_DELIM:
            return
        if tag != _ITEM:
            raise unreadable("malformed sequence")
        if length == _UNDEFINED:
            _skip_item_elements(src, enc, depth + 1)
        else:
            src.skip(length)


def _skip_item_elements(src: Source, enc: Enc, depth: int) -> None:
    """Skip the elements of an undefined-length item, through its item delimiter."""
    while True:
        tag, vr, length = _element_header(src, enc, strict=False)
        if tag == _ITEM_DELIM:
            return
        if length == _UNDEFINED:
            _skip_items(src, _inner_enc(vr, enc), depth + 1)
        else:
            src.skip(length)


@dataclass
class Walk:
    values: dict[str, bytes]  # header keyword -> raw value
    pixel_lengths: dict[str, int | None]  # pixel keyword -> value length, None if undefined
    remarks: list[str]


def walk_elements(src: Source, enc: Enc) -> Walk:
    """Walk the top-level data set, keeping header values and pixel value lengths."""
    found = Walk({}, {}, [])
    last = -1
    while not src.at_end():
        tag, vr, length = _element_header(src, enc, strict=True)
        if tag >> 16 == 0xFFFE:
            raise unreadable("item outside a sequence")
        if tag <= last and "elements out of order" not in found.remarks:
            # PS3.5 7.1 wants ascending tags; the bytes still parse and are kept as they are
            found.remarks.append("elements out of order")
        last = max(last, tag)
        if tag in PIXEL_TAGS:
            found.pixel_lengths[PIXEL_TAGS[tag]] = None if length == _UNDEFINED else length
        if length == _UNDEFINED:
            if vr not in _UNDEFINED_OK_VRS:
                raise unreadable("undefined length not allowed for this VR")
            _skip_items(src, _inner_enc(vr, enc), 1)
        elif tag in HEADER_TAGS and length <= _MAX_VALUE:
            found.values[HEADER_TAGS[tag]] = src.read(length)
        elif tag in HEADER_TAGS:
            found.remarks.append(f"{HEADER_TAGS[tag]} too long, not read")
            src.skip(length)
        else:
            src.skip(length)
    src.finish()
    return found


def read_meta(fp: Readable, size: int) -> tuple[str, int]:
    """Check the preamble, read the file meta; return transfer syntax and data set offset."""
    head = fp.read(132)
    if len(head) < 132 or head[128:] != b"DICM":
        raise unreadable("not a DICOM Part 10 file")
    src = FileSource(fp, size)
    syntax = ""
    while not src.at_end():
        pos = fp.tell()
        if fp.read(2) != b"\x02\x00":
            fp.seek(pos)
            break
        fp.seek(pos)
        tag, _vr, length = _element_header(src, EXPLICIT_LE, strict=True)
        if length == _UNDEFINED or length > _MAX_VALUE:
            raise unreadable("malformed file meta")
        value = src.read(length)
        if tag == _TRANSFER_SYNTAX:
            syntax = value.decode("ascii", "replace").rstrip("\x00 ")
    if not syntax:
        raise unreadable("file meta has no transfer syntax")
    if not is_valid_uid(syntax):
        raise unreadable("malformed transfer syntax")
    return syntax, fp.tell()


def is_valid_uid(value: str) -> bool:
    """True if `value` is a syntactically valid UID (PS3.5 9.1)."""
    return len(value) <= 64 and _UID_RE.fullmatch(value) is not None
