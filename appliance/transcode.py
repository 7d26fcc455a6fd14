"""Explicit VR Little Endian to Implicit VR Little Endian, streamed file to file.

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
from pathlib import Path
from typing import BinaryIO

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


class CannotTranscode(Exception):
    """The input is not well-formed Explicit VR Little Endian."""


def _read(src: BinaryIO, count: int) -> bytes:
    data = src.read(count)
    if len(data) != count:
        raise CannotTranscode("truncated data set")
    return data


def _header(dst: BinaryIO, tag: int, length: int) -> None:
    dst.write(_IMPLICIT_HEADER.pack(tag >> 16, tag & 0xFFFF, length))


def _copy(src: BinaryIO, dst: BinaryIO, length: int) -> None:
    while length:
        piece = _read(src, min(length, CHUNK_BYTES))
        dst.write(piece)
        length -= len(piece)


def _elements(src: BinaryIO, dst: BinaryIO, limit: int | None, top: bool = False) -> int:
    """Convert elements until `limit` bytes are consumed, an item delimiter (inside an
    item of undefined length) or, at the top level, the end of the file. Returns the
    bytes consumed."""
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
            _header(dst, tag, UNDEFINED)
            consumed += _sequence(src, dst, None if length == UNDEFINED else length)
            _header(dst, SEQUENCE_END, 0)
            continue
        if length == UNDEFINED:  # encapsulated pixel data or UN of undefined length
            raise CannotTranscode("a value of undefined length that is not a sequence")
        if element == 0 and group != 0x0002:  # a group length: retired, wrong after this
            src.seek(length, 1)
        else:
            _header(dst, tag, length)
            _copy(src, dst, length)
        consumed += length
    return consumed


def _sequence(src: BinaryIO, dst: BinaryIO, limit: int | None) -> int:
    consumed = 0
    while limit is None or consumed < limit:
        group, element, length = _IMPLICIT_HEADER.unpack(_read(src, 8))
        tag = group << 16 | element
        consumed += 8
        if tag == SEQUENCE_END:
            return consumed
        if tag != ITEM:
            raise CannotTranscode("a sequence holds something other than items")
        _header(dst, ITEM, UNDEFINED)
        consumed += _elements(src, dst, None if length == UNDEFINED else length)
        _header(dst, ITEM_END, 0)
    return consumed


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
        _elements(fin, fout, None, top=True)
    return dst
