"""Header integrity of a received instance, and completeness findings of a study.

`read_header` checks one Part 10 file as the receiver wrote it (preamble, file meta
from the C-STORE command, then the data set bytes as received). It walks the file
element by element and reads only the few values it needs: Pixel Data, sequences
and every other large value are skipped by seeking (or, for a deflated data set, by
inflating and discarding chunks), so memory stays small whatever the file size.

The box refuses only what it cannot keep faithfully (PRODUCT.md, Guarantees; issue 11).
Everything else is accepted and described by `remarks` on the header: short texts
(never a patient value, never an instance, series or study UID) that the store keeps per
instance and `study_findings` sums up per study, e.g. "2 instance(s): PatientID missing".

`study_findings` also turns what the store keeps per instance into short remarks about a
study's completeness.

Failure statuses (PS3.4 Storage Service Class, C-STORE failures):

- `STATUS_CANNOT_UNDERSTAND` (0xC210, in "Error: Cannot understand" 0xCxxx): the file
  cannot be parsed: not DICOM, a truncated value, malformed encoding or sequences, an
  encoding other than its transfer syntax says.
- `STATUS_DATASET_MISMATCH` (0xA900, "Error: Data Set does not match SOP Class"): it
  parses, but the SOP Class, SOP Instance or Study Instance UID is missing or malformed,
  the SOP Class or Instance UID differs from the command (the file meta), or native Pixel
  Data has a length the image attributes contradict.

I/O errors (the file cannot be opened or read) are the box's fault, not the data
set's: they propagate as `OSError` for the caller to answer as out of resources.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

from pydicom.charset import convert_encodings, decode_bytes, python_encoding
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import PN_DELIMS, TEXT_VR_DELIMS

STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_DATASET_MISMATCH = 0xA900

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

_HEADER_TAGS: dict[int, str] = {
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
_PIXEL_TAGS: dict[int, str] = {
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
    0x7FE00010: "PixelData",
}
# Without these the box cannot key, de-duplicate or route an instance: refused.
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID")
# Type 1 and 2 attributes of the Patient, General Study and General Series modules (PS3.3
# C.7.1.1, C.7.2.1, C.7.3.1) that every composite instance has: absent (or empty, for Type 1)
# is recorded, never refused. PatientID is recorded when empty too: PACS match on it.
_EXPECTED_TYPE = {
    "PatientName": 2, "PatientID": 2, "PatientBirthDate": 2, "PatientSex": 2,
    "StudyDate": 2, "StudyTime": 2, "ReferringPhysicianName": 2, "StudyID": 2,
    "AccessionNumber": 2, "Modality": 1, "SeriesInstanceUID": 1, "SeriesNumber": 2,
}

_NATIVE_SYNTAXES = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)
_DEFLATED_SYNTAXES = frozenset(
    {
        DeflatedExplicitVRLittleEndian,
        "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
        "1.2.840.10008.1.2.4.205",  # JPIP HTJ2K Referenced Deflate
    }
)
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


@dataclass(frozen=True)
class InstanceHeader:
    """What the box needs to know about one received instance."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    patient_id: str
    patient_name: str
    accession: str
    modality: str
    study_description: str
    station_name: str
    instance_number: int | None
    images_in_acquisition: int | None
    number_of_frames: int | None
    series_number: int | None
    dataset_offset: int  # byte offset in the file where the data set (after file meta) starts
    remarks: tuple[str, ...] = ()  # what is imperfect but kept; no patient data, no UIDs


