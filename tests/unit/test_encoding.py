"""Which syntaxes an instance may travel in (issue 11, part 2: memory bounded whatever
its size: beyond IN_MEMORY_MAX_BYTES only what is streamed)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
)

from appliance.encoding import (
    IN_MEMORY_MAX_BYTES,
    UNCOMPRESSED,
    CannotEncode,
    prepare,
    wire_syntaxes,
)

BIG = IN_MEMORY_MAX_BYTES + 1


def test_a_small_uncompressed_instance_may_be_compressed_or_reencoded():
    syntaxes = wire_syntaxes(ExplicitVRLittleEndian, [JPEGLSLossless], 1000)
    assert syntaxes[:2] == [JPEGLSLossless, ExplicitVRLittleEndian]
    assert set(syntaxes[1:]) == set(UNCOMPRESSED)


def test_a_large_explicit_instance_travels_as_stored_or_streamed_to_implicit():
    assert wire_syntaxes(ExplicitVRLittleEndian, [JPEGLSLossless], BIG) == [
        ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def test_other_large_instances_travel_only_as_stored():
    for stored in (ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
        assert wire_syntaxes(stored, [JPEGLSLossless], BIG) == [stored]


def test_compressed_instances_always_travel_as_stored():
    assert wire_syntaxes(JPEGLSLossless, [], 1000) == [JPEGLSLossless]


def _values(ds) -> dict:
    return {elem.tag: [_values(item) for item in elem.value] if elem.VR == "SQ"
            else elem.value for elem in ds if elem.tag != 0x7FE00010}


@pytest.mark.parametrize("target", UNCOMPRESSED, ids=lambda ts: UID(ts).name)
@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_implicit.dcm",
                                  "image_dfl.dcm", "MR_small.dcm"])
def test_an_encoding_change_keeps_every_value(tmp_path, name, target):
    # Issue 7: Big Endian and Implicit instances reached an Explicit-only PACS as nothing
    # (pynetdicom looked for a context of the stored syntax); the file is now rewritten.
    source = Path(get_testdata_file(name))
    copy = tmp_path / name
    shutil.copyfile(source, copy)
    stored = str(dcmread(source).file_meta.TransferSyntaxUID)
    assert prepare(copy, stored, target) == copy
    got, expected = dcmread(copy), dcmread(source)
    assert got.file_meta.TransferSyntaxUID == target
    assert _values(got) == _values(expected)
    assert (got.pixel_array == expected.pixel_array).all()
    if target == DeflatedExplicitVRLittleEndian != stored:
        assert copy.stat().st_size % 2 == 0


def test_big_endian_words_of_every_binary_vr_are_swapped_and_a_un_value_refused(tmp_path):
    # Issue 7: a PACS taking no Big Endian got nothing; floats and words nested in
    # sequences must come out little endian, and a UN value (of unknown byte order) is
    # refused rather than sent wrong.
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4"
    ds.add_new(0x00720067, "OF", struct.pack(">2f", 1.5, -2.25))
    ds.add_new(0x00660040, "OL", struct.pack(">2L", 1, 0x01020304))
    ds.ReferencedImageSequence = [Dataset()]
    ds.ReferencedImageSequence[0].add_new(0x00089459, "OD", struct.pack(">d", 3.125))
    path = tmp_path / "be.dcm"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.save_as(path, enforce_file_format=True)
    received = dcmread(prepare(path, ExplicitVRBigEndian, ExplicitVRLittleEndian))
    assert struct.unpack("<2f", received[0x00720067].value) == (1.5, -2.25)
    assert struct.unpack("<2L", received[0x00660040].value) == (1, 0x01020304)
    assert struct.unpack("<d", received.ReferencedImageSequence[0][0x00089459].value) == (
        3.125,)
    ds.add_new(0x00091010, "UN", b"\x00\x01")
    ds.save_as(path, enforce_file_format=True)
    before = path.read_bytes()
    with pytest.raises(CannotEncode, match="UN"):
        prepare(path, ExplicitVRBigEndian, ImplicitVRLittleEndian)
    assert path.read_bytes() == before
