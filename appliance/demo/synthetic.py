"""Synthetic DICOM studies for the demo, the tests and the benchmarks.

The content is a noisy anatomical phantom, not a constant, so lossless
compressors reach realistic ratios (about 2.5x to 4x). Files are proper
Part 10 files in Explicit VR Little Endian with the type 1 attributes of their
IOD filled in.

UIDs derive from the Study Instance UID: pass ``study_uid`` and the same
arguments give the same files (on the same day, unless ``study_date`` is
given too); leave it out for a fresh random study.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")
MG_FOR_PRESENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.2")

_MANUFACTURER = "Flux Box"
_MODEL = "Synthetic Phantom"
_SOFTWARE = "fluxbox-synthetic 1"
_PIXEL_DATA_TAG = struct.pack("<HH", 0x7FE0, 0x0010)
_MAX_ELEMENT_LENGTH = 0xFFFFFFFE


# --------------------------------------------------------------------------- common parts


@dataclass(frozen=True)
class _Study:
    """Patient and study level values shared by every instance of a study."""

    study_uid: str
    patient_id: str
    patient_name: str
    accession: str
    study_date: str
    study_time: str
    description: str
    station_name: str


def _derived_uid(*parts: object) -> UID:
    """A UID that depends only on ``parts``."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _make_study(
    study_uid: str | None,
    patient_id: str,
    patient_name: str | None,
    accession: str | None,
    study_date: str | None,
    description: str,
    station_name: str,
) -> _Study:
    uid = study_uid or generate_uid()
    digest = hashlib.sha256(uid.encode()).hexdigest()
    return _Study(
        study_uid=uid,
        patient_id=patient_id,
        patient_name=patient_name or f"SYNTHETIC^{patient_id}",
        accession=accession or f"ACC{int(digest[:10], 16) % 10**10:010d}",
        study_date=study_date or date.today().strftime("%Y%m%d"),
        study_time=f"{8 + int(digest[10:12], 16) % 10:02d}{int(digest[12:14], 16) % 60:02d}00",
        description=description,
        station_name=station_name,
    )


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _base_dataset(study: _Study, *, modality: str, series_uid: str, series_number: int,
                  series_description: str) -> Dataset:
    """Patient, study, series and equipment modules."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = study.study_time
    ds.AccessionNumber = study.accession
    ds.Modality = modality
    ds.Manufacturer = _MANUFACTURER
    ds.InstitutionName = "Mobile Imaging Unit"
    ds.ReferringPhysicianName = "REFERRER^SYNTHETIC"
    ds.StationName = study.station_name
    ds.StudyDescription = study.description
    ds.SeriesDescription = series_description
    ds.ManufacturerModelName = _MODEL
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F" if modality == "MG" else "O"
    ds.DeviceSerialNumber = "SYN-0001"
    ds.SoftwareVersions = _SOFTWARE
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study.accession[-8:]
    ds.SeriesNumber = series_number
    return ds


def _set_sop(ds: Dataset, sop_class: str, sop_instance: str) -> None:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.file_meta = _file_meta(sop_class, sop_instance)


def _write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


# --------------------------------------------------------------------------- drawing


def _fill_ellipse(img: np.ndarray, cx: float, cy: float, ax: float, ay: float,
                  value: float, *, add: bool = False, outside: bool = False) -> None:
    """Set (or add ``value`` to) the pixels inside (or outside) an axis-aligned ellipse.

    Works in place on the rows the ellipse spans, so no full-size float temporaries.
    """
    if ax <= 0 or ay <= 0:
        return
    rows, cols = img.shape
    r0, r1 = max(0, math.floor(cy - ay)), min(rows, math.ceil(cy + ay) + 1)
    if outside:
        r0, r1 = 0, rows
    if r0 >= r1:
        return
    dy = (np.arange(r0, r1, dtype=np.float32) + 0.5 - cy) / ay
    half = ax * np.sqrt(np.clip(1.0 - dy * dy, 0.0, None))
    half[np.abs(dy) >= 1.0] = -1.0
    dx = np.abs(np.arange(cols, dtype=np.float32) + 0.5 - cx)
    mask = dx[None, :] <= half[:, None]
    if outside:
        np.logical_not(mask, out=mask)
    view = img[r0:r1]
    if add:
        np.add(view, value, out=view, where=mask)
    else:
        np.copyto(view, value, where=mask)


@dataclass(frozen=True)
class _Nodule:
    x: float  # -1..1, relative to the body's half width
    y: float
    z: float  # 0..1 along the scan
    radius: float  # relative to the image half size
    hu: float


def _random_nodules(rng: np.random.Generator, count: int = 6) -> list[_Nodule]:
    return [
        _Nodule(
            x=float(rng.uniform(-0.5, 0.5)),
            y=float(rng.uniform(-0.35, 0.35)),
            z=float(rng.uniform(0.05, 0.95)),
            radius=float(rng.uniform(0.015, 0.05)),
            hu=float(rng.uniform(-50, 250)),
        )
        for _ in range(count)
    ]


def _ct_phantom(rows: int, cols: int, z: float, nodules: list[_Nodule]) -> np.ndarray:
    """Noise-free HU values (float32) of a torso-like section at ``z`` in 0..1."""
    img = np.full((rows, cols), -1000.0, dtype=np.float32)
    s = min(rows, cols) / 2.0
    cx, cy = cols / 2.0, rows / 2.0
    wave = 1.0 + 0.06 * math.sin(2 * math.pi * z * 1.7)
    bx, by = 0.72 * s * wave, 0.52 * s * wave
    _fill_ellipse(img, cx, cy + 0.62 * s, 0.8 * s, 0.04 * s, 250.0)  # table
    _fill_ellipse(img, cx, cy, bx, by, -100.0)  # subcutaneous fat
    _fill_ellipse(img, cx, cy, 0.9 * bx, 0.88 * by, 40.0)  # soft tissue
    lung = max(0.0, math.sin(math.pi * min(1.0, z / 0.55)))
    if lung > 0.05:
        for side in (-1, 1):
            _fill_ellipse(img, cx + side * 0.33 * s, cy - 0.05 * s,
                          0.24 * s * lung, 0.36 * s * lung, -850.0)
    heart = max(0.0, math.sin(math.pi * (z - 0.15) / 0.3)) if 0.15 < z < 0.45 else 0.0
    if heart > 0.05:
        _fill_ellipse(img, cx + 0.08 * s, cy + 0.02 * s, 0.22 * s * heart, 0.2 * s * heart, 45.0)
    if 0.35 < z < 0.8:
        liver = math.sin(math.pi * (z - 0.35) / 0.45)
        _fill_ellipse(img, cx - 0.3 * s, cy + 0.02 * s, 0.3 * s * liver, 0.28 * s * liver, 60.0)
    if 0.55 < z < 0.85:
        kidney = math.sin(math.pi * (z - 0.55) / 0.3)
        for side in (-1, 1):
            _fill_ellipse(img, cx + side * 0.3 * s, cy + 0.22 * s,
                          0.08 * s * kidney, 0.12 * s * kidney, 150.0)
    _fill_ellipse(img, cx - 0.05 * s, cy + 0.16 * s, 0.06 * s, 0.06 * s, 180.0)  # aorta
    _fill_ellipse(img, cx, cy + 0.36 * s, 0.11 * s, 0.1 * s, 700.0)  # vertebra
    _fill_ellipse(img, cx, cy + 0.36 * s, 0.04 * s, 0.04 * s, 20.0)  # spinal canal
    for n in nodules:
        dz = (z - n.z) / n.radius * 0.1
        if abs(dz) < 1.0:
            r = n.radius * s * math.sqrt(1.0 - dz * dz)
            _fill_ellipse(img, cx + n.x * bx, cy + n.y * by, r, r, n.hu)
    return img


def _ct_pixels(rows: int, cols: int, z: float, nodules: list[_Nodule],
               rng: np.random.Generator, *, noise_hu: float = 7.0) -> np.ndarray:
    """Stored values (uint16, 12 bits, HU + 1024) of one noisy section.

    Outside the circular reconstruction field the value is 0 (-1024 HU), as scanners pad it.
    """
    img = _ct_phantom(rows, cols, z, nodules)
    noise = rng.standard_normal((rows, cols), dtype=np.float32)
    noise *= noise_hu
    img += noise
    del noise
    img += 1024.0
    np.clip(img, 0.0, 4095.0, out=img)
    out = img.astype(np.uint16)
    del img
    _fill_ellipse(out, cols / 2.0, rows / 2.0, cols / 2.0, rows / 2.0, 0, outside=True)
    return out


# --------------------------------------------------------------------------- CT


def write_ct_study(
    out_dir: Path,
    *,
    slices: int = 300,
    rows: int = 512,
    cols: int = 512,
    seed: int = 0,
    patient_id: str = "FLX0001",
    study_uid: str | None = None,
    patient_name: str | None = None,
    accession: str | None = None,
    study_date: str | None = None,
    station_name: str = "MOBILE-CT1",
    study_description: str = "CT CHEST ABDOMEN",
) -> list[Path]:
    """Write one axial CT series (CT Image Storage), one file per slice; return the paths."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    nodules = _random_nodules(rng)
    study = _make_study(study_uid, patient_id, patient_name, accession, study_date,
                        study_description, station_name)
    series_uid = _derived_uid(study.study_uid, "ct-series", seed)
    ds = _base_dataset(study, modality="CT", series_uid=series_uid, series_number=2,
                       series_description="AXIAL 1.0 SYNTHETIC")
    _ct_image_attributes(ds, rows, cols, slices, _derived_uid(study.study_uid, "for", seed))
    spacing = 360.0 / max(rows, cols)
    thickness = 1.0
    paths = []
    for i in range(slices):
        sop_uid = _derived_uid(study.study_uid, "ct", seed, i)
        _set_sop(ds, CT_IMAGE_STORAGE, sop_uid)
        z_mm = -i * thickness
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-spacing * cols / 2, -spacing * rows / 2, z_mm]
        ds.SliceLocation = z_mm
        z = i / max(1, slices - 1)
        ds.PixelData = _ct_pixels(rows, cols, z, nodules, rng).tobytes()
        paths.append(_write(ds, out_dir / f"CT{i + 1:05d}.dcm"))
    return paths


