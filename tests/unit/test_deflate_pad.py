"""The wire encoding of stored instances."""

from __future__ import annotations

import zlib
from io import BytesIO

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom.dsutils import create_file_meta

from appliance.encoding import pad_deflated


def _odd_deflated(tmp_path):
    """A deflated Part 10 file whose deflated stream has odd length and no pad byte."""
    path = tmp_path / "odd.dcm"
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    dataset = raw[144 + int.from_bytes(raw[140:144], "little"):]
    for level in range(1, 10):  # some level gives an odd length
        z = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        stream = z.compress(dataset) + z.flush()
        if len(stream) % 2:
            break
    meta = BytesIO()
    write_file_meta_info(meta, create_file_meta(
        sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax=DeflatedExplicitVRLittleEndian))
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + stream)
    return path


def test_an_odd_deflated_data_set_gets_its_pad_byte_and_keeps_every_value(tmp_path):
    """Issue 11: gdcmscu sends deflated data sets of odd length; DCMTK PACS abort on them."""
    path = _odd_deflated(tmp_path)
    before = dcmread(path)
    assert path.stat().st_size % 2 == 1
    assert pad_deflated(path, DeflatedExplicitVRLittleEndian)
    assert path.stat().st_size % 2 == 0
    after = dcmread(BytesIO(path.read_bytes()))
    assert [(e.tag, e.value) for e in after] == [(e.tag, e.value) for e in before]
    assert not pad_deflated(path, DeflatedExplicitVRLittleEndian)  # once is enough


def test_other_syntaxes_are_never_padded(tmp_path):
    path = tmp_path / "odd.bin"
    path.write_bytes(b"x" * 301)
    assert not pad_deflated(path, ExplicitVRLittleEndian)
    assert path.stat().st_size == 301
