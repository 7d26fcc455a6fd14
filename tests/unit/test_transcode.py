"""Streamed Explicit to Implicit VR Little Endian (issue 11, part 2: delivery never loads a
whole instance): the same values as pydicom's own conversion, whatever the sequences."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from appliance.transcode import CannotTranscode, dataset_offset, explicit_to_implicit


def _as_explicit(name: str, out: Path, undefined_lengths: bool) -> Path:
    ds = pydicom.dcmread(get_testdata_file(name), force=True)  # some have no preamble
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = undefined_lengths
            for item in elem.value:
                item.is_undefined_length_sequence_item = undefined_lengths
    ds.save_as(out, enforce_file_format=True)
    return out


def _pydicom_implicit(src: Path, out: Path) -> Dataset:
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(out, enforce_file_format=True)
    return pydicom.dcmread(out)


@pytest.mark.parametrize("undefined_lengths", [False, True], ids=["defined", "undefined"])
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm",
                                  "rtstruct.dcm", "rtdose.dcm", "waveform_ecg.dcm"])
def test_values_are_those_pydicom_converts(tmp_path, name, undefined_lengths):
    src = _as_explicit(name, tmp_path / "in.dcm", undefined_lengths)
    ours = pydicom.dcmread(explicit_to_implicit(src, tmp_path / "out.dcm"))
    assert ours.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert ours == _pydicom_implicit(src, tmp_path / "ref.dcm")


def test_nested_sequences_and_group_lengths(tmp_path):
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4"
    inner = Dataset()
    inner.CodeValue, inner.CodeMeaning = "T-04000", "Breast"
    outer = Dataset()
    outer.AnatomicRegionSequence = Sequence([inner, inner])
    ds.ReferencedImageSequence = Sequence([outer, Dataset()])
    ds.add_new(0x7FE00010, "OB", bytes(range(256)) * 5)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    # A retired group length, (0008,0000) UL, first in the data set (pydicom writes none).
    data, at = src.read_bytes(), dataset_offset(src)
    src.write_bytes(data[:at] + b"\x08\x00\x00\x00UL\x04\x00" + (1234).to_bytes(4, "little")
                    + data[at:])
    ours = pydicom.dcmread(explicit_to_implicit(src, tmp_path / "out.dcm"))
    assert 0x00080000 in pydicom.dcmread(src)
    assert 0x00080000 not in ours
    expected = _pydicom_implicit(src, tmp_path / "ref.dcm")
    expected.pop(0x00080000, None)
    assert ours == expected


def test_truncated_input_is_refused(tmp_path):
    src = _as_explicit("CT_small.dcm", tmp_path / "in.dcm", False)
    data = src.read_bytes()
    src.write_bytes(data[: dataset_offset(src) + 1000])
    with pytest.raises(CannotTranscode):
        explicit_to_implicit(src, tmp_path / "out.dcm")