class InvalidDataset(Exception):
    """A received data set the box refuses; `status` is the DIMSE failure status to send.

    `reason` is short and never holds a patient value or a UID.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"0x{status:04X}: {reason}")
        self.status = status
        self.reason = reason


def _unreadable(reason: str) -> InvalidDataset:
    return InvalidDataset(STATUS_CANNOT_UNDERSTAND, reason)


def _mismatch(reason: str) -> InvalidDataset:
    return InvalidDataset(STATUS_DATASET_MISMATCH, reason)


# --- byte sources: the raw file, or the inflated stream of a deflated data set ---------


class _Source(Protocol):
    def read(self, n: int) -> bytes: ...
    def skip(self, n: int) -> None: ...
    def at_end(self) -> bool: ...
    def finish(self) -> None: ...


class _FileSource:
    """Reads and seeks in a file that ends at `end`."""

    def __init__(self, fp: BinaryIO, end: int) -> None:
        self._fp = fp
        self._end = end

    def read(self, n: int) -> bytes:
        data = self._fp.read(n)
        if len(data) != n:
            raise _unreadable("data set truncated")
        return data

    def skip(self, n: int) -> None:
        pos = self._fp.tell() + n
        if pos > self._end:
            raise _unreadable("data set truncated")
        self._fp.seek(pos)

    def at_end(self) -> bool:
        return self._fp.tell() >= self._end

    def finish(self) -> None:
        return None


class _InflateSource:
    """Inflates a deflated data set chunk by chunk; skipped bytes are discarded."""

    def __init__(self, fp: BinaryIO) -> None:
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
                raise _unreadable("data set truncated")
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            if not self._buf and not self._more():
                raise _unreadable("data set truncated")
            k = min(n, len(self._buf))
            del self._buf[:k]
            n -= k

    def at_end(self) -> bool:
        return not self._buf and not self._more()

    def finish(self) -> None:
        if not self._z.eof:
            raise _unreadable("deflated data set truncated")


# --- element walking ------------------------------------------------------------------


class _Enc(NamedTuple):
    implicit: bool
    little: bool

    @property
    def fmt(self) -> str:
        return "<" if self.little else ">"


_EXPLICIT_LE = _Enc(implicit=False, little=True)
_IMPLICIT_LE = _Enc(implicit=True, little=True)


def _element_header(src: _Source, enc: _Enc, *, strict: bool) -> tuple[int, bytes | None, int]:
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
        raise _unreadable("encoding does not match the transfer syntax")
    # some writers switch to implicit VR inside sequences
    return tag, None, struct.unpack(enc.fmt + "L", vr + src.read(2))[0]


def _inner_enc(vr: bytes | None, enc: _Enc) -> _Enc:
    """Encoding of an undefined-length value's content (UN holds implicit VR LE)."""
    return _IMPLICIT_LE if vr == b"UN" else enc


def _skip_items(src: _Source, enc: _Enc, depth: int) -> None:
    """Skip the items of an undefined-length value, through its sequence delimiter."""
    if depth > _MAX_DEPTH:
        raise _unreadable("sequences nested too deeply")
    while True:
        group, elem, length = struct.unpack(enc.fmt + "HHL", src.read(8))
        tag = group << 16 | elem
        if tag == _SEQ_DELIM:
            return
        if tag != _ITEM:
            raise _unreadable("malformed sequence")
        if length == _UNDEFINED:
            _skip_item_elements(src, enc, depth + 1)
        else:
            src.skip(length)


def _skip_item_elements(src: _Source, enc: _Enc, depth: int) -> None:
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
class _Walk:
    values: dict[str, bytes]  # header keyword -> raw value
    pixel_lengths: dict[str, int | None]  # pixel keyword -> value length, None if undefined
    remarks: list[str]


