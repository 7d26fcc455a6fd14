"""The data set bytes of a stored instance as they go on the wire, never in a file.

A blob holds the Part 10 file as received: its plaintext is read as a stream
(`Store.open_plaintext`), the preamble and file meta are skipped, and the data set goes
out as it is stored; or, where the PACS takes another syntax, re-encoded from the stream
(Explicit to Implicit VR Little Endian, `appliance.transcode`, for an instance of any
size) or in memory (`encoding.convert_in_memory`, at most IN_MEMORY_MAX_BYTES, one at a
time in the process, held until sent). A deflated data set of odd length gets its pad
byte on the way (PS3.5 A.5).
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections.abc import Callable, Iterable, Iterator

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from appliance import encoding, transcode
from appliance.store import InstanceRecord, PlainStream

PREAMBLE = 128 + 4  # 128 bytes, then "DICM"
Piece = bytes | memoryview  # a piece of a data set on its way out
_LONG_VRS = transcode.LONG_VRS


class ChunkReader:
    """A readable stream (`read(n)`) over byte chunks, for the streamed re-encoding."""

    def __init__(self, chunks: Iterable[Piece]) -> None:
        self._chunks = iter(chunks)
        self._view = memoryview(b"")

    def read(self, count: int) -> bytes:
        out = []
        while count:
            if not self._view:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._view = memoryview(chunk)
            piece = self._view[:count]
            out.append(piece)
            self._view = self._view[len(piece):]
            count -= len(piece)
        return b"".join(out)


def data_set(part10: Iterable[Piece]) -> Iterator[Piece]:
    """The data set of a Part 10 file given as chunks: the preamble and every group 0002
    element skipped, the rest as it comes. Raises encoding.CannotEncode when the file
    meta cannot be walked."""
    chunks = iter(part10)
    head: Piece = b""
    offset = PREAMBLE

    def need(count: int) -> bool:
        nonlocal head
        while len(head) < count:
            chunk = next(chunks, None)
            if chunk is None:
                return False
            head = bytes(head) + bytes(chunk) if head else chunk
        return True

    if not need(PREAMBLE) or bytes(head[128:132]) != b"DICM":
        raise encoding.CannotEncode("the stored copy is not a Part 10 file")
    while need(offset + 8) and bytes(head[offset:offset + 2]) == b"\x02\x00":
        if bytes(head[offset + 4:offset + 6]) in _LONG_VRS:
            if not need(offset + 12):
                break
            offset += 12 + struct.unpack_from("<L", head, offset + 8)[0]
        else:
            offset += 8 + struct.unpack_from("<H", head, offset + 6)[0]
    if not need(offset):
        raise encoding.CannotEncode("the stored copy's file meta is truncated")
    if offset < len(head):
        yield memoryview(head)[offset:]
    yield from chunks


def padded(pieces: Iterable[Piece], syntax: str) -> Iterator[Piece]:
    """`pieces`, with one zero byte after them if `syntax` is deflated and their length
    is odd (gdcmscu sends such data sets; DCMTK-based PACS abort on them)."""
    length = 0
    for piece in pieces:
        length += len(piece)
        yield piece
    if syntax == DeflatedExplicitVRLittleEndian and length % 2:
        yield b"\0"


class Source:
    """Where one instance's plaintext comes from: its blob (or a variant's), opened as
    often as the tries need; a stream already read ahead is used first. Close after."""

    def __init__(self, record: InstanceRecord,
                 open_stream: Callable[[InstanceRecord], PlainStream],
                 ahead: PlainStream | None = None) -> None:
        self.record = record
        self._open = open_stream
        self._ahead = ahead
        self._opened: list[PlainStream] = []

    @property
    def syntax(self) -> str:
        return self.record.transfer_syntax

    def take(self) -> PlainStream:
        stream, self._ahead = self._ahead, None
        if stream is None:
            stream = self._open(self.record)
        self._opened.append(stream)
        return stream

    def close(self) -> None:
        for stream in self._opened:
            stream.close()
        if self._ahead is not None:
            self._ahead.close()


@contextlib.contextmanager
def outgoing(source: Source, candidates: list[str]) -> Iterator[tuple[str, Iterator[Piece]]]:
    """The first of `candidates` (best first) the instance can be put in, and its data set
    bytes in that syntax. Raises encoding.CannotEncode, with every try's reason."""
    problems = []
    for target in candidates:
        if target == source.syntax:
            yield target, padded(data_set(source.take()), target)
            return
        if (source.syntax, target) == (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            problem = _transcode_problem(source.take())
            if problem is None:
                yield target, transcode.implicit_pieces(ChunkReader(data_set(source.take())))
                return
            problems.append(f"{UID(target).name}: {problem}")
            continue
        with encoding.loaded():  # held until sent: one loaded instance in the process
            try:
                converted = encoding.convert_in_memory(lambda: _whole(source.take()), target)
            except encoding.CannotEncode as exc:
                problems.append(str(exc))
                continue
            yield target, data_set([converted])
            return
    raise encoding.CannotEncode("cannot encode for this PACS: " + "; ".join(problems))


def _transcode_problem(stream: PlainStream) -> str | None:
    """Why the streamed re-encoding would fail part way, found before anything is sent
    (a dry run over the decrypted stream, nothing kept)."""
    try:
        for _ in transcode.implicit_pieces(ChunkReader(data_set(stream))):
            pass
    except transcode.CannotTranscode as exc:
        return str(exc)
    finally:
        stream.close()
    return None


def _whole(stream: PlainStream) -> io.BytesIO:
    """An instance of at most IN_MEMORY_MAX_BYTES, read whole for a conversion."""
    return io.BytesIO(b"".join(stream))  # shares the joined bytes