def _ct_image_attributes(ds: Dataset, rows: int, cols: int, slices: int,
                         frame_of_reference_uid: str) -> None:
    """Frame of reference, image plane, image pixel and CT image modules (not per slice)."""
    spacing = 360.0 / max(rows, cols)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = 1.0
    ds.KVP = 120
    ds.DataCollectionDiameter = 500.0
    ds.ReconstructionDiameter = round(spacing * max(rows, cols), 3)
    ds.GantryDetectorTilt = 0
    ds.TableHeight = 150.0
    ds.ExposureTime = 500
    ds.XRayTubeCurrent = 200
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "FFS"
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.AcquisitionNumber = 1
    ds.ImagesInAcquisition = slices
    ds.PatientOrientation = ""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [round(spacing, 6), round(spacing, 6)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"


# --------------------------------------------------------------------------- MG

_MG_VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
_VIEW_CODES = {
    "CC": ("399162004", "SCT", "cranio-caudal"),
    "MLO": ("399368009", "SCT", "medio-lateral oblique"),
}
_PATIENT_ORIENTATION = {
    ("R", "CC"): ["P", "L"], ("L", "CC"): ["A", "R"],
    ("R", "MLO"): ["P", "FL"], ("L", "MLO"): ["A", "FR"],
}


def _smooth_field(rng: np.random.Generator, rows: int, cols: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish random field with features about rows/cells pixels across."""
    h, w = cells, max(2, round(cells * cols / rows))
    coarse = rng.standard_normal((h, w)).astype(np.float32)
    a = _blur_matrix(rows, h)
    b = _blur_matrix(cols, w)
    return (a @ coarse @ b.T).astype(np.float32)


def _blur_matrix(n: int, k: int) -> np.ndarray:
    """Gaussian interpolation from k coarse samples to n pixels (n x k), rows sum to 1."""
    pos = (np.arange(n, dtype=np.float32) + 0.5) * k / n - 0.5
    d = pos[:, None] - np.arange(k, dtype=np.float32)[None, :]
    m = np.exp(-0.5 * (d / 0.8) ** 2)
    return (m / m.sum(axis=1, keepdims=True)).astype(np.float32)


def _mg_pixels(rows: int, cols: int, laterality: str, view: str, bits: int,
               rng: np.random.Generator) -> np.ndarray:
    """Stored values (uint16) of a processed mammogram, chest wall on one vertical edge."""
    top = float(2**bits - 1)
    y = (np.arange(rows, dtype=np.float32) - rows * (0.46 if view == "CC" else 0.52)) / (
        rows * (0.40 if view == "CC" else 0.47))
    x = np.arange(cols, dtype=np.float32) / (cols * 0.78)
    if laterality == "R":
        x = x[::-1]
    r2 = y[:, None] ** 2 + x[None, :] ** 2  # elliptical radius squared, chest wall at x = 0
    inside = r2 < 1.0
    thickness = np.sqrt(np.clip(1.0 - r2, 0.0, None))
    del r2
    dense = 0.6 * _smooth_field(rng, rows, cols, 12) + 0.4 * _smooth_field(rng, rows, cols, 48)
    img = (0.28 * top) + (0.22 * top) * thickness ** 0.3 + (0.09 * top) * dense * thickness
    del dense, thickness
    if view == "MLO":  # pectoral muscle: a bright triangle at the upper chest wall
        muscle = (x[None, :] + 0.45 * y[:, None] < 0.02) & inside
        np.add(img, 0.1 * top, out=img, where=muscle)
        del muscle
    for _ in range(int(rng.integers(5, 15))):  # calcifications
        cy, cx = float(rng.uniform(0.3, 0.7) * rows), float(rng.uniform(0.1, 0.5) * cols)
        if laterality == "R":
            cx = cols - cx
        r = float(rng.uniform(2, 6))
        _fill_ellipse(img, cx, cy, r, r, 0.15 * top, add=True)
    noise = rng.standard_normal((rows, cols), dtype=np.float32)
    img += noise * (0.0025 * top)
    del noise
    img[~inside] = 0.01 * top  # processed images have a flat background
    np.clip(img, 0.0, top, out=img)
    return img.astype(np.uint16)


def write_mg_study(
    out_dir: Path,
    *,
    views: int = 4,
    rows: int = 3328,
    cols: int = 2560,
    seed: int = 0,
    bits_stored: int = 12,
    patient_id: str = "FLX0002",
    study_uid: str | None = None,
    patient_name: str | None = None,
    accession: str | None = None,
    study_date: str | None = None,
    station_name: str = "MOBILE-MG1",
    study_description: str = "MAMMOGRAPHY SCREENING BILATERAL",
) -> list[Path]:
    """Write a screening mammography study (Digital Mammography X-Ray Image Storage -
    For Presentation), views RCC, LCC, RMLO, LMLO repeated as needed; return the paths."""
    if bits_stored not in (12, 14, 16):
        raise ValueError("bits_stored must be 12, 14 or 16")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    study = _make_study(study_uid, patient_id, patient_name, accession, study_date,
                        study_description, station_name)
    series_uid = _derived_uid(study.study_uid, "mg-series", seed)
    ds = _base_dataset(study, modality="MG", series_uid=series_uid, series_number=1,
                       series_description="SCREENING FOR PRESENTATION")
    _mg_image_attributes(ds, rows, cols, bits_stored)
    paths = []
    for i in range(views):
        laterality, view = _MG_VIEWS[i % len(_MG_VIEWS)]
        _set_sop(ds, MG_FOR_PRESENTATION_STORAGE, _derived_uid(study.study_uid, "mg", seed, i))
        ds.InstanceNumber = i + 1
        ds.ImageLaterality = laterality
        ds.ViewPosition = view
        ds.PatientOrientation = _PATIENT_ORIENTATION[(laterality, view)]
        ds.ViewCodeSequence = Sequence([_view_code(view)])
        ds.PositionerPrimaryAngle = 0 if view == "CC" else (45 if laterality == "R" else -45)
        ds.PixelData = _mg_pixels(rows, cols, laterality, view, bits_stored, rng).tobytes()
        paths.append(_write(ds, out_dir / f"MG{i + 1:03d}_{laterality}{view}.dcm"))
    return paths


def _view_code(view: str) -> Dataset:
    item = _code(*_VIEW_CODES[view])
    item.ViewModifierCodeSequence = Sequence()
    return item


def _mg_image_attributes(ds: Dataset, rows: int, cols: int, bits: int) -> None:
    """DX series/image/detector/positioning and mammography modules (not per view)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "BREAST"
    ds.AnatomicRegionSequence = Sequence([_code("76752008", "SCT", "Breast")])
    ds.OrganExposed = "BREAST"
    ds.PartialView = "NO"
    ds.BreastImplantPresent = "NO"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.DistanceSourceToDetector = 660.0
    ds.DistanceSourceToPatient = 640.0
    ds.BodyPartThickness = 55.0
    ds.CompressionForce = 110.0
    ds.KVP = 29
    ds.ExposureTime = 1100
    ds.XRayTubeCurrent = 100
    ds.Exposure = 110
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.FilterMaterial = "RHODIUM"
    ds.DetectorType = "DIRECT"
    ds.ImagerPixelSpacing = [0.085, 0.085]
    ds.AcquisitionNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = round(0.45 * 2**bits)
    ds.WindowWidth = round(0.5 * 2**bits)
    ds.VOILUTFunction = "SIGMOID"
    ds.PresentationLUTShape = "IDENTITY"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.QualityControlImage = "NO"


# --------------------------------------------------------------------------- multi-frame


def write_multiframe(
    path: Path,
    *,
    size_bytes: int,
    rows: int = 1024,
    cols: int = 1024,
    seed: int = 0,
    patient_id: str = "FLX0003",
    study_uid: str | None = None,
) -> Path:
    """Write an Enhanced CT instance whose pixel data holds at least ``size_bytes``.

    The header goes through pydicom; the Pixel Data element is then appended
    frame by frame, so memory stays at a few frames whatever the size.
    """
    path = Path(path)
    frame_bytes = rows * cols * 2
    frames = max(1, math.ceil(size_bytes / frame_bytes))
    if frames * frame_bytes > _MAX_ELEMENT_LENGTH:
        raise ValueError("pixel data over 4 GiB cannot be encoded with a defined length")
    rng = np.random.default_rng(seed)
    study = _make_study(study_uid, patient_id, None, None, None, "CT VOLUME", "MOBILE-CT1")
    ds = _enhanced_ct_header(study, rows, cols, frames, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        dcmwrite(f, ds, enforce_file_format=True)
        f.write(_PIXEL_DATA_TAG + b"OW\x00\x00" + struct.pack("<I", frames * frame_bytes))
        for frame in _ct_frames(rows, cols, frames, rng):
            f.write(frame.astype("<u2", copy=False).data)
    return path


def _ct_frames(rows: int, cols: int, frames: int,
               rng: np.random.Generator) -> Iterator[np.ndarray]:
    nodules = _random_nodules(rng)
    for i in range(frames):
        yield _ct_pixels(rows, cols, i / max(1, frames - 1), nodules, rng)


def _enhanced_ct_header(study: _Study, rows: int, cols: int, frames: int, seed: int) -> Dataset:
    """Every module of an Enhanced CT image except the Pixel Data element."""
    series_uid = _derived_uid(study.study_uid, "mf-series", seed)
    ds = _base_dataset(study, modality="CT", series_uid=series_uid, series_number=3,
                       series_description="VOLUME SYNTHETIC")
    _set_sop(ds, ENHANCED_CT_IMAGE_STORAGE, _derived_uid(study.study_uid, "mf", seed))
    spacing = 360.0 / max(rows, cols)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.AcquisitionDateTime = study.study_date + study.study_time
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = 1
    ds.ContentQualification = "PRODUCT"
    ds.FrameOfReferenceUID = _derived_uid(study.study_uid, "mf-for", seed)
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.ImagesInAcquisition = 1
    dim_org_uid = _derived_uid(study.study_uid, "mf-dim", seed)
    org = Dataset()
    org.DimensionOrganizationUID = dim_org_uid
    ds.DimensionOrganizationSequence = Sequence([org])
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = Sequence([
        _dimension_index(dim_org_uid, 0x00209056, 0x00209111, "Stack ID"),
        _dimension_index(dim_org_uid, 0x00209057, 0x00209111, "In-Stack Position Number"),
    ])
    ds.SharedFunctionalGroupsSequence = Sequence([_shared_groups(spacing)])
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        _frame_groups(i, spacing, rows, cols) for i in range(frames))
    return ds


def _dimension_index(org_uid: str, pointer: int, group: int, label: str) -> Dataset:
    item = Dataset()
    item.DimensionOrganizationUID = org_uid
    item.DimensionIndexPointer = pointer
    item.FunctionalGroupPointer = group
    item.DimensionDescriptionLabel = label
    return item


def _shared_groups(spacing: float) -> Dataset:
    measures = Dataset()
    measures.PixelSpacing = [round(spacing, 6), round(spacing, 6)]
    measures.SliceThickness = 1.0
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    transform = Dataset()
    transform.RescaleIntercept = -1024
    transform.RescaleSlope = 1
    transform.RescaleType = "HU"
    voi = Dataset()
    voi.WindowCenter = 40
    voi.WindowWidth = 400
    frame_type = Dataset()
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    frame_type.PixelPresentation = "MONOCHROME"
    frame_type.VolumetricProperties = "VOLUME"
    frame_type.VolumeBasedCalculationTechnique = "NONE"
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transform])
    shared.FrameVOILUTSequence = Sequence([voi])
    shared.CTImageFrameTypeSequence = Sequence([frame_type])
    return shared


def _frame_groups(i: int, spacing: float, rows: int, cols: int) -> Dataset:
    content = Dataset()
    content.StackID = "1"
    content.InStackPositionNumber = i + 1
    content.DimensionIndexValues = [1, i + 1]
    position = Dataset()
    position.ImagePositionPatient = [-spacing * cols / 2, -spacing * rows / 2, -float(i)]
    item = Dataset()
    item.FrameContentSequence = Sequence([content])
    item.PlanePositionSequence = Sequence([position])
    return item
