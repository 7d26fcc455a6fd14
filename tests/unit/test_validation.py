"""Header integrity of received instances, and study completeness findings."""

from __future__ import annotations

import random
import struct
import tracemalloc
import zlib
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.dsutils import create_file_meta, encode, split_dataset

from appliance.statuses import CANNOT_PARSE, DATASET_MISMATCH
from appliance.validation import (
    InstanceFacts,
    InstanceHeader,
    InvalidDataset,
    expected_pixel_length,
    is_valid_uid,
    read_header,
    study_findings,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SECRETS = {
    "PatientName": "Secretname^Patricia",
    "PatientID": "PID-SECRET-4711",
    "AccessionNumber": "ACC-SECRET-99",
    "PatientBirthDate": "19450317",
}
MiB = 1024 * 1024


# --- helpers: Part 10 files written the way the receiver writes them ---------------------


def _testfile(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, name
    return Path(path)


def _write_received(
    path: Path, dataset_bytes: bytes, sop_class: str, sop_instance: str, syntax: str
) -> int:
    """Preamble, file meta from the command, then the data set bytes as received."""
    meta = BytesIO()
    write_file_meta_info(
        meta,
        create_file_meta(
            sop_class_uid=UID(sop_class),
            sop_instance_uid=UID(sop_instance),
            transfer_syntax=UID(syntax),
        ),
    )
    head = b"\x00" * 128 + b"DICM" + meta.getvalue()
    path.write_bytes(head + dataset_bytes)
    return len(head)


def _encode(ds: Dataset, syntax: str) -> bytes:
    uid = UID(syntax)
    data = encode(ds, uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated)
    assert data is not None
    return data


def _original_bytes(source: Path) -> tuple[Dataset, bytes]:
    """The dataset of a shipped file and its data set bytes exactly as encoded there."""
    ds = dcmread(source)
    _, offset = split_dataset(source)
    return ds, source.read_bytes()[offset:]


def _received(
    tmp_path: Path,
    ds: Dataset,
    syntax: str,
    *,
    data: bytes | None = None,
    command: tuple[str, str] | None = None,
) -> tuple[Path, int]:
    """Write `ds` (or the given raw data set bytes) as a received file."""
    path = tmp_path / "received.dcm"
    sop_class, sop_instance = command or (ds.SOPClassUID, ds.SOPInstanceUID)
    raw = data if data is not None else _encode(ds, syntax)
    return path, _write_received(path, raw, sop_class, sop_instance, syntax)


def _read(path: Path, ds: Dataset):
    return read_header(
        path, command_sop_class=ds.SOPClassUID, command_sop_instance=ds.SOPInstanceUID
    )


def _with_secrets(ds: Dataset) -> Dataset:
    for keyword, value in SECRETS.items():
        setattr(ds, keyword, value)
    return ds


def _ct() -> Dataset:
    return _with_secrets(dcmread(_testfile("CT_small.dcm")))


def _assert_refused(path: Path, ds: Dataset, status: int, reason_part: str) -> InvalidDataset:
    with pytest.raises(InvalidDataset) as info:
        _read(path, ds)
    err = info.value
    assert err.status == status, err.reason
    assert reason_part in err.reason
    for secret in SECRETS.values():
        assert secret not in err.reason
        assert secret not in str(err)
    return err


# --- valid instances -------------------------------------------------------------------

VALID = [
    ("CT_small.dcm", None),  # explicit VR little endian
    ("MR_small_implicit.dcm", None),
    ("MR_small_bigendian.dcm", None),
    ("JPEG2000.dcm", None),  # encapsulated
    ("MR_small_RLE.dcm", None),
    ("MR_small_jpeg_ls_lossless.dcm", None),
    ("examples_ybr_color.dcm", None),  # 30 JPEG frames
    ("SC_rgb_small_odd.dcm", None),  # 27 bytes of pixels, padded to 28
    ("liver_1frame.dcm", None),  # BitsAllocated 1, bit-packed
    ("SC_ybr_full_422_uncompressed.dcm", None),  # 2 samples a pixel
    ("rtdose_1frame.dcm", None),
    ("rtplan.dcm", None),  # nested sequences, no pixel data
    ("image_dfl.dcm", DeflatedExplicitVRLittleEndian),  # re-encoded: it lacks PatientID
]


def _valid_case(name: str, reencode: str | None, tmp_path: Path) -> tuple[Path, int, Dataset]:
    source = _testfile(name)
    ds, data = _original_bytes(source)
    syntax = ds.file_meta.TransferSyntaxUID
    if reencode is not None:
        ds.PatientID = "DFL-1"
        syntax, data = reencode, _encode(ds, reencode)
    path, offset = _received(tmp_path, ds, syntax, data=data)
    return path, offset, ds


@pytest.mark.parametrize(("name", "reencode"), VALID)
def test_valid_instances_pass_with_their_values(name, reencode, tmp_path):
    path, offset, ds = _valid_case(name, reencode, tmp_path)
    header = _read(path, ds)
    assert header.sop_class_uid == ds.SOPClassUID
    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert header.study_uid == ds.StudyInstanceUID
    assert header.series_uid == ds.SeriesInstanceUID
    assert header.transfer_syntax == (reencode or ds.file_meta.TransferSyntaxUID)
    assert header.patient_id == ds.PatientID
    assert header.patient_name == str(ds.get("PatientName", ""))
    assert header.accession == ds.get("AccessionNumber", "")
    assert header.modality == ds.get("Modality", "")
    assert header.study_description == ds.get("StudyDescription", "")
    assert header.station_name == ds.get("StationName", "")
    for field, keyword in [
        ("instance_number", "InstanceNumber"),
        ("series_number", "SeriesNumber"),
        ("number_of_frames", "NumberOfFrames"),
        ("images_in_acquisition", "ImagesInAcquisition"),
    ]:
        value = ds.get(keyword)
        assert getattr(header, field) == (None if value in (None, "") else int(value))
    assert header.dataset_offset == offset


@pytest.mark.parametrize(("name", "reencode"), VALID)
def test_dataset_offset_starts_the_dataset(name, reencode, tmp_path):
    path, _, ds = _valid_case(name, reencode, tmp_path)
    header = _read(path, ds)
    syntax = UID(header.transfer_syntax)
    with open(path, "rb") as fp:
        fp.seek(header.dataset_offset)
        data = fp.read()
    if syntax.is_deflated:
        data = zlib.decompress(data, -zlib.MAX_WBITS)
    again = read_dataset(BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian)
    assert again.SOPInstanceUID == ds.SOPInstanceUID
    assert again.PatientID == ds.PatientID
    assert sorted(again.keys()) == sorted(ds.keys())


def test_patient_name_is_decoded_with_the_character_set(tmp_path):
    ds = _ct()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    assert _read(path, ds).patient_name == "Müller^Jürgen"


def test_odd_pixel_data_gets_one_byte_of_padding(tmp_path):
    ds = _ct()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 3, 8, 8, 7
    ds.PixelData = bytes(9)  # written padded to 10
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    assert _read(path, ds).sop_instance_uid == ds.SOPInstanceUID
    ds.PixelData = bytes(12)
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    _assert_refused(path, ds, DATASET_MISMATCH, "PixelData length")


def test_encapsulated_pixel_data_is_not_length_checked(tmp_path):
    ds = _with_secrets(dcmread(_testfile("JPEG2000.dcm")))
    ds.Rows = ds.Rows * 2
    path, _ = _received(tmp_path, ds, ds.file_meta.TransferSyntaxUID)
    assert _read(path, ds).sop_instance_uid == ds.SOPInstanceUID


# --- defects ---------------------------------------------------------------------------


@pytest.mark.parametrize("keyword", ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"])
@pytest.mark.parametrize("how", ["deleted", "empty"])
def test_missing_required_uid_is_refused(keyword, how, tmp_path):
    ds = _ct()
    command = (ds.SOPClassUID, ds.SOPInstanceUID)
    if how == "deleted":
        delattr(ds, keyword)
    else:
        setattr(ds, keyword, "")
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian, command=command)
    with pytest.raises(InvalidDataset) as info:
        read_header(path, command_sop_class=command[0], command_sop_instance=command[1])
    assert info.value.status == DATASET_MISMATCH
    assert info.value.reason == f"{keyword} missing"


def _accepted(path: Path, ds: Dataset) -> InstanceHeader:
    """Read an instance that must be accepted; its remarks hold no patient value."""
    header = _read(path, ds)
    for secret in SECRETS.values():
        assert not any(secret in remark for remark in header.remarks)
    return header


@pytest.mark.parametrize(("how", "remark"), [
    ("deleted", "PatientID missing"), ("empty", "PatientID empty"), ("spaces", "PatientID empty"),
])
def test_missing_patient_id_is_accepted_and_remarked(how, remark, tmp_path):
    """Issue 11: Patient ID is Type 2; real devices omit it. The first issue's refusal was wrong."""
    ds = _ct()
    if how == "deleted":
        del ds.PatientID
    else:
        ds.PatientID = "" if how == "empty" else "   "
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    header = _accepted(path, ds)
    assert header.patient_id == ""
    assert remark in header.remarks


def test_conformant_image_has_no_remarks(tmp_path):
    ds = _ct()
    for keyword in ("PatientSex", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        setattr(ds, keyword, ds.get(keyword, ""))
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    assert _accepted(path, ds).remarks == ()


@pytest.mark.parametrize(("keyword", "remark"), [
    ("SeriesInstanceUID", "SeriesInstanceUID missing"),
    ("Modality", "Modality missing"),
    ("PatientName", "PatientName missing"),
    ("StudyDate", "StudyDate missing"),
])
def test_missing_type_1_and_2_attributes_are_accepted_and_remarked(keyword, remark, tmp_path):
    ds = _ct()
    delattr(ds, keyword)
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    assert remark in _accepted(path, ds).remarks


def test_empty_type_1_attribute_is_remarked(tmp_path):
    ds = _ct()
    ds.Modality = ""
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    assert "Modality empty" in _accepted(path, ds).remarks


@pytest.mark.parametrize(("sop_class", "remark"), [
    ("1.3.6.1.4.1.5962.301.1", "private SOP class 1.3.6.1.4.1.5962.301.1"),
    ("1.2.840.10008.5.1.4.1.1.999", "SOP class unknown to the box 1.2.840.10008.5.1.4.1.1.999"),
    ("1.2.840.10008.5.1.4.1.1.5", "retired SOP class: Nuclear Medicine Image Storage"),
])
def test_private_unknown_and_retired_sop_classes_are_accepted(sop_class, remark, tmp_path):
    ds = _ct()
    ds.SOPClassUID = sop_class
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    assert remark in _accepted(path, ds).remarks


def test_retired_and_unknown_transfer_syntaxes_are_accepted(tmp_path):
    ds = _ct()
    path, _ = _received(tmp_path, ds, ExplicitVRBigEndian)
    assert "retired transfer syntax: Explicit VR Big Endian" in _accepted(path, ds).remarks
    data = _encode(ds, ExplicitVRLittleEndian)  # a private syntax is explicit VR LE (PS3.5 10)
    path, _ = _received(tmp_path, ds, "1.3.6.1.4.1.5962.300.1", data=data)
    header = _accepted(path, ds)
    assert "transfer syntax unknown to the box 1.3.6.1.4.1.5962.300.1" in header.remarks


@pytest.mark.parametrize("name", ["rtplan.dcm", "reportsi.dcm"])
def test_datasets_without_pixel_data_are_accepted(name, tmp_path):
    ds, data = _original_bytes(_testfile(name))
    path, _ = _received(tmp_path, ds, ds.file_meta.TransferSyntaxUID, data=data)
    assert f"no pixel data ({ds.SOPClassUID.name})" in _accepted(path, ds).remarks


@pytest.mark.parametrize(("charset", "remark"), [
    ("GB18030", None),
    ("ISO_IR 192", None),
    ("ISO_IR 100\\ISO 2022 IR 87", None),
    ("KLINGON", "SpecificCharacterSet term unknown: KLINGON"),
])
def test_odd_and_unknown_character_sets_are_accepted(charset, remark, tmp_path):
    ds = _ct()
    ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    remarks = _accepted(path, ds).remarks
    assert (remark in remarks) if remark else not any("SpecificCharacterSet" in r
                                                        for r in remarks)


def test_gb18030_text_is_decoded(tmp_path):
    ds = _ct()
    ds.SpecificCharacterSet = "GB18030"
    ds.PatientName = "王^小东"
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    assert _accepted(path, ds).patient_name == "王^小东"


@pytest.mark.parametrize(
    "bad",
    ["1.2.03.4", "1..2", "1.2.", ".1.2", "1.2.a", "1.2 .3", "1.2\\1.3", "1." + "2" * 63],
)
@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SOPInstanceUID"])
def test_malformed_uid_is_refused(keyword, bad, tmp_path):
    ds = _ct()
    command = (ds.SOPClassUID, ds.SOPInstanceUID)
    setattr(ds, keyword, bad)
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian, command=command)
    with pytest.raises(InvalidDataset) as info:
        read_header(path, command_sop_class=command[0], command_sop_instance=command[1])
    assert info.value.status == DATASET_MISMATCH
    assert info.value.reason == f"{keyword} malformed"


def test_malformed_series_uid_is_accepted_and_remarked(tmp_path):
    ds = _ct()
    ds.SeriesInstanceUID = "1.2.03.4"
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    header = _accepted(path, ds)
    assert header.series_uid == "1.2.03.4"
    assert "SeriesInstanceUID malformed" in header.remarks


def test_uid_syntax():
    assert is_valid_uid("1.2.840.10008.1.2.1")
    assert is_valid_uid("0.0")
    assert is_valid_uid("1." + "2" * 62)  # 64 characters
    for bad in ["", "1.2.03", "1..2", "1.", "a.1", "1." + "2" * 63, "1.2\n"]:
        assert not is_valid_uid(bad), bad


@pytest.mark.parametrize("which", ["class", "instance"])
def test_uids_differing_from_the_command_are_refused(which, tmp_path):
    ds = _ct()
    command = (ds.SOPClassUID, ds.SOPInstanceUID)
    if which == "class":
        command = ("1.2.840.10008.5.1.4.1.1.4", command[1])  # MR Image Storage
    else:
        command = (command[0], command[1] + ".1")
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian, command=command)
    with pytest.raises(InvalidDataset) as info:
        read_header(path, command_sop_class=command[0], command_sop_instance=command[1])
    assert info.value.status == DATASET_MISMATCH
    expected = "SOPClassUID" if which == "class" else "SOPInstanceUID"
    assert info.value.reason.startswith(f"{expected} differs")


@pytest.mark.parametrize(
    ("change", "syntax"),
    [
        ({"Rows": 129}, ExplicitVRLittleEndian),
        ({"Columns": 64}, ImplicitVRLittleEndian),
        ({"BitsAllocated": 8}, ExplicitVRBigEndian),
        ({"SamplesPerPixel": 3}, ExplicitVRLittleEndian),
        ({"NumberOfFrames": 2}, ExplicitVRLittleEndian),
        ({"Rows": 129}, DeflatedExplicitVRLittleEndian),
    ],
)
def test_native_pixel_length_disagreeing_with_attributes_is_refused(change, syntax, tmp_path):
    ds = _ct()
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    path, _ = _received(tmp_path, ds, syntax)
    _assert_refused(path, ds, DATASET_MISMATCH, "PixelData length")


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_number_of_frames_0_over_one_frame_is_kept_and_recorded(syntax, tmp_path):
    # Issue 7: refuse only what cannot be kept faithfully; storescp and Orthanc store it.
    ds = _ct()
    ds.NumberOfFrames = 0
    path, _ = _received(tmp_path, ds, syntax)
    header = _accepted(path, ds)
    assert header.number_of_frames == 0
    facts = InstanceFacts(header.series_uid, 1, 1, None, header.number_of_frames,
                          header.remarks)
    assert "series 1: 1 instance(s) with NumberOfFrames 0" in study_findings([facts])


@pytest.mark.parametrize("frames_of_data", [0.5, 2])
def test_number_of_frames_0_over_anything_but_one_frame_is_refused(frames_of_data, tmp_path):
    ds = _ct()
    ds.NumberOfFrames = 0
    ds.PixelData = ds.PixelData * 2 if frames_of_data == 2 else ds.PixelData[:len(
        ds.PixelData) // 2]
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    _assert_refused(path, ds, DATASET_MISMATCH, "PixelData length")


def test_bit_packed_pixel_data_is_checked(tmp_path):
    ds = _with_secrets(dcmread(_testfile("liver_1frame.dcm")))
    ds.Columns = ds.Columns + 8
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    _assert_refused(path, ds, DATASET_MISMATCH, "PixelData length")


def test_expected_pixel_length():
    assert expected_pixel_length(512, 512, 1, 16, 1) == 512 * 512 * 2
    assert expected_pixel_length(3, 3, 1, 1, 1) == 2  # 9 bits, packed
    assert expected_pixel_length(512, 512, 1, 1, 3) == 512 * 512 * 3 // 8
    assert expected_pixel_length(10, 10, 3, 8, 2) == 600
    assert expected_pixel_length(10, 10, 1, 12, 1) == 200
    assert expected_pixel_length(100, 100, 3, 8, 1, "YBR_FULL_422") == 20000


@pytest.mark.parametrize("keyword", ["Rows", "Columns", "BitsAllocated", "SamplesPerPixel"])
def test_native_pixel_data_without_image_attributes_is_kept_unchecked(keyword, tmp_path):
    """The length cannot be judged, but the bytes can be kept as they came."""
    ds = _ct()
    delattr(ds, keyword)
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    (remark,) = [r for r in _accepted(path, ds).remarks if r.startswith("PixelData")]
    assert remark == f"PixelData length not checked: {keyword} missing or invalid"


def test_invalid_number_of_frames_is_accepted_and_remarked(tmp_path):
    source = _testfile("badVR.dcm")  # NumberOfFrames "1A"
    ds, data = _original_bytes(source)
    path, _ = _received(tmp_path, ds, ds.file_meta.TransferSyntaxUID, data=data)
    header = _accepted(path, ds)
    assert header.number_of_frames is None
    assert "NumberOfFrames invalid" in header.remarks


@pytest.mark.parametrize("name", ["CT_small.dcm", "JPEG2000.dcm", "MR_small_implicit.dcm"])
@pytest.mark.parametrize("cut", [1, 2, 100, 1000])
def test_truncated_instance_is_refused(name, cut, tmp_path):
    ds, data = _original_bytes(_testfile(name))
    _with_secrets(ds)
    path, _ = _received(tmp_path, ds, ds.file_meta.TransferSyntaxUID, data=data[:-cut])
    _assert_refused(path, ds, CANNOT_PARSE, "truncated")


def test_truncated_deflated_instance_is_refused(tmp_path):
    ds = _ct()
    data = _encode(ds, DeflatedExplicitVRLittleEndian)
    path, _ = _received(tmp_path, ds, DeflatedExplicitVRLittleEndian, data=data[: len(data) // 2])
    _assert_refused(path, ds, CANNOT_PARSE, "truncated")


def test_truncated_header_value_is_refused(tmp_path):
    ds = _ct()
    data = _encode(ds, ExplicitVRLittleEndian)
    cut = data.index(b"PID-SECRET") + 4  # inside the PatientID value
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian, data=data[:cut])
    _assert_refused(path, ds, CANNOT_PARSE, "truncated")


def _garbage(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
)
def test_garbage_dataset_is_refused(syntax, seed, tmp_path):
    ds = _ct()
    path, _ = _received(tmp_path, ds, syntax, data=_garbage(4096, seed))
    with pytest.raises(InvalidDataset) as info:
        _read(path, ds)
    assert info.value.status in (CANNOT_PARSE, DATASET_MISMATCH)


@pytest.mark.parametrize("seed", range(5))
def test_garbage_after_a_valid_dataset_is_refused(seed, tmp_path):
    ds = _ct()
    data = _encode(ds, ExplicitVRLittleEndian) + _garbage(512, seed)
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian, data=data)
    _assert_refused(path, ds, CANNOT_PARSE, "")


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 100, _garbage(10_000, 7), b"\x00" * 128 + b"DICM", b"\x00" * 128 + b"DICX"],
)
def test_garbage_file_is_refused(content, tmp_path):
    path = tmp_path / "garbage.dcm"
    path.write_bytes(content)
    with pytest.raises(InvalidDataset) as info:
        read_header(path, command_sop_class="1.2.3", command_sop_instance="1.2.3.4")
    assert info.value.status == CANNOT_PARSE


