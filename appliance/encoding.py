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

import array
import contextlib
import copy
import ctypes
import functools
import io
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pydicom.uid
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import correct_ambiguous_vr, write_dataset, write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import BUFFERABLE_VRS

from appliance import transcode

# Syntaxes that differ only in encoding: converting among them changes no value.
UNCOMPRESSED = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
# pydicom holds an instance it converts or compresses two to three times over, on top of
# the box's 70 MB: 32 MiB keeps one such instance under the 200 MB bound (64 MiB took it
# to 265 MB; issue 7), and only one is loaded at a time (_LOADED).
IN_MEMORY_MAX_BYTES = 32 * 1024 * 1024
COMPRESS_MAX_BYTES = IN_MEMORY_MAX_BYTES
# One loaded instance at a time in the whole process, whatever the number of destinations,
# associations and the compressor ahead of time (issue 7): each holds several copies.
_LOADED = threading.BoundedSemaphore(1)
_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20
def _glibc() -> ctypes.CDLL | None:
    """The C library, if it is glibc (malloc_trim, mallopt)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()
BUFFERED_MIN_BYTES = 1 << 20


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


def prepare(path: Path, stored: str, target: str) -> Path:
    """`path`, a short-lived copy, in `target` (rewritten in place; the same path is
    returned): as it is; from Explicit to Implicit VR Little Endian in pieces; else loaded,
    converted or compressed and written again, by one thread of the process at a time
    (several copies of the instance are held meanwhile). Sent from the file afterwards,
    so a slow link holds no loaded instance. Raises CannotEncode; `path` is then as it was."""
    if target == stored:
        return path
    converted = path.with_name(path.name + ".converted")
    try:
        if (stored, target) == (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            try:
                transcode.explicit_to_implicit(path, converted)
            except transcode.CannotTranscode as exc:
                raise CannotEncode(f"{UID(target).name}: {exc}") from exc
        else:
            with _LOADED, open(converted, "wb") as out:
                _convert(dcmread(path), out, target)
        converted.replace(path)
    finally:
        converted.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def loaded() -> Iterator[None]:
    """Held while one instance is loaded whole (converted, compressed, or its converted
    bytes sent): one at a time in the process. On the way out the C allocator gives
    freed memory back (glibc keeps a freed large block in the arena of the thread that
    used it, so conversions on several associations' threads would add up)."""
    _fix_mmap_threshold()
    with _LOADED:
        try:
            yield
        finally:
            _give_back_memory()


def _give_back_memory() -> None:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


@functools.cache
def _fix_mmap_threshold() -> None:
    """Blocks of 1 MiB and more are mapped on their own and unmapped when freed. glibc
    otherwise raises this threshold to the size of each large block freed (up to 32 MiB),
    after which a loaded instance's values stay in the heap once freed."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def convert_in_memory(read: Callable[[], BinaryIO], target: str) -> memoryview:
    """The instance (`read()`: a whole Part 10 file in memory, at most
    IN_MEMORY_MAX_BYTES) converted or compressed to `target`, as a Part 10 file, all in
    memory; the caller holds `loaded()`. The file read is let go once parsed. Raises
    CannotEncode."""
    dataset = dcmread(read())
    dataset.buffer = None  # pydicom keeps its source; the values are read
    out = io.BytesIO()
    _convert(dataset, out, target)
    return out.getbuffer()


def _convert(dataset: Dataset, out: BinaryIO, target: str) -> None:
    if target in UNCOMPRESSED:
        _write_uncompressed(dataset, out, target)
        return
    try:
        # Same instance, same values: it keeps its SOP Instance UID (pydicom makes a new
        # one unless told not to).
        dataset.compress(UID(target), generate_instance_uid=False)
    except Exception as exc:  # pydicom raises several types for unsupported data
        raise CannotEncode(f"{UID(target).name}: {type(exc).__name__}") from exc
    dataset.save_as(out, enforce_file_format=True)


# Values pydicom keeps as bytes, by their word size: their byte order is the encoding's.
_WORD_BYTES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_ARRAY_CODES = {2: "H", 4: "I", 8: "Q"}


def _swap_words(dataset: Dataset, read_little: bool, target: str) -> None:
    """Swap the bytes of every OW, OF, OL, OD and OV value, sequences included (PS3.5
    7.3): pydicom re-encodes numbers (US, FL, ...) in the new byte order itself, but
    writes these as they were read. Raises CannotEncode, before changing anything, for a
    UN value (its byte order cannot be known) or a value that is not whole words."""
    correct_ambiguous_vr(dataset, read_little)  # "OB or OW" pixel data, by Bits Allocated
    for elem in dataset.iterall():
        size = _WORD_BYTES.get(elem.VR)
        if elem.VR == "UN" and elem.value:
            raise CannotEncode(f"{UID(target).name}: {elem.tag} has VR UN")
        if size and isinstance(elem.value, bytes) and len(elem.value) % size:
            raise CannotEncode(f"{UID(target).name}: {elem.tag} is not whole {elem.VR} words")
    for elem in dataset.iterall():
        size = _WORD_BYTES.get(elem.VR)
        if size and isinstance(elem.value, bytes):
            words = array.array(_ARRAY_CODES[size])
            words.frombytes(elem.value)
            elem.value = b""  # two copies of a large value at a time, not three
            words.byteswap()
            elem.value = words.tobytes()
            del words


def _write_uncompressed(dataset: Dataset, raw: BinaryIO, target: str) -> None:
    """`dataset` as a Part 10 file in the uncompressed `target`, its data set written as
    pynetdicom encodes one for sending (pydicom's `save_as` refuses to change the byte
    order), word values swapped when the byte order changes, deflated in memory (no
    plaintext file), padded to even length (PS3.5 A.5)."""
    read_little = dataset.original_encoding[1] is not False
    if read_little != (target != ExplicitVRBigEndian):
        _swap_words(dataset, read_little, target)
    meta = copy.deepcopy(dataset.file_meta)  # the data set's own says how it was read
    meta.TransferSyntaxUID = UID(target)
    raw.write(bytes(128) + b"DICM")
    write_file_meta_info(DicomFileLike(raw), meta, enforce_standard=True)
    if target != DeflatedExplicitVRLittleEndian:
        _write_data_set(raw, dataset, implicit=target == ImplicitVRLittleEndian,
                        little=target != ExplicitVRBigEndian)
        return
    plain = io.BytesIO()  # at most IN_MEMORY_MAX_BYTES: the source was that small
    _write_data_set(plain, dataset, implicit=False, little=True)
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    written = raw.write(deflater.compress(plain.getbuffer()))
    del plain
    written += raw.write(deflater.flush())
    if written % 2:
        raw.write(b"\0")


def _write_data_set(raw: BinaryIO, dataset: Dataset, *, implicit: bool, little: bool) -> None:
    """`dataset` written to `raw`; its large byte values (pixel data) as buffered values,
    which pydicom copies straight into `raw` instead of through two copies of its own."""
    for elem in dataset:
        if (elem.VR in BUFFERABLE_VRS and isinstance(elem.value, bytes)
                and len(elem.value) > BUFFERED_MIN_BYTES):
            elem.value = io.BytesIO(elem.value)  # shares the bytes, no copy
    fp = DicomFileLike(raw)
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, dataset)
