"""The interoperability corpus: real DICOM files the project did not write itself.

Sources (all installed by the `test` extra):
- pydicom's own test files (`pydicom/data/test_files`);
- the `pydicom-data` package (`data_store/data`): the larger files pydicom's tests download;
- structured reports, key-object selections, presentation states, segmentations, a
  parametric map and a legacy converted enhanced CT made with highdicom from pydicom's
  CT_small.dcm, and an encapsulated PDF made with pydicom (`make_objects`);
- pyjpegls's JPEG-LS conformance streams (ISO/IEC 14495 test images, lossless and
  near-lossless), each put as it is into a secondary capture (`make_objects`). The other
  codec packages (pylibjpeg-libjpeg, -openjpeg, -rle) ship no test data in their wheels.

`corpus()` says for each file whether it is in and why, or why it is skipped. A file in
the corpus is either expected to be accepted (the box must deliver it faithfully) or,
when it is truly malformed, expected to be refused (the test checks the refusal). The
expectations come from an independent reading (pydicom, and the facts listed in
`MALFORMED`), never from the box's own validator.

Several shipped files share a SOP Instance UID (one image in many encodings). A SOP
Instance UID names one instance, so each such file goes in a `round` of its own: round 0
holds the first file of every UID, round 1 the second, and so on.
"""

from __future__ import annotations

import struct
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.uid import UID

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"

# Facts pydicom tolerates but the box must refuse (PRODUCT.md: what cannot be kept
# faithfully); file name -> why.
MALFORMED = {
    "MR_truncated.dcm": "Pixel Data cut short: a truncated value",
    "rtplan_truncated.dcm": "the data set ends inside a value: a truncated value",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "the last fragment is cut short: a "
                                                 "truncated value",
    "MR_small_padded.dcm": "native Pixel Data 128 bytes longer than Rows x Columns x Bits "
                           "Allocated say",
    "SC_rgb_jpeg.dcm": "implicit VR data set under an explicit VR transfer syntax: file meta "
                       "contradicting the data set",
}
# Not sendable as a C-STORE at all; file or directory name -> why.
NOT_INSTANCES = {
    "dicomdirtests/DICOMDIR": "DICOMDIR",
}
_NOT_DICOM_SUFFIXES = {".py", ".pyc", ".txt", ".json", ".gz", ".bz2", ".zip", ".md", ".dump",
                       ".icc", ".rst"}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class Item:
    """One corpus file and what the box must do with it."""

    path: Path
    source: str  # "pydicom", "pydicom-data" or "made" (see make_objects)
    sop_class: str
    transfer_syntax: str
    sop_instance: str
    expect: str  # "accept" or "refuse"
    why: str
    round: int = 0
    # The file meta names another SOP Instance (or Class) UID than the data set: a sender
    # that builds the C-STORE command from the data set (DCMTK) is accepted, one that takes
    # it from the file meta (pynetdicom sending from a file) is refused, rightly.
    meta_contradicts: bool = False

    @property
    def name(self) -> str:
        return f"{self.source}:{self.path.name}"


@dataclass(frozen=True)
class Skipped:
    path: Path
    why: str


def pydicom_data_files() -> Path | None:
    """Where the pydicom-data package keeps its files, if installed."""
    try:
        import data_store  # the pydicom-data package
    except ImportError:
        return None
    return Path(data_store.__file__).parent / "data"


def _valid_uid(value: object) -> bool:
    return bool(value) and UID(str(value)).is_valid


def _judge(path: Path, source: str) -> Item | Skipped:
    """In (with what is expected and why) or skipped (with why), from pydicom's reading."""
    if path.suffix.lower() in _NOT_DICOM_SUFFIXES or path.name.startswith("README"):
        return Skipped(path, "not a DICOM file")
    head = path.read_bytes()[:132]
    if len(head) < 132 or head[128:] != b"DICM":
        return Skipped(path, "no Part 10 header: a sender cannot tell its transfer syntax")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many types for broken files
            return Skipped(path, f"pydicom cannot read it ({type(exc).__name__})")
    meta = ds.file_meta
    syntax = str(meta.get("TransferSyntaxUID", "") or "")
    meta_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if meta_class == MEDIA_STORAGE_DIRECTORY:
        return Skipped(path, "DICOMDIR: a file-set directory, not an instance to store")
    if not syntax:
        return Skipped(path, "file meta without a transfer syntax: no context can carry it")
    if not (sop_class or meta_class):
        return Skipped(path, "no SOP Class UID anywhere: no context can carry it")
    instance = str(ds.get("SOPInstanceUID", "") or meta.get("MediaStorageSOPInstanceUID", ""))
    if not instance:
        return Skipped(path, "no SOP Instance UID anywhere: a sender cannot name it")
    contradicts = (str(meta.get("MediaStorageSOPInstanceUID", "")),
                   meta_class) != (str(ds.get("SOPInstanceUID", "")), sop_class)
    item = Item(path, source, sop_class or meta_class, syntax, instance, "accept",
                f"{UID(sop_class or meta_class).name} in {UID(syntax).name}"
                + ("; its file meta names other UIDs" if contradicts else ""),
                meta_contradicts=contradicts)
    refusal = MALFORMED.get(path.name)
    if not sop_class:
        refusal = "no SOP Class UID in the data set"
    elif not _valid_uid(ds.get("SOPInstanceUID")):
        refusal = "SOP Instance UID missing or not a UID"
    elif not _valid_uid(ds.get("StudyInstanceUID")):
        refusal = "Study Instance UID missing or not a UID"
    if refusal:
        return Item(**{**item.__dict__, "expect": "refuse", "why": refusal})
    return item


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def corpus(made_dir: Path | None = None) -> tuple[list[Item], list[Skipped]]:
    """Every candidate file, judged; `made_dir` holds the highdicom files (`make_highdicom`)."""
    sources = [("pydicom", PYDICOM_FILES)]
    data = pydicom_data_files()
    if data is not None:
        sources.append(("pydicom-data", data))
    if made_dir is not None:
        sources.append(("made", made_dir))
    items: list[Item] = []
    skipped: list[Skipped] = []
    for source, root in sources:
        for path in _files(root):
            judged = _judge(path, source)
            (items if isinstance(judged, Item) else skipped).append(judged)
    seen: Counter[str] = Counter()
    rounds = []
    for item in items:
        rounds.append(Item(**{**item.__dict__, "round": seen[item.sop_instance]}))
        seen[item.sop_instance] += 1
    return rounds, skipped