def test_meta_only_file_is_refused(tmp_path):
    ds = _ct()
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian, data=b"")
    _assert_refused(path, ds, CANNOT_PARSE, "empty")


def test_implicit_encoding_under_explicit_syntax_is_refused(tmp_path):
    ds = _ct()
    data = _encode(ds, ImplicitVRLittleEndian)
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian, data=data)
    _assert_refused(path, ds, CANNOT_PARSE, "encoding")


def test_elements_out_of_order_are_accepted_and_remarked(tmp_path):
    ds = _ct()
    extra = Dataset()
    extra.PatientID = "PID-SECRET-SECOND"
    data = _encode(ds, ExplicitVRLittleEndian) + _encode(extra, ExplicitVRLittleEndian)
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian, data=data)
    assert "elements out of order" in _accepted(path, ds).remarks


def test_native_syntax_with_encapsulated_pixel_data_is_refused(tmp_path):
    ds, data = _original_bytes(_testfile("JPEG2000.dcm"))
    _with_secrets(ds)
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian, data=data)
    _assert_refused(path, ds, CANNOT_PARSE, "encapsulated")


def test_reasons_never_hold_patient_values(tmp_path):
    """Every refusal above goes through _assert_refused; here the exception text itself."""
    ds = _ct()
    del ds.StudyInstanceUID
    path, _ = _received(tmp_path, ds, ExplicitVRLittleEndian)
    err = _assert_refused(path, ds, DATASET_MISMATCH, "StudyInstanceUID missing")
    assert repr(SECRETS["PatientID"]) not in repr(err)


