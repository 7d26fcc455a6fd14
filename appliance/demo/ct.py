"""A synthetic CT study: one slice an instance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from appliance.demo.parts import (
    CT_IMAGE_STORAGE,
    base_dataset,
    derived_uid,
    make_study,
    set_sop,
    write,
)
from appliance.demo.phantoms import ct_pixels, random_nodules


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
    nodules = random_nodules(rng)
    study = make_study(study_uid, patient_id, patient_name, accession, study_date,
                        study_description, station_name)
    series_uid = derived_uid(study.study_uid, "ct-series", seed)
    ds = base_dataset(study, modality="CT", series_uid=series_uid, series_number=2,
                       series_description="AXIAL 1.0 SYNTHETIC")
    _ct_image_attributes(ds, rows, cols, slices, derived_uid(study.study_uid, "for", seed))
    spacing = 360.0 / max(rows, cols)
    thickness = 1.0
    paths = []
    for i in range(slices):
        sop_uid = derived_uid(study.study_uid, "ct", seed, i)
        set_sop(ds, CT_IMAGE_STORAGE, sop_uid)
        z_mm = -i * thickness
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-spacing * cols / 2, -spacing * rows / 2, z_mm]
        ds.SliceLocation = z_mm
        z = i / max(1, slices - 1)
        ds.PixelData = ct_pixels(rows, cols, z, nodules, rng).tobytes()
        paths.append(write(ds, out_dir / f"CT{i + 1:05d}.dcm"))
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
