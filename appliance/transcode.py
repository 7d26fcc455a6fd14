"""Explicit VR Little Endian to Implicit VR Little Endian, streamed (file to file, or a data
set read from any stream to pieces the caller sends on).

Implicit VR Little Endian is the one transfer syntax every storage SCP must accept
(PS3.5 10.1), so an uncompressed instance of any size can reach any PACS this way with
the box's memory bounded (issue 11, part 2): values are copied in pieces, byte for byte
(both syntaxes are little endian); only element headers change. Sequences and items are
written with undefined length and delimiters, so nothing has to be measured first.
Group lengths (gggg,0000) of the data set, retired and wrong once headers shrink, are
left out.
"""

from __future__ import annotations

import struct
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Protocol

from pydicom.filebase import DicomFileLike
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ImplicitVRLittleEndian

CHUNK_BYTES = 1 << 20
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                      b"UR", b"UT", b"UV"})
UNDEFINED = 0xFFFF_FFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFE_E000, 0xFFFE_E00D, 0xFFFE_E0DD
_TAG = struct.Struct("<HH")
_IMPLICIT_HEADER = struct.Struct("<HHL")
# Output pieces, and (as the generator's return value) the input bytes consumed.
Pieces = Generator[bytes, None, int]


class Readable(Protocol):
    """Where the input comes from: a file, or any stream that reads like one."""

    def read(self, count: int, /) -> bytes: ...


class CannotTranscode(Exception):
    """The input is not well-formed Explicit VR Little Endian."""


def _read(src: Readable, count: int) -> bytes:
    data = src.read(count)
    if len(data) != count:
        raise CannotTranscode("truncated data set")
    return data


def _header(tag: int, length: int) -> bytes:
    return _IMPLICIT_HEADER.pack(tag >> 16, tag & 0xFFFF, length)


def _copy(src: Readable, length: int) -> Iterator[bytes]:
    while length:
        piece = _read(src, min(length, CHUNK_BYTES))
        yield piece
        length -= len(piece)


def _elements(src: Readable, limit: int | None, top: bool = False) -> Pieces:
    """Convert elements until `limit` bytes are consumed, an item delimiter (inside an
    item of undefined length) or, at the top level, the end of the input. Yields the
    output; returns the bytes consumed."""
    consumed = 0
    while limit is None or consumed < limit:
        head = src.read(8)
        if not head and top:
            return consumed
        if len(head) != 8:
            raise CannotTranscode("truncated data set")
        group, element = _TAG.unpack(head[:4])
        tag = group << 16 | element
        consumed += 8
        if tag == ITEM_END:
            return consumed
        vr = head[4:6]
        if vr in LONG_VRS:
            (length,) = struct.unpack("<L", _read(src, 4))
            consumed += 4
        else:
            (length,) = struct.unpack("<H", head[6:8])
        if vr == b"SQ":
            yield _header(tag, UNDEFINED)
            consumed += yield from _sequence(src, None if length == UNDEFINED else length)
            yield _header(SEQUENCE_END, 0)
            continue
        if length == UNDEFINED:  # encapsulated pixel data or UN of undefined length
            raise CannotTranscode("a value of undefined length that is not a sequence")
        if element == 0 and group != 0x0002:  # a group length: retired, wrong after this
            for _ in _copy(src, length):
                pass
        else:
            yield _header(tag, length)
            yield from _copy(src, length)
        consumed += length
    return consumed


def _sequence(src: Readable, limit: int | None) -> Pieces:
    consumed = 0
    while limit is None or consumed < limit:
        group, element, length = _IMPLICIT_HEADER.unpack(_read(src, 8))
        tag = group << 16 | element
        consumed += 8
        if tag == SEQUENCE_END:
            return consumed
        if tag != ITEM:
            raise CannotTranscode("a sequence holds something other than items")
        yield _header(ITEM, UNDEFINED)
        consumed += yield from _elements(src, None if length == UNDEFINED else length)
        yield _header(ITEM_END, 0)
    return consumed


def implicit_pieces(src: Readable) -> Iterator[bytes]:
    """The data set read from `src` (Explicit VR Little Endian, from its first element to
    the end) in Implicit VR Little Endian, as pieces of at most CHUNK_BYTES; raises
    CannotTranscode, possibly after some pieces."""
    yield from _elements(src, None, top=True)


def dataset_offset(path: Path) -> int:
    """Where the data set starts in a Part 10 file (after preamble and file meta)."""
    with open(path, "rb") as f:
        f.seek(128 + 4 + 8)
        return 128 + 4 + 12 + int.from_bytes(_read(f, 4), "little")


def explicit_to_implicit(src: Path, dst: Path) -> Path:
    """Write `src` (Part 10, Explicit VR Little Endian) to `dst` in Implicit VR Little
    Endian, holding at most CHUNK_BYTES of it in memory; raises CannotTranscode."""
    meta = read_file_meta_info(src)
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fin.seek(dataset_offset(src))
        fout.write(b"\x00" * 128 + b"DICM")
        meta_out = DicomFileLike(fout)
        meta_out.is_little_endian, meta_out.is_implicit_VR = True, False
        write_file_meta_info(meta_out, meta, enforce_standard=True)
        for piece in implicit_pieces(fin):
            fout.write(piece)
    return dst
