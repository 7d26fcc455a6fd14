"""Fixtures for integration tests: real peers on loopback and the box as a real process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from appliance.demo.synthetic import write_ct_study
from tests.boxproc import BoxProcess, box_toml, site_toml
from tests.peers import free_port

# Real files in many encodings: uncompressed LE/BE, implicit, deflate, RLE,
# JPEG baseline, JPEG 2000, JPEG-LS, multi-frame, RGB.
DIVERSE = [
    "CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
    "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "SC_rgb_jpeg_dcmtk.dcm", "image_dfl.dcm",
    "rtdose.dcm", "examples_ybr_color.dcm", "liver_1frame.dcm",
]


@pytest.fixture(scope="session")
def diverse_files(tmp_path_factory) -> list[Path]:
    """pydicom's sample files, each a study of its own (several share UIDs as shipped),
    each given a PatientID where it lacks one; encodings are kept as they are."""
    out = tmp_path_factory.mktemp("diverse")
    files = []
    for name in DIVERSE:
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.PatientID = ds.get("PatientID") or "FLX-TEST"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(out / name, enforce_file_format=True)
        files.append(out / name)
    return files


@pytest.fixture(scope="session")
def ct_study(tmp_path_factory) -> list[Path]:
    """A small synthetic CT study: 12 slices of 64x64."""
    return write_ct_study(tmp_path_factory.mktemp("ct"), slices=12, rows=64, cols=64, seed=7)


@pytest.fixture
def make_box(tmp_path) -> Iterator[Callable[..., BoxProcess]]:
    """Build (not start) a box whose one site "a" has the given destinations."""
    boxes: list[BoxProcess] = []

    def make(dests: list[dict], *, transmit: str = "", box: str = "", name: str = "box",
             sites: str | None = None, data_dir: Path | None = None) -> BoxProcess:
        workdir = tmp_path / name
        workdir.mkdir()
        text = box_toml(data_dir or workdir / "data", free_port(), sites or site_toml("a", dests),
                        transmit=transmit, box=box)
        proc = BoxProcess(text, workdir)
        boxes.append(proc)
        return proc

    yield make
    for proc in boxes:
        proc.kill9()


def dest(name: str, ae_title: str, port: int, **extra) -> dict:
    return {"name": name, "ae_title": ae_title, "host": "127.0.0.1", "port": port, **extra}
