"""Encryption of blobs and index values, and keyed hashes of UIDs.

Blobs use libsodium's secretstream (XChaCha20-Poly1305) in fixed-size chunks,
so an instance of any size is encrypted and decrypted with bounded memory and a
truncated or altered blob fails to decrypt. Index values use SecretBox. Each
purpose gets its own subkey derived from the one data key.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

import nacl.bindings as sodium
import nacl.secret

CHUNK_BYTES = 256 * 1024
BLOB_MAGIC = b"FLXB\x01"
_LEN = struct.Struct(">I")
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL


class BlobCorrupt(Exception):
    """A blob failed authentication, was truncated, or is not a blob at all."""


def derive_subkey(data_key: bytes, purpose: bytes) -> bytes:
    return hashlib.blake2b(b"", key=data_key, person=purpose.ljust(16, b"\0")[:16]).digest()[:32]


class Keys:
    """The subkeys of one data key: blob stream key, index box, UID hash key."""

    def __init__(self, data_key: bytes) -> None:
        self.blob_key = derive_subkey(data_key, b"fluxbox-blob")
        self._index_box = nacl.secret.SecretBox(derive_subkey(data_key, b"fluxbox-index"))
        self._uid_key = derive_subkey(data_key, b"fluxbox-uid")

    def uid_hash(self, uid: str) -> bytes:
        """A 16-byte keyed hash: stable for one data key, meaningless without it."""
        return hashlib.blake2b(uid.encode(), key=self._uid_key, digest_size=16).digest()

    def seal(self, plaintext: bytes) -> bytes:
        return bytes(self._index_box.encrypt(plaintext))

    def open(self, sealed: bytes) -> bytes:
        try:
            return self._index_box.decrypt(sealed)
        except nacl.exceptions.CryptoError as exc:
            raise BlobCorrupt("index value failed authentication") from exc


def encrypt_stream(key: bytes, source: BinaryIO, sink: BinaryIO, *,
                   feed: Callable[[bytes], object] | None = None) -> int:
    """Encrypt all of `source` into `sink`; returns plaintext bytes.

    `feed`, when given, is called with every plaintext chunk (for digests).
    """
    encryptor = StreamEncryptor(key, sink)
    total = 0
    while chunk := source.read(CHUNK_BYTES):
        if feed is not None:
            feed(chunk)
        encryptor.write(chunk)
        total += len(chunk)
    encryptor.close()
    return total


def decrypt_stream(key: bytes, source: BinaryIO) -> Iterator[bytes]:
    """Yield the plaintext chunks of a blob; raises BlobCorrupt on any defect."""
    head = source.read(len(BLOB_MAGIC) + sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES)
    if not head.startswith(BLOB_MAGIC) or len(head) != 29:
        raise BlobCorrupt("not a blob")
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, head[len(BLOB_MAGIC):], key)
    while True:
        raw_len = source.read(_LEN.size)
        if len(raw_len) != _LEN.size:
            raise BlobCorrupt("blob truncated")
        (length,) = _LEN.unpack(raw_len)
        sealed = source.read(length)
        if len(sealed) != length:
            raise BlobCorrupt("blob truncated")
        try:
            chunk, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, sealed)
        except Exception as exc:  # nacl raises several types for a bad tag
            raise BlobCorrupt("blob failed authentication") from exc
        yield chunk
        if tag == _TAG_FINAL:
            return


class StreamEncryptor:
    """`encrypt_stream` for data pushed piece by piece: the same blob format, written to
    `sink` as the pieces come (a C-STORE data set as it arrives, never in clear on disk)."""

    def __init__(self, key: bytes, sink: BinaryIO) -> None:
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        self._sink = sink
        self._sink.write(BLOB_MAGIC + header)
        self._pending = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._pending += data
        # A full chunk stays pending until more comes: the last chunk carries the final tag.
        while len(self._pending) > CHUNK_BYTES:
            chunk = bytes(self._pending[:CHUNK_BYTES])
            del self._pending[:CHUNK_BYTES]
            self._push(chunk, _TAG_MESSAGE)

    def close(self) -> None:
        """Push the final chunk (the sink stays open, for the caller to sync)."""
        if not self.closed:
            self._push(bytes(self._pending), _TAG_FINAL)
            self._pending = bytearray()
            self.closed = True

    def _push(self, chunk: bytes, tag: int) -> None:
        sealed = sodium.crypto_secretstream_xchacha20poly1305_push(self._state, chunk, tag=tag)
        self._sink.write(_LEN.pack(len(sealed)) + sealed)


class DecryptedReader:
    """A blob's plaintext as a read-only file: `read`, `tell`, and `seek` forward (by
    decrypting and dropping) or back within the last two chunks. Memory: two chunks."""

    def __init__(self, key: bytes, source: BinaryIO) -> None:
        self._source = source  # closed with the reader
        self._chunks = decrypt_stream(key, source)
        self._buffer = bytearray()
        self._base = 0  # plaintext offset of _buffer[0]
        self._pos = 0
        self._done = False

    def _more(self) -> bool:
        if self._done:
            return False
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._done = True
            return False
        keep_from = max(0, min(self._pos - self._base, len(self._buffer) - CHUNK_BYTES))
        del self._buffer[:keep_from]
        self._base += keep_from
        self._buffer += chunk
        return True

    def read(self, n: int = -1) -> bytes:
        while n < 0 or self._pos + n > self._base + len(self._buffer):
            if not self._more():
                break
        start = self._pos - self._base
        data = bytes(self._buffer[start:] if n < 0 else self._buffer[start:start + n])
        self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0:
            raise ValueError("DecryptedReader seeks from the start only")
        if offset < self._base:
            raise ValueError("DecryptedReader cannot seek that far back")
        self._pos = offset  # first, so that `_more` drops what is skipped
        while offset > self._base + len(self._buffer) and self._more():
            pass
        self._pos = min(offset, self._base + len(self._buffer))
        return self._pos

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> DecryptedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
