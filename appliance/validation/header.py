"""Header integrity of a received instance.

`read_header` checks one Part 10 file as the receiver wrote it (preamble, file meta
from the C-STORE command, then the data set bytes as received). It walks the file
element by element and reads only the few values it needs: Pixel Data, sequences
and every other large value are skipped by seeking (or, for a deflated data set, by
inflating and discarding chunks), so memory stays small whatever the file size.

The box refuses only what it cannot keep faithfully (PRODUCT.md, Guarantees; issue 11).
Everything else is accepted and described by `remarks` on the header: short texts
(never a patient value, never an instance, series or study UID) that the store keeps per
instance and `study_findings` sums up per study, e.g. "2 instance(s): PatientID missing".

Failure statuses: see `appliance.validation.errors`.

I/O errors (the file cannot be opened or read) are the box's fault, not the data
set's: they propagate as `OSError` for the caller to answer as out of resources.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.charset import convert_encodings, decode_bytes, python_encoding
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import PN_DELIMS, TEXT_VR_DELIMS

from appliance.validation.elements import (
    EXPLICIT_LE,
    IMPLICIT_LE,
    Enc,
    FileSource,
    InflateSource,
    Readable,
    Source,
    Walk,
    is_valid_uid,
    read_meta,
    walk_elements,
)
from appliance.validation.errors import (
    mismatch,
    unreadable,
)

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


class _Values:
    """Decodes the raw header values kept by the walk; what is odd goes to `remarks`."""

    def __init__(self, raw: dict[str, bytes], enc: Enc, remarks: list[str]) -> None:
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
            raise mismatch(f"{keyword} missing")
        if not is_valid_uid(value):
            raise mismatch(f"{keyword} malformed")
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
        value: int = struct.unpack(self._enc.fmt + "H", raw)[0]
        return value


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


def _check_pixels(walk: Walk, values: _Values, frames: int | None, native: bool) -> None:
    """Native Pixel Data must hold exactly what the image attributes describe.

    Where those attributes are missing or invalid the length cannot be judged: the
    instance is kept, with a remark. NumberOfFrames 0 over exactly one frame is kept too
    (issue 7: storescp and Orthanc store it; recorded when the study closes); over any
    other length it is refused like any wrong length."""
    for keyword, length in sorted(walk.pixel_lengths.items()):
        if length is None:
            if native:
                raise unreadable(f"{keyword} encapsulated in a native transfer syntax")
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
        rows, columns, samples, bits = (image[name] or 0 for name in _IMAGE_ATTRIBUTES)
        expected = expected_pixel_length(rows, columns, samples, bits, frames or 1,
                                         values.text("PhotometricInterpretation"))
        if length != expected and not (expected % 2 == 1 and length == expected + 1):
            raise mismatch(f"{keyword} length does not match the image attributes")


def _expected_attributes(values: _Values) -> None:
    """Absent Type 1/2 and empty Type 1 attributes (and an empty PatientID) as remarks."""
    for keyword, kind in _EXPECTED_TYPE.items():
        if not values.present(keyword):
            values.remarks.append(f"{keyword} missing")
        elif values.empty(keyword) and (kind == 1 or keyword == "PatientID"):
            values.remarks.append(f"{keyword} empty")


def _class_remarks(sop_class: str, syntax: str, walk: Walk) -> list[str]:
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


def _header(walk: Walk, enc: Enc, syntax: str, offset: int) -> InstanceHeader:
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


def _encoding_of(syntax: str) -> Enc:
    if syntax == ImplicitVRLittleEndian:
        return IMPLICIT_LE
    if syntax == ExplicitVRBigEndian:
        return Enc(implicit=False, little=False)
    return EXPLICIT_LE  # every other transfer syntax is explicit VR little endian


def read_header(path: Path, *, command_sop_class: str, command_sop_instance: str) -> InstanceHeader:
    """Read and check the header of the received Part 10 file at `path`.

    Raises InvalidDataset (with the status to answer) only if the instance cannot be kept
    faithfully; anything else imperfect comes back in `remarks`.
    """
    with open(path, "rb") as fp:
        size = fp.seek(0, 2)
        fp.seek(0)
        return read_header_from(fp, size, command_sop_class=command_sop_class,
                                command_sop_instance=command_sop_instance)


def read_header_from(fp: Readable, size: int, *, command_sop_class: str,
                     command_sop_instance: str) -> InstanceHeader:
    """`read_header` of a Part 10 file of `size` bytes read from `fp` at its start (a
    plain file, or a blob decrypted as it is read: `crypto.DecryptedReader`)."""
    syntax, offset = read_meta(fp, size)
    if offset >= size:
        raise unreadable("empty data set")
    enc = _encoding_of(syntax)
    src: Source = InflateSource(fp) if syntax in _DEFLATED_SYNTAXES else FileSource(fp, size)
    try:
        walk = walk_elements(src, enc)
    except zlib.error:
        raise unreadable("deflated data set corrupt") from None
    if syntax == DeflatedExplicitVRLittleEndian and (size - offset) % 2:
        walk.remarks.append("deflated data set of odd length (padded by one byte when sent)")
    header = _header(walk, enc, syntax, offset)
    if header.sop_class_uid != command_sop_class.rstrip("\x00 "):
        raise mismatch("SOPClassUID differs from the C-STORE command")
    if header.sop_instance_uid != command_sop_instance.rstrip("\x00 "):
        raise mismatch("SOPInstanceUID differs from the C-STORE command")
    return header
