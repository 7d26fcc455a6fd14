"""The transfer syntax an instance travels in (PRODUCT.md: compressed data is sent as the
modality sent it; uncompressed data may change only its encoding, or be compressed
losslessly where a destination's `transfer_syntaxes` asks for it).

Preference per instance: the destination's configured syntaxes (only for uncompressed
data, and only up to IN_MEMORY_MAX_BYTES, since compressing loads the instance), then
the stored syntax as is, then any other uncompressed encoding of the same values: all of
them up to IN_MEMORY_MAX_BYTES, beyond that only Explicit to Implicit VR Little Endian,
which is streamed (appliance.transcode) and which every PACS must accept. So memory
stays bounded whatever the instance's size (issue 11, part 2).
"""

from __future__ import annotations

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
        return dataset  # the sender re-encodes; values are untouched
    try:
        # Same instance, same values: it keeps its SOP Instance UID (pydicom makes a new
        # one unless told not to).
        dataset.compress(UID(target), generate_instance_uid=False)
    except Exception as exc:  # pydicom raises several types for unsupported data
        raise CannotEncode(f"{UID(target).name}: {type(exc).__name__}") from exc
    return dataset