# --- large instances ---------------------------------------------------------------------

FRAME = 512 * 512 * 2


def _large_header(frames: int) -> Dataset:
    ds = _ct()
    del ds.PixelData
    del ds[0xFFFCFFFC]  # trailing padding: Pixel Data goes last
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 512, 512, 16, 1
    ds.NumberOfFrames = frames
    return ds


def _pixel_element_header(length: int) -> bytes:
    return struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OW", length)


def _write_large(path: Path, ds: Dataset, frames: int, *, deflated: bool = False) -> None:
    """Write header, then Pixel Data 1 MiB at a time; the pixels never exist in memory."""
    syntax = DeflatedExplicitVRLittleEndian if deflated else ExplicitVRLittleEndian
    _write_received(path, b"", ds.SOPClassUID, ds.SOPInstanceUID, syntax)
    header = _encode(ds, ExplicitVRLittleEndian) + _pixel_element_header(frames * FRAME)
    chunk = bytes(range(256)) * (MiB // 256)
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "ab") as fp:

        def put(data: bytes) -> None:
            fp.write(z.compress(data) if deflated else data)

        put(header)
        left = frames * FRAME
        while left:
            put(chunk[: min(left, MiB)])
            left -= min(left, MiB)
        if deflated:
            fp.write(z.flush())


