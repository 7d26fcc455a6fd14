"""Which syntaxes an instance may travel in (issue 11, part 2: memory bounded whatever
its size: beyond IN_MEMORY_MAX_BYTES only what is streamed)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy
import pydicom
import pytest
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
from pynetdicom.dsutils import encode

from appliance.encoding import (
    IN_MEMORY_MAX_BYTES,
    UNCOMPRESSED,
    CannotEncode,
    prepare,
    wire_syntaxes,
)

PIXEL_DATA = 0x7FE00010

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


def _roundtrip(dataset, target: str):
    """What a PACS reads from `dataset` sent in `target` (as pynetdicom encodes it)."""
    encoded = encode(dataset, UID(target).is_implicit_VR, True, False)
    out = pydicom.dcmread(io.BytesIO(encoded), force=True)
    out.file_meta = FileMetaDataset()
    out.file_meta.TransferSyntaxUID = target
    return out


@pytest.mark.parametrize("target", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_big_endian_reaches_a_little_endian_pacs_with_the_same_values(tmp_path, target):
    # Issue 7: a PACS taking no Big Endian got nothing (pydicom refuses to swap).
    source = Path(get_testdata_file("MR_small_bigendian.dcm"))
    original = pydicom.dcmread(source)
    prepared = prepare(source, ExplicitVRBigEndian, target)
    received = _roundtrip(prepared, target)
    assert numpy.array_equal(received.pixel_array, original.pixel_array)
    assert {e.tag: e.value for e in received if e.tag != PIXEL_DATA} == {
        e.tag: e.value for e in original if e.tag.element != 0 and e.tag != PIXEL_DATA}


def test_big_endian_words_of_every_binary_vr_are_swapped_and_a_un_value_refused(tmp_path):
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4"
    ds.add_new(0x00720067, "OF", struct.pack(">2f", 1.5, -2.25))  # floats in a sequence too
    ds.add_new(0x00660040, "OL", struct.pack(">2L", 1, 0x01020304))
    ds.ReferencedImageSequence = [Dataset()]
    ds.ReferencedImageSequence[0].add_new(0x00089459, "OD", struct.pack(">d", 3.125))
    path = tmp_path / "be.dcm"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.save_as(path, enforce_file_format=True)
    received = _roundtrip(prepare(path, ExplicitVRBigEndian, ExplicitVRLittleEndian),
                          ExplicitVRLittleEndian)
    assert struct.unpack("<2f", received[0x00720067].value) == (1.5, -2.25)
    assert struct.unpack("<2L", received[0x00660040].value) == (1, 0x01020304)
    assert struct.unpack("<d", received.ReferencedImageSequence[0][0x00089459].value) == (
        3.125,)
    ds.add_new(0x00091010, "UN", b"\x00\x01")
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(CannotEncode, match="UN"):
        prepare(path, ExplicitVRBigEndian, ImplicitVRLittleEndian)