def _walk(src: _Source, enc: _Enc) -> _Walk:
    """Walk the top-level data set, keeping header values and pixel value lengths."""
    found = _Walk({}, {}, [])
    last = -1
    while not src.at_end():
        tag, vr, length = _element_header(src, enc, strict=True)
        if tag >> 16 == 0xFFFE:
            raise _unreadable("item outside a sequence")
        if tag <= last and "elements out of order" not in found.remarks:
            # PS3.5 7.1 wants ascending tags; the bytes still parse and are kept as they are
            found.remarks.append("elements out of order")
        last = max(last, tag)
        if tag in _PIXEL_TAGS:
            found.pixel_lengths[_PIXEL_TAGS[tag]] = None if length == _UNDEFINED else length
        if length == _UNDEFINED:
            if vr not in _UNDEFINED_OK_VRS:
                raise _unreadable("undefined length not allowed for this VR")
            _skip_items(src, _inner_enc(vr, enc), 1)
        elif tag in _HEADER_TAGS and length <= _MAX_VALUE:
            found.values[_HEADER_TAGS[tag]] = src.read(length)
        elif tag in _HEADER_TAGS:
            found.remarks.append(f"{_HEADER_TAGS[tag]} too long, not read")
            src.skip(length)
        else:
            src.skip(length)
    src.finish()
    return found


def _read_meta(fp: BinaryIO, size: int) -> tuple[str, int]:
    """Check the preamble, read the file meta; return transfer syntax and data set offset."""
    head = fp.read(132)
    if len(head) < 132 or head[128:] != b"DICM":
        raise _unreadable("not a DICOM Part 10 file")
    src = _FileSource(fp, size)
    syntax = ""
    while not src.at_end():
        pos = fp.tell()
        if fp.read(2) != b"\x02\x00":
            fp.seek(pos)
            break
        fp.seek(pos)
        tag, _vr, length = _element_header(src, _EXPLICIT_LE, strict=True)
        if length == _UNDEFINED or length > _MAX_VALUE:
            raise _unreadable("malformed file meta")
        value = src.read(length)
        if tag == _TRANSFER_SYNTAX:
            syntax = value.decode("ascii", "replace").rstrip("\x00 ")
    if not syntax:
        raise _unreadable("file meta has no transfer syntax")
    if not is_valid_uid(syntax):
        raise _unreadable("malformed transfer syntax")
    return syntax, fp.tell()


# --- values -----------------------------------------------------------------------------


def is_valid_uid(value: str) -> bool:
    """True if `value` is a syntactically valid UID (PS3.5 9.1)."""
    return len(value) <= 64 and _UID_RE.fullmatch(value) is not None


class _Values:
    """Decodes the raw header values kept by the walk; what is odd goes to `remarks`."""

    def __init__(self, raw: dict[str, bytes], enc: _Enc, remarks: list[str]) -> None:
        self._raw = raw
        self._enc = enc
        self.remarks = remarks
        charset = raw.get("SpecificCharacterSet", b"").decode("ascii", "replace")
        terms = [t.strip(" \x00") for t in charset.split("\\")] if charset.strip() else []
        unknown = [t for t in terms if t not in python_encoding]
        if unknown:
            # pydicom falls back to ASCII (or its best guess): text is decoded for the
            # box's own use only; the bytes are kept and delivered as they came
            self.remarks.append(f"SpecificCharacterSet term unknown: {'/'.join(unknown)[:64]}")
        try:
            self._encodings = convert_encodings([t for t in terms if t not in unknown] or None)
        except LookupError:
            self._encodings = convert_encodings(None)

    def present(self, keyword: str) -> bool:
        return keyword in self._raw

    def empty(self, keyword: str) -> bool:
        return not self._raw.get(keyword, b"").strip(b" \x00")

    def _uid_text(self, keyword: str) -> str:
        return self._raw.get(keyword, b"").decode("ascii", "replace").rstrip("\x00 ")

    def uid(self, keyword: str) -> str:
        """A required UID: present, not empty, valid syntax; else the instance is refused."""
        value = self._uid_text(keyword)
        if not value:
            raise _mismatch(f"{keyword} missing")
        if not is_valid_uid(value):
            raise _mismatch(f"{keyword} malformed")
        return value

    def optional_uid(self, keyword: str) -> str:
        """A UID the box can do without: kept as given, a malformed one is a remark."""
        value = self._uid_text(keyword)
        if value and not is_valid_uid(value):
            self.remarks.append(f"{keyword} malformed")
        return value

    def text(self, keyword: str) -> str:
        raw = self._raw.get(keyword, b"")
        delims = TEXT_VR_DELIMS | {0x5C}
        return decode_bytes(raw, self._encodings, delims).strip(" \x00")

    def person_name(self, keyword: str) -> str:
        groups = self._raw.get(keyword, b"").rstrip(b" \x00").split(b"=")
        return "=".join(decode_bytes(g, self._encodings, PN_DELIMS) for g in groups)

    def integer(self, keyword: str) -> int | None:
        """An IS value; None if absent, empty or not an integer."""
        text = self._raw.get(keyword, b"").decode("ascii", "replace").strip(" \x00")
        text = text.split("\\")[0].strip()
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None

    def count(self, keyword: str) -> int | None:
        """A non-negative IS count; None if absent or empty, None and a remark if invalid."""
        if self.empty(keyword):
            return None
        value = self.integer(keyword)
        if value is None or value < 0:
            self.remarks.append(f"{keyword} invalid")
            return None
        return value

    def ushort(self, keyword: str) -> int | None:
        """A US value; None if absent or not one 16-bit value."""
        raw = self._raw.get(keyword)
        if raw is None or len(raw) != 2:
            return None
        return struct.unpack(self._enc.fmt + "H", raw)[0]