def _peak_read(path: Path, ds: Dataset):
    tracemalloc.start()
    try:
        outcome = _read(path, ds)
    except InvalidDataset as err:
        outcome = err
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return outcome, peak


@pytest.mark.slow
@pytest.mark.parametrize("deflated", [False, True])
def test_large_instance_is_read_in_small_memory(deflated, tmp_path):
    frames = 400  # 200 MiB of pixels
    ds = _large_header(frames)
    path = tmp_path / "large.dcm"
    _write_large(path, ds, frames, deflated=deflated)
    if not deflated:
        assert path.stat().st_size > 200 * MiB
    header, peak = _peak_read(path, ds)
    assert isinstance(header, InstanceHeader), header
    assert header.number_of_frames == frames
    assert peak < 20 * MiB, peak


@pytest.mark.slow
@pytest.mark.parametrize("deflated", [False, True])
def test_large_instance_truncated_is_refused_in_small_memory(deflated, tmp_path):
    frames = 400
    ds = _large_header(frames)
    path = tmp_path / "large.dcm"
    _write_large(path, ds, frames, deflated=deflated)
    with open(path, "r+b") as fp:
        fp.truncate(path.stat().st_size - (1000 if deflated else MiB))
    err, peak = _peak_read(path, ds)
    assert isinstance(err, InvalidDataset)
    assert err.status == CANNOT_PARSE
    assert peak < 20 * MiB, peak