def make_objects(out_dir: Path) -> list[Path]:
    """The made part of the corpus (see the module docstring); returns the files written."""
    return [*make_highdicom(out_dir), *wrap_jpeg_ls(out_dir), make_pdf(out_dir)]


def _secondary_capture(sop_class: str, series: int) -> pydicom.Dataset:
    from pydicom.uid import generate_uid

    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Corpus^Made", "MADE", "", ""
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20250101", "120000", "1", ""
    ds.ReferringPhysicianName, ds.SeriesNumber, ds.InstanceNumber = "", series, 1
    ds.Modality, ds.ConversionType = "OT", "WSD"
    return ds


def _save(ds: pydicom.Dataset, syntax: str, path: Path) -> Path:
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    return path


def wrap_jpeg_ls(out_dir: Path) -> list[Path]:
    """pyjpegls's grey-scale conformance streams, each the one fragment of a secondary
    capture: E0 streams are lossless, E3 near-lossless (NEAR=3)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless, JPEGLSNearLossless

    try:
        import jpeg_ls
    except ImportError:
        return []
    streams = Path(jpeg_ls.__file__).parent / "tests" / "jlsimV100"
    paths = []
    for n, name in enumerate(["T8NDE0.JLS", "T8NDE3.JLS", "T16E0.JLS", "T16E3.JLS"]):
        data = (streams / name).read_bytes()
        sof = data.index(b"\xff\xf7")  # SOF55: length, precision, lines, columns, components
        bits, rows, cols = data[sof + 4], *struct.unpack(">HH", data[sof + 5:sof + 9])
        ds = _secondary_capture("1.2.840.10008.5.1.4.1.1.7", 910 + n)
        ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8 if bits <= 8 else 16), bits, bits - 1
        ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
        ds.PixelData = encapsulate([data + b"\0" * (len(data) % 2)])
        ds["PixelData"].VR = "OB"
        syntax = JPEGLSLossless if name.endswith("E0.JLS") else JPEGLSNearLossless
        paths.append(_save(ds, syntax, out_dir / f"jls_{name.lower()}.dcm"))
    return paths


def make_pdf(out_dir: Path) -> Path:
    """An Encapsulated PDF (no pixel data) around a one-page PDF."""
    from pydicom.uid import ExplicitVRLittleEndian

    ds = _secondary_capture("1.2.840.10008.5.1.4.1.1.104.1", 920)
    ds.Modality, ds.BurnedInAnnotation, ds.DocumentTitle = "DOC", "NO", "Corpus report"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime = "20250101", "120000", ""
    pdf = (b"%PDF-1.1\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids"
           b"[3 0 R]/Count 1>>endobj 3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 99 99]>>"
           b"endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
    ds.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)
    ds.EncapsulatedDocumentLength = len(pdf)
    return _save(ds, ExplicitVRLittleEndian, out_dir / "pdf.dcm")


def make_highdicom(out_dir: Path) -> list[Path]:
    """SR, KOS, PR, SEG, a parametric map and a legacy converted enhanced CT made with
    highdicom from pydicom's CT_small.dcm; returns the files written."""
    import highdicom as hd
    import numpy as np
    from pydicom.sr.codedict import codes

    out_dir.mkdir(parents=True, exist_ok=True)
    ct = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    common = {"series_number": 900, "instance_number": 1, "manufacturer": "Flux Box tests"}
    device = {"manufacturer_model_name": "tests", "software_versions": "1",
              "device_serial_number": "1"}

    def uids() -> dict:
        return {"series_instance_uid": hd.UID(), "sop_instance_uid": hd.UID()}

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name="Reader^One"))
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
        graphic_data=np.array([[32.0, 32.0], [40.0, 32.0]]),
        source_image=hd.sr.SourceImageForRegion.from_source_image(ct))
    measurements = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="ROI 1"),
        referenced_region=region, finding_type=codes.SCT.Neoplasm,
        measurements=[hd.sr.Measurement(name=codes.SCT.Area, value=12.5,
                                        unit=codes.UCUM.SquareMillimeter)])
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=[measurements])
    made = {}
    for cls in (hd.sr.ComprehensiveSR, hd.sr.EnhancedSR, hd.sr.Comprehensive3DSR):
        made[f"sr_{cls.__name__}"] = cls(evidence=[ct], content=report, **uids(), **common)
    made["kos"] = hd.ko.KeyObjectSelectionDocument(
        evidence=[ct], content=hd.ko.KeyObjectSelection(document_title=codes.DCM.Manifest,
                                                        referenced_objects=[ct]),
        **uids(), **common)
    layer = hd.pr.GraphicLayer(layer_name="L", order=1)
    made["pr"] = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[ct], **uids(), **common, **device, content_label="ANNOTATIONS",
        graphic_layers=[layer],
        graphic_annotations=[hd.pr.GraphicAnnotation(
            referenced_images=[ct], graphic_layer=layer,
            graphic_objects=[hd.pr.GraphicObject(
                graphic_type=hd.pr.GraphicTypeValues.POINT, graphic_data=np.array([[10.0, 10.0]]),
                units=hd.pr.AnnotationUnitsValues.PIXEL)])])
    mask = np.zeros((1, ct.Rows, ct.Columns), dtype=bool)
    mask[0, 20:40, 20:40] = True
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="box", segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Bone,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    for syntax, kind in [(pydicom.uid.ExplicitVRLittleEndian, "BINARY"),
                         (pydicom.uid.ImplicitVRLittleEndian, "BINARY"),
                         (pydicom.uid.RLELossless, "FRACTIONAL"),
                         (pydicom.uid.JPEG2000Lossless, "FRACTIONAL"),
                         (pydicom.uid.JPEGLSLossless, "FRACTIONAL")]:
        made[f"seg_{syntax.keyword}"] = hd.seg.Segmentation(
            source_images=[ct], pixel_array=mask,
            segmentation_type=hd.seg.SegmentationTypeValues[kind], segment_descriptions=[segment],
            **uids(), **common, **device, transfer_syntax_uid=syntax)
    made["parametric_map"] = hd.pm.ParametricMap(
        source_images=[ct], pixel_array=np.linspace(0, 1, ct.Rows * ct.Columns,
                                                    dtype=np.float32).reshape(1, ct.Rows, -1),
        **uids(), series_number=902, instance_number=1, manufacturer="Flux Box tests", **device,
        contains_recognizable_visual_features=False, window_center=0.5, window_width=1.0,
        real_world_value_mappings=[hd.pm.RealWorldValueMapping(
            lut_label="L", lut_explanation="ratio", unit=codes.UCUM.NoUnits,
            value_range=(0.0, 1.0), intercept=0, slope=1)])
    made["legacy_ct"] = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=[ct], series_instance_uid=hd.UID(), series_number=901,
        sop_instance_uid=hd.UID(), instance_number=1)
    paths = []
    for name, ds in made.items():
        path = out_dir / f"hd_{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def representative(items: list[Item], max_bytes: int = 2 << 20) -> list[Item]:
    """For the pairs that do not take the whole corpus: of the files to accept whatever the
    sender, the smallest of each (SOP class, transfer syntax) under `max_bytes`, each SOP
    Instance UID once (so all go in one round)."""
    chosen: dict[tuple[str, str], Item] = {}
    used: set[str] = set()
    candidates = [i for i in items if i.expect == "accept" and not i.meta_contradicts
                  and i.path.stat().st_size <= max_bytes]
    for item in sorted(candidates, key=lambda i: (i.path.stat().st_size, i.name)):
        key = (item.sop_class, item.transfer_syntax)
        if key not in chosen and item.sop_instance not in used:
            chosen[key] = item
            used.add(item.sop_instance)
    return [Item(**{**i.__dict__, "round": 0}) for i in sorted(chosen.values(),
                                                               key=lambda i: i.name)]


def coverage(items: list[Item]) -> tuple[set[str], set[str]]:
    """The SOP classes and transfer syntaxes of the files expected to be accepted."""
    accepted = [i for i in items if i.expect == "accept"]
    return {i.sop_class for i in accepted}, {i.transfer_syntax for i in accepted}


if __name__ == "__main__":  # python -m tests.corpus: the list, for people
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        make_objects(Path(tmp))
        items, skipped = corpus(Path(tmp))
        for item in items:
            print(f"{item.expect:<7} r{item.round:<2} {item.name:<55} {item.why}")
        for skip in skipped:
            print(f"skip            {skip.path.name:<55} {skip.why}")
        classes, syntaxes = coverage(items)
        print(f"{len(items)} in ({sum(i.expect == 'accept' for i in items)} to accept), "
              f"{len(skipped)} skipped; {len(classes)} SOP classes, {len(syntaxes)} syntaxes",
              file=sys.stderr)
