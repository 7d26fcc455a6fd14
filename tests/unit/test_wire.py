"""The data set bytes of a stored instance on their way out, from decrypted chunks cut
anywhere (the blob's 256 KiB chunks never line up with the file meta or a value)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from appliance.delivery.cstore import PRIORITY, _command_set, _fragments
from appliance.delivery.wire import ChunkReader, data_set, padded
from appliance.encoding import CannotEncode
from appliance.transcode import dataset_offset, explicit_to_implicit, implicit_pieces


def _cut(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 7, 131, 132, 133, 200, 4096, 1 << 20])
def test_the_data_set_is_what_follows_the_file_meta_however_the_chunks_fall(size):
    path = Path(get_testdata_file("CT_small.dcm"))
    raw = path.read_bytes()
    assert b"".join(data_set(_cut(raw, size))) == raw[dataset_offset(path):]


def test_a_file_that_is_not_part_10_is_refused_before_anything_is_sent():
    with pytest.raises(CannotEncode):
        next(data_set([b"\0" * 200]))
    with pytest.raises(CannotEncode):
        next(data_set([bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\x40\x00"]))  # cut short


def test_a_deflated_data_set_of_odd_length_gets_one_pad_byte_and_no_other_does():
    assert b"".join(padded([b"abc"], DeflatedExplicitVRLittleEndian)) == b"abc\0"
    assert b"".join(padded([b"ab", b"cd"], DeflatedExplicitVRLittleEndian)) == b"abcd"
    assert b"".join(padded([b"abc"], ExplicitVRLittleEndian)) == b"abc"


def test_streamed_implicit_pieces_equal_the_file_to_file_conversion(tmp_path):
    src = tmp_path / "in.dcm"
    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(src, enforce_file_format=True)
    out = explicit_to_implicit(src, tmp_path / "out.dcm")
    streamed = b"".join(implicit_pieces(ChunkReader(data_set(_cut(src.read_bytes(), 97)))))
    assert streamed == out.read_bytes()[dataset_offset(out):]


@pytest.mark.parametrize("total", [1, 9, 10, 11, 95])
def test_fragments_are_full_but_the_last_and_keep_every_byte(total):
    data = bytes(range(total))
    fragments = list(_fragments(_cut(data, 3), 10))
    assert all(len(f) == 11 for f in fragments[:-1]) and 1 < len(fragments[-1]) <= 11
    assert b"".join(bytes(f[1:]) for f in fragments) == data


@pytest.mark.parametrize("uids", [("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5"),
                                  ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4.56")])
def test_the_command_set_is_the_one_pynetdicom_encodes(uids):
    primitive = C_STORE()
    primitive.MessageID, primitive.Priority = 7, PRIORITY
    primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID = uids
    primitive.DataSet = BytesIO(b"\0\0")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    assert _command_set(7, *uids) == encode(message.command_set, True, True)