@pytest.mark.slow
def test_large_instance_with_wrong_frame_count_is_refused(tmp_path):
    ds = _large_header(400)
    path = tmp_path / "large.dcm"
    _write_large(path, ds, 399)
    err, _ = _peak_read(path, ds)
    assert isinstance(err, InvalidDataset)
    assert err.status == DATASET_MISMATCH


# --- study findings ----------------------------------------------------------------------


def _facts(
    series: str = "1.2.3.1",
    number: int | None = 1,
    instance: int | None = 1,
    images: int | None = None,
    frames: int | None = None,
) -> InstanceFacts:
    return InstanceFacts(series, number, instance, images, frames)


def _series(uid: str, number: int | None, instances, **kw) -> list[InstanceFacts]:
    return [_facts(uid, number, i, **kw) for i in instances]


def test_complete_study_has_no_findings():
    study = _series("1.2.3.1", 1, range(1, 21), images=20) + _series("1.2.3.2", 2, range(1, 5))
    assert study_findings(study) == []
    assert study_findings([]) == []


def test_instance_number_gaps():
    present = [n for n in range(1, 41) if n not in {12, 13, 14, 20, 21, 30, 31}]
    findings = study_findings(_series("1.2.3.3", 3, present))
    assert findings == ["series 3: instance numbers 1-40, 7 missing (12, 13, 14, 20, 21, ...)"]


