"""What every synthetic study shares: UIDs derived from the study, the file meta, the
patient, study and series attributes, writing a Part 10 file."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")
MG_FOR_PRESENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.2")

_MANUFACTURER = "Flux Box"
_MODEL = "Synthetic Phantom"
_SOFTWARE = "fluxbox-synthetic 1"
PIXEL_DATA_TAG = struct.pack("<HH", 0x7FE0, 0x0010)
MAX_ELEMENT_LENGTH = 0xFFFFFFFE



@dataclass(frozen=True)
class Study:
    """Patient and study level values shared by every instance of a study."""

    study_uid: str
    patient_id: str
    patient_name: str
    accession: str
    study_date: str
    study_time: str
    description: str
    station_name: str


def derived_uid(*parts: object) -> UID:
    """A UID that depends only on ``parts``."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def make_study(
    study_uid: str | None,
    patient_id: str,
    patient_name: str | None,
    accession: str | None,
    study_date: str | None,
    description: str,
    station_name: str,
) -> Study:
    uid = study_uid or generate_uid()
    digest = hashlib.sha256(uid.encode()).hexdigest()
    return Study(
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
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def base_dataset(study: Study, *, modality: str, series_uid: str, series_number: int,
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


def set_sop(ds: Dataset, sop_class: str, sop_instance: str) -> None:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.file_meta = _file_meta(sop_class, sop_instance)


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item
