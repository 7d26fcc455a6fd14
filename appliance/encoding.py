"""The transfer syntax an instance travels in (PRODUCT.md: compressed data is sent as the
modality sent it; uncompressed data may change only its encoding, or be compressed
losslessly where a destination's `transfer_syntaxes` asks for it).

Preference per instance: the destination's configured syntaxes (only for uncompressed
data, and only up to IN_MEMORY_MAX_BYTES, since compressing loads the instance), then
the stored syntax as is, then any other uncompressed encoding of the same values: all of
them up to IN_MEMORY_MAX_BYTES, beyond that only Explicit to Implicit VR Little Endian,
which is streamed (appliance.transcode) and which every PACS must accept. So memory
stays bounded whatever the instance's size (issue 11, part 2).

Explicit VR Big Endian goes to a PACS that does not accept it in a little endian syntax
(issue 7, found by the interoperability matrix): pydicom decodes the numbers, and the
words of OW, OL, OF, OD and OV values are swapped here (pydicom and pynetdicom refuse
to change byte order themselves); an instance holding a UN value, whose words the box
cannot know, is not converted.
"""

from __future__ import annotations

import array
from pathlib import Path

import pydicom.uid
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from appliance import transcode

# Syntaxes that differ only in encoding: converting among them changes no value.
UNCOMPRESSED = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
# pydicom holds an instance it converts or compresses several times over: 64 MiB keeps
# that near 200 MB.
IN_MEMORY_MAX_BYTES = 64 * 1024 * 1024
COMPRESS_MAX_BYTES = IN_MEMORY_MAX_BYTES
# Word sizes of the binary VRs whose byte order follows the transfer syntax (PS3.5 7.3),
# as array typecodes of unsigned integers (floats are swapped as bits, never decoded).
_WORDS = {"OW": "H", "OL": "I", "OF": "I", "OD": "Q", "OV": "Q"}


class CannotEncode(Exception):
    """The instance cannot be put in the wanted syntax (codec missing, pixel format)."""


def configured(keywords: tuple[str, ...]) -> list[str]:
    """Config keywords ("JPEGLSLossless") as UIDs."""
    return [str(getattr(pydicom.uid, keyword)) for keyword in keywords]


def wire_syntaxes(stored: str, preferred: list[str], size_bytes: int) -> list[str]:
    """The syntaxes an instance may travel in, best first."""
    if stored not in UNCOMPRESSED:
        return [stored]
    if size_bytes > IN_MEMORY_MAX_BYTES:
        return [stored, ImplicitVRLittleEndian] if stored == ExplicitVRLittleEndian else [stored]
    out = [*preferred, stored, *UNCOMPRESSED]
    return list(dict.fromkeys(out))


def proposals(pairs: list[tuple[str, str]], preferred: list[str]) -> list[tuple[str, list[str]]]:
    """Presentation contexts for (SOP class, stored syntax) pairs: one per syntax the
    instance may travel in (so the PACS can accept each on its own), and one offering every
    uncompressed encoding, for a PACS that accepts only one of them."""
    contexts: dict[tuple[str, tuple[str, ...]], None] = {}
    for sop_class, stored in pairs:
        for ts in wire_syntaxes(stored, preferred, 0)[: len(preferred) + 1]:
            contexts[(sop_class, (ts,))] = None
        if stored in UNCOMPRESSED:
            contexts[(sop_class, UNCOMPRESSED)] = None
    return [(sop_class, list(syntaxes)) for sop_class, syntaxes in contexts]


def pad_deflated(path: Path, stored: str) -> bool:
    """Give a deflated data set of odd length its trailing pad byte (PS3.5 A.5: the deflated
    stream is padded to even length; PS3.8 P-DATA fragments are even). Some senders omit it
    (GDCM's gdcmscu, found by the interoperability matrix, issue 11) and DCMTK-based PACS
    then abort the association on every try. Inflating ignores the byte: no value changes.
    `path` is a Part 10 file, whose file meta is always of even length. True if padded."""
    if stored != DeflatedExplicitVRLittleEndian or path.stat().st_size % 2 == 0:
        return False
    with open(path, "ab") as fp:
        fp.write(b"\0")
    return True


def prepare(path: Path, stored: str, target: str) -> Path | Dataset:
    """What to hand to the sender: the file at `path` (a short-lived copy) streamed, as
    stored or rewritten from Explicit to Implicit VR Little Endian in pieces; or a dataset
    in `target` (loaded: another encoding change or a compression)."""
    if target == stored:
        return path
    if (stored, target) == (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        converted = path.with_name(path.name + ".implicit")
        try:
            transcode.explicit_to_implicit(path, converted)
            converted.replace(path)
        except transcode.CannotTranscode as exc:
            raise CannotEncode(f"{UID(target).name}: {exc}") from exc
        finally:
            converted.unlink(missing_ok=True)
        return path
    dataset = dcmread(path)
    if target in UNCOMPRESSED:
        if stored == ExplicitVRBigEndian:
            return to_little_endian(dataset, target)
        return dataset  # the sender re-encodes; values are untouched
    try:
        # Same instance, same values: it keeps its SOP Instance UID (pydicom makes a new
        # one unless told not to).
        dataset.compress(UID(target), generate_instance_uid=False)
    except Exception as exc:  # pydicom raises several types for unsupported data
        raise CannotEncode(f"{UID(target).name}: {type(exc).__name__}") from exc
    return dataset


def to_little_endian(dataset: Dataset, target: str) -> Dataset:
    """`dataset`, read from Explicit VR Big Endian, made ready to be written in the little
    endian syntax `target` with the same values; raises CannotEncode for a UN value or a
    binary value that is not whole words."""
    if target == ExplicitVRBigEndian:
        return dataset
    problems: list[str] = []

    def swap(_: Dataset, element) -> None:
        code = _WORDS.get(element.VR)
        if element.VR == "UN" and element.value:
            problems.append(f"{element.tag} has VR UN")
        elif code and isinstance(element.value, bytes) and element.value:
            words = array.array(code)
            if len(element.value) % words.itemsize:
                problems.append(f"{element.tag} is not whole {element.VR} words")
                return
            words.frombytes(element.value)
            words.byteswap()
            element.value = words.tobytes()

    dataset.walk(swap)
    if problems:
        raise CannotEncode(f"{UID(target).name}: {problems[0]}")
    _mark_encoding(dataset, UID(target).is_implicit_VR)
    dataset.file_meta.TransferSyntaxUID = UID(target)
    return dataset


def _mark_encoding(dataset: Dataset, implicit: bool) -> None:
    """Tell pydicom (and pynetdicom) the data set and its items are little endian now."""
    dataset.set_original_encoding(implicit, True)
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                _mark_encoding(item, implicit)