def test_few_gaps_are_listed_without_ellipsis():
    assert study_findings(_series("1.2.3.3", 3, [1, 2, 4, 6])) == [
        "series 3: instance numbers 1-6, 2 missing (3, 5)"
    ]


def test_duplicate_instance_numbers():
    findings = study_findings(_series("1.2.3.4", 4, [1, 2, 2, 3, 3, 3]))
    assert findings == ["series 4: duplicate instance numbers (2 x2, 3 x3)"]


def test_images_in_acquisition_disagreeing_with_count():
    findings = study_findings(_series("1.2.3.5", 5, range(1, 39), images=40))
    assert findings == ["series 5: ImagesInAcquisition says 40, 38 instances received"]


def test_number_of_frames_zero():
    study = [_facts("1.2.3.6", 6, 1, frames=0), _facts("1.2.3.6", 6, 2, frames=10)]
    assert study_findings(study) == ["series 6: 1 instance(s) with NumberOfFrames 0"]


def test_unnumbered_series_are_named_by_position_without_uids():
    study = (
        _series("1.2.3.9", None, [1, 3])
        + _series("1.2.3.7", 7, [1, 2])
        + _series("1.2.3.8", None, [2, 3])
    )
    findings = study_findings(study)
    assert findings == ["series #3 (unnumbered): instance numbers 1-3, 1 missing (2)"]
    assert all("1.2.3." not in f for f in findings)