def expected_pixel_length(
    rows: int, columns: int, samples: int, bits_allocated: int, frames: int, photometric: str = ""
) -> int:
    """Bytes of native pixel data, without padding; BitsAllocated 1 is bit-packed.

    YBR_FULL_422 stores two chroma samples per pair of pixels: 2 samples a pixel.
    """
    if photometric == "YBR_FULL_422" and samples == 3:
        samples = 2
    pixels = rows * columns * samples * frames
    if bits_allocated == 1:
        return (pixels + 7) // 8
    return pixels * ((bits_allocated + 7) // 8)


_IMAGE_ATTRIBUTES = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated")


def _check_pixels(walk: _Walk, values: _Values, frames: int | None, native: bool) -> None:
    """Native Pixel Data must hold exactly what the image attributes describe.

    Where those attributes are missing or invalid the length cannot be judged: the
    instance is kept, with a remark. NumberOfFrames 0 over exactly one frame is kept too
    (issue 7: storescp and Orthanc store it; recorded when the study closes); over any
    other length it is refused like any wrong length."""
    for keyword, length in sorted(walk.pixel_lengths.items()):
        if length is None:
            if native:
                raise _unreadable(f"{keyword} encapsulated in a native transfer syntax")
            continue
        if not native:
            continue
        image = {name: values.ushort(name) for name in _IMAGE_ATTRIBUTES}
        unusable = [name for name, value in image.items() if not value]
        if frames is None and not values.empty("NumberOfFrames"):
            unusable.append("NumberOfFrames")
        if unusable:
            values.remarks.append(f"{keyword} length not checked: {', '.join(unusable)} "
                                  "missing or invalid")
            continue
        expected = expected_pixel_length(
            image["Rows"], image["Columns"], image["SamplesPerPixel"], image["BitsAllocated"],
            frames or 1, values.text("PhotometricInterpretation"),
        )
        if length != expected and not (expected % 2 == 1 and length == expected + 1):
            raise _mismatch(f"{keyword} length does not match the image attributes")


def _expected_attributes(values: _Values) -> None:
    """Absent Type 1/2 and empty Type 1 attributes (and an empty PatientID) as remarks."""
    for keyword, kind in _EXPECTED_TYPE.items():
        if not values.present(keyword):
            values.remarks.append(f"{keyword} missing")
        elif values.empty(keyword) and (kind == 1 or keyword == "PatientID"):
            values.remarks.append(f"{keyword} empty")


def _class_remarks(sop_class: str, syntax: str, walk: _Walk) -> list[str]:
    """What is unusual about the SOP class and transfer syntax (accepted all the same)."""
    remarks = []
    cls, ts = UID(sop_class), UID(syntax)
    if cls.is_private:
        remarks.append(f"private SOP class {cls}")
    elif cls.type != "SOP Class":
        remarks.append(f"SOP class unknown to the box {cls}")
    elif cls.is_retired:
        remarks.append(f"retired SOP class: {cls.name}")
    if ts.type != "Transfer Syntax":
        remarks.append(f"transfer syntax unknown to the box {ts}")
    elif ts.is_retired:
        remarks.append(f"retired transfer syntax: {ts.name}")
    if not walk.pixel_lengths:
        remarks.append(f"no pixel data ({cls.name if cls.type == 'SOP Class' else 'SOP class'})")
    return remarks


def _header(walk: _Walk, enc: _Enc, syntax: str, offset: int) -> InstanceHeader:
    values = _Values(walk.values, enc, walk.remarks)
    uids = {keyword: values.uid(keyword) for keyword in _REQUIRED_UIDS}
    series_uid = values.optional_uid("SeriesInstanceUID")
    _expected_attributes(values)
    frames = values.count("NumberOfFrames")
    _check_pixels(walk, values, frames, syntax in _NATIVE_SYNTAXES)
    remarks = [*values.remarks, *_class_remarks(uids["SOPClassUID"], syntax, walk)]
    return InstanceHeader(
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_uid=uids["StudyInstanceUID"],
        series_uid=series_uid,
        transfer_syntax=syntax,
        patient_id=values.text("PatientID"),
        patient_name=values.person_name("PatientName"),
        accession=values.text("AccessionNumber"),
        modality=values.text("Modality"),
        study_description=values.text("StudyDescription"),
        station_name=values.text("StationName"),
        instance_number=values.integer("InstanceNumber"),
        images_in_acquisition=values.integer("ImagesInAcquisition"),
        number_of_frames=frames,
        series_number=values.integer("SeriesNumber"),
        dataset_offset=offset,
        remarks=tuple(dict.fromkeys(remarks)),
    )


def _encoding_of(syntax: str) -> _Enc:
    if syntax == ImplicitVRLittleEndian:
        return _IMPLICIT_LE
    if syntax == ExplicitVRBigEndian:
        return _Enc(implicit=False, little=False)
    return _EXPLICIT_LE  # every other transfer syntax is explicit VR little endian


def read_header(path: Path, *, command_sop_class: str, command_sop_instance: str) -> InstanceHeader:
    """Read and check the header of the received Part 10 file at `path`.

    Raises InvalidDataset (with the status to answer) only if the instance cannot be kept
    faithfully; anything else imperfect comes back in `remarks`.
    """
    with open(path, "rb") as fp:
        size = fp.seek(0, 2)
        fp.seek(0)
        syntax, offset = _read_meta(fp, size)
        if offset >= size:
            raise _unreadable("empty data set")
        enc = _encoding_of(syntax)
        src: _Source = _InflateSource(fp) if syntax in _DEFLATED_SYNTAXES else _FileSource(fp, size)
        try:
            walk = _walk(src, enc)
        except zlib.error:
            raise _unreadable("deflated data set corrupt") from None
    if syntax == DeflatedExplicitVRLittleEndian and (size - offset) % 2:
        walk.remarks.append("deflated data set of odd length (padded by one byte when sent)")
    header = _header(walk, enc, syntax, offset)
    if header.sop_class_uid != command_sop_class.rstrip("\x00 "):
        raise _mismatch("SOPClassUID differs from the C-STORE command")
    if header.sop_instance_uid != command_sop_instance.rstrip("\x00 "):
        raise _mismatch("SOPInstanceUID differs from the C-STORE command")
    return header


# --- study completeness ------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceFacts:
    """What the store keeps per instance, for completeness findings."""

    series_uid: str
    series_number: int | None
    instance_number: int | None
    images_in_acquisition: int | None
    number_of_frames: int | None
    remarks: tuple[str, ...] = ()  # InstanceHeader.remarks


_LISTED = 5  # how many instance numbers a finding lists before "..."


def _listing(numbers: Sequence[str]) -> str:
    shown = ", ".join(numbers[:_LISTED])
    return f"{shown}, ..." if len(numbers) > _LISTED else shown


def _series_labels(series: dict[str, list[InstanceFacts]]) -> list[tuple[str, str]]:
    """(series UID, label) in a fixed order; labels never show a UID."""

    def number(uid: str) -> int | None:
        numbers = [f.series_number for f in series[uid] if f.series_number is not None]
        return min(numbers) if numbers else None

    order = sorted(series, key=lambda uid: (number(uid) is None, number(uid) or 0, uid))
    shared = Counter(number(uid) for uid in order if number(uid) is not None)
    seen: Counter[int] = Counter()
    labels = []
    for position, uid in enumerate(order, start=1):
        n = number(uid)
        if n is None:
            labels.append((uid, f"series #{position} (unnumbered)"))
        elif shared[n] > 1:
            seen[n] += 1
            labels.append((uid, f"series {n} ({seen[n]} of {shared[n]})"))
        else:
            labels.append((uid, f"series {n}"))
    return labels


def _gap_finding(label: str, numbers: set[int]) -> str | None:
    if not numbers:
        return None
    low, high = min(numbers), max(numbers)
    missing_count = high - low + 1 - len(numbers)
    if missing_count == 0:
        return None
    missing: list[str] = []
    for n in range(low, high + 1):
        if n not in numbers:
            missing.append(str(n))
            if len(missing) > _LISTED:
                break
    return f"{label}: instance numbers {low}-{high}, {missing_count} missing ({_listing(missing)})"


def _duplicate_finding(label: str, counts: Counter[int]) -> str | None:
    duplicated = sorted(n for n, c in counts.items() if c > 1)
    if not duplicated:
        return None
    items = [f"{n} x{counts[n]}" for n in duplicated]
    return f"{label}: duplicate instance numbers ({_listing(items)})"


def _acquisition_finding(label: str, facts: list[InstanceFacts]) -> str | None:
    declared = sorted(
        {f.images_in_acquisition for f in facts if f.images_in_acquisition is not None}
    )
    wrong = [d for d in declared if d != len(facts)]
    if not wrong:
        return None
    said = "/".join(str(d) for d in wrong)
    return f"{label}: ImagesInAcquisition says {said}, {len(facts)} instances received"


def _frame_findings(label: str, facts: list[InstanceFacts]) -> list[str]:
    findings = []
    zero = sum(1 for f in facts if f.number_of_frames == 0)
    if zero:
        findings.append(f"{label}: {zero} instance(s) with NumberOfFrames 0")
    return findings


def _remark_findings(instances: Iterable[InstanceFacts]) -> list[str]:
    """Each instance remark once, with how many instances have it, most frequent first."""
    counts = Counter(remark for facts in instances for remark in facts.remarks)
    return [f"{n} instance(s): {remark}"
            for remark, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def study_findings(instances: Iterable[InstanceFacts]) -> list[str]:
    """Completeness remarks about one study, then the remarks its instances were accepted
    with, in a fixed order; no patient data, no instance, series or study UIDs."""
    instances = list(instances)
    series: dict[str, list[InstanceFacts]] = defaultdict(list)
    for facts in instances:
        series[facts.series_uid].append(facts)
    findings: list[str] = []
    for uid, label in _series_labels(series):
        facts = series[uid]
        counts = Counter(f.instance_number for f in facts if f.instance_number is not None)
        candidates = [
            _gap_finding(label, set(counts)),
            _duplicate_finding(label, counts),
            _acquisition_finding(label, facts),
        ]
        findings.extend(f for f in candidates if f is not None)
        findings.extend(_frame_findings(label, facts))
    return findings + _remark_findings(instances)
