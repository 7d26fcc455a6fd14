"""Blob encryption: pushed piece by piece, read back with bounded memory."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.crypto import (
    CHUNK_BYTES,
    BlobCorrupt,
    DecryptedReader,
    StreamEncryptor,
    decrypt_stream,
    encrypt_stream,
)

KEY = bytes(range(32))


def _pushed(data: bytes, pieces: list[int]) -> bytes:
    sink = io.BytesIO()
    encryptor = StreamEncryptor(KEY, sink)
    at = 0
    for size in pieces:
        encryptor.write(data[at:at + size])
        at += size
    encryptor.write(data[at:])
    encryptor.close()
    return sink.getvalue()


@settings(max_examples=40, deadline=None)
@given(size=st.sampled_from([0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1,
                             3 * CHUNK_BYTES + 17]),
       pieces=st.lists(st.integers(1, 300_000), max_size=6))
def test_pushed_pieces_make_the_blob_encrypt_stream_makes(size, pieces):
    data = os.urandom(size)
    blob = _pushed(data, pieces)
    whole = io.BytesIO()
    encrypt_stream(KEY, io.BytesIO(data), whole)
    assert len(blob) == len(whole.getvalue())  # same chunking, so the same format
    assert b"".join(decrypt_stream(KEY, io.BytesIO(blob))) == data


def test_a_blob_cut_short_does_not_decrypt():
    blob = _pushed(os.urandom(2 * CHUNK_BYTES + 5), [])
    with pytest.raises(BlobCorrupt):
        b"".join(decrypt_stream(KEY, io.BytesIO(blob[:-1])))


def test_the_reader_seeks_forward_without_holding_what_it_skips():
    data = os.urandom(40 * CHUNK_BYTES + 3)
    reader = DecryptedReader(KEY, io.BytesIO(_pushed(data, [])))
    assert reader.read(10) == data[:10]
    reader.seek(len(data) - 100)
    assert len(reader._buffer) <= 2 * CHUNK_BYTES
    assert reader.read(200) == data[-100:]
    assert reader.tell() == len(data)


def test_the_reader_seeks_back_within_the_last_chunks():
    data = os.urandom(5 * CHUNK_BYTES)
    reader = DecryptedReader(KEY, io.BytesIO(_pushed(data, [])))
    reader.seek(3 * CHUNK_BYTES + 7)
    assert reader.read(5) == data[3 * CHUNK_BYTES + 7:3 * CHUNK_BYTES + 12]
    reader.seek(3 * CHUNK_BYTES + 2)
    assert reader.read(2) == data[3 * CHUNK_BYTES + 2:3 * CHUNK_BYTES + 4]
    with pytest.raises(ValueError):
        reader.seek(0)