def test_series_sharing_a_number_are_told_apart():
    study = _series("1.2.3.1", 1, [1, 3]) + _series("1.2.3.2", 1, [1, 2, 4])
    assert study_findings(study) == [
        "series 1 (1 of 2): instance numbers 1-3, 1 missing (2)",
        "series 1 (2 of 2): instance numbers 1-4, 1 missing (3)",
    ]


def test_findings_are_deterministic_and_ordered():
    study = (
        _series("1.2.3.10", 10, [1, 1, 3], images=5)
        + _series("1.2.3.2", 2, [1, 2, 5])
        + [_facts("1.2.3.2", 2, 6, frames=0)]
    )
    expected = [
        "series 2: instance numbers 1-6, 2 missing (3, 4)",
        "series 2: 1 instance(s) with NumberOfFrames 0",
        "series 10: instance numbers 1-3, 1 missing (2)",
        "series 10: duplicate instance numbers (1 x2)",
        "series 10: ImagesInAcquisition says 5, 3 instances received",
    ]
    assert study_findings(study) == expected
    for seed in range(5):
        shuffled = list(study)
        random.Random(seed).shuffle(shuffled)
        assert study_findings(iter(shuffled)) == expected


def test_instance_remarks_are_counted_per_study_after_completeness():
    plain = _series("1.2.3.1", 1, [1, 3])
    remarked = [
        InstanceFacts("1.2.3.2", 2, 1, None, None, ("PatientID missing",)),
        InstanceFacts("1.2.3.2", 2, 2, None, None,
                      ("PatientID missing", "no pixel data (Basic Text SR Storage)")),
    ]
    assert study_findings(plain + remarked) == [
        "series 1: instance numbers 1-3, 1 missing (2)",
        "2 instance(s): PatientID missing",
        "1 instance(s): no pixel data (Basic Text SR Storage)",
    ]


def test_odd_length_deflated_data_set_is_accepted_and_remarked(tmp_path):
    ds = _ct()
    data = _encode(ds, DeflatedExplicitVRLittleEndian)
    data = data[:-1] if len(data) % 2 == 0 and data[-1] == 0 else data
    if len(data) % 2 == 0:  # an even stream without pad: make it odd with a harmless byte
        data += b"\0"
    path, _ = _received(tmp_path, ds, DeflatedExplicitVRLittleEndian, data=data)
    assert "deflated data set of odd length (padded by one byte when sent)" in _accepted(
        path, ds).remarks
