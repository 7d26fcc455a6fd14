"""A synthetic Enhanced CT instance of any size, its frames written as they are made."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from appliance.demo.parts import (
    ENHANCED_CT_IMAGE_STORAGE,
    MAX_ELEMENT_LENGTH,
    PIXEL_DATA_TAG,
    Study,
    base_dataset,
    derived_uid,
    make_study,
    set_sop,
)
from appliance.demo.phantoms import ct_pixels, random_nodules


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
    if frames * frame_bytes > MAX_ELEMENT_LENGTH:
        raise ValueError("pixel data over 4 GiB cannot be encoded with a defined length")
    rng = np.random.default_rng(seed)
    study = make_study(study_uid, patient_id, None, None, None, "CT VOLUME", "MOBILE-CT1")
    ds = _enhanced_ct_header(study, rows, cols, frames, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        dcmwrite(f, ds, enforce_file_format=True)
        f.write(PIXEL_DATA_TAG + b"OW\x00\x00" + struct.pack("<I", frames * frame_bytes))
        for frame in _ct_frames(rows, cols, frames, rng):
            f.write(frame.astype("<u2", copy=False).data)
    return path


def _ct_frames(rows: int, cols: int, frames: int,
               rng: np.random.Generator) -> Iterator[np.ndarray]:
    nodules = random_nodules(rng)
    for i in range(frames):
        yield ct_pixels(rows, cols, i / max(1, frames - 1), nodules, rng)


def _enhanced_ct_header(study: Study, rows: int, cols: int, frames: int, seed: int) -> Dataset:
    """Every module of an Enhanced CT image except the Pixel Data element."""
    series_uid = derived_uid(study.study_uid, "mf-series", seed)
    ds = base_dataset(study, modality="CT", series_uid=series_uid, series_number=3,
                       series_description="VOLUME SYNTHETIC")
    set_sop(ds, ENHANCED_CT_IMAGE_STORAGE, derived_uid(study.study_uid, "mf", seed))
    spacing = 360.0 / max(rows, cols)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.AcquisitionDateTime = study.study_date + study.study_time
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = 1
    ds.ContentQualification = "PRODUCT"
    ds.FrameOfReferenceUID = derived_uid(study.study_uid, "mf-for", seed)
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
    dim_org_uid = derived_uid(study.study_uid, "mf-dim", seed)
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
