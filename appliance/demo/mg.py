"""A synthetic mammography study: four views, for presentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from appliance.demo.parts import (
    MG_FOR_PRESENTATION_STORAGE,
    base_dataset,
    code,
    derived_uid,
    make_study,
    set_sop,
    write,
)
from appliance.demo.phantoms import fill_ellipse

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
    smooth: np.ndarray = (a @ coarse @ b.T).astype(np.float32)
    return smooth


def _blur_matrix(n: int, k: int) -> np.ndarray:
    """Gaussian interpolation from k coarse samples to n pixels (n x k), rows sum to 1."""
    pos = (np.arange(n, dtype=np.float32) + 0.5) * k / n - 0.5
    d = pos[:, None] - np.arange(k, dtype=np.float32)[None, :]
    m = np.exp(-0.5 * (d / 0.8) ** 2)
    blur: np.ndarray = (m / m.sum(axis=1, keepdims=True)).astype(np.float32)
    return blur


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
        fill_ellipse(img, cx, cy, r, r, 0.15 * top, add=True)
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
    study = make_study(study_uid, patient_id, patient_name, accession, study_date,
                        study_description, station_name)
    series_uid = derived_uid(study.study_uid, "mg-series", seed)
    ds = base_dataset(study, modality="MG", series_uid=series_uid, series_number=1,
                       series_description="SCREENING FOR PRESENTATION")
    _mg_image_attributes(ds, rows, cols, bits_stored)
    paths = []
    for i in range(views):
        laterality, view = _MG_VIEWS[i % len(_MG_VIEWS)]
        set_sop(ds, MG_FOR_PRESENTATION_STORAGE, derived_uid(study.study_uid, "mg", seed, i))
        ds.InstanceNumber = i + 1
        ds.ImageLaterality = laterality
        ds.ViewPosition = view
        ds.PatientOrientation = _PATIENT_ORIENTATION[(laterality, view)]
        ds.ViewCodeSequence = Sequence([_view_code(view)])
        ds.PositionerPrimaryAngle = 0 if view == "CC" else (45 if laterality == "R" else -45)
        ds.PixelData = _mg_pixels(rows, cols, laterality, view, bits_stored, rng).tobytes()
        paths.append(write(ds, out_dir / f"MG{i + 1:03d}_{laterality}{view}.dcm"))
    return paths


def _view_code(view: str) -> Dataset:
    item = code(*_VIEW_CODES[view])
    item.ViewModifierCodeSequence = Sequence()
    return item


def _mg_image_attributes(ds: Dataset, rows: int, cols: int, bits: int) -> None:
    """DX series/image/detector/positioning and mammography modules (not per view)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "BREAST"
    ds.AnatomicRegionSequence = Sequence([code("76752008", "SCT", "Breast")])
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
