"""Closing studies (StudyCloser) on a real store: quiet time, and an MPPS list of the
instances a study should hold, stepped with explicit times instead of sleeping."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from appliance.config import parse_config
from appliance.keystore import FileKeystore
from appliance.store import Store
from appliance.studies import StudyCloser
from appliance.validation import read_header

CT = Path(get_testdata_file("CT_small.dcm"))

CONFIG = """
[transmit]
study_quiet_s = 30
mpps_wait_s = 600
[[site]]
id = "a"
[[site.destination]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 11113
"""


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data", FileKeystore(tmp_path / "key").load_or_create())
    yield s
    s.close()


def _put(store: Store, path: Path, now: float) -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    header = read_header(path, command_sop_class=ds.SOPClassUID,
                         command_sop_instance=ds.SOPInstanceUID)
    store.put_instance(path, header, calling_aet="MOD", site="a", site_source="fixed", now=now)
    return header.sop_instance_uid


def _copy(tmp_path: Path, n: int) -> Path:
    ds = pydicom.dcmread(CT)
    ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{n}"
    out = tmp_path / f"ct{n}.dcm"
    ds.save_as(out, enforce_file_format=True)
    return out


def test_an_mpps_list_closes_the_study_once_and_a_late_instance_waits_the_quiet_time(
        store, tmp_path):
    closer = StudyCloser(store, parse_config(CONFIG, "t.toml"), lambda: set())
    first = _put(store, _copy(tmp_path, 1), now=100.0)
    study = store.studies()[0]
    closer.expect(study.study_uid, [first], now=101.0)
    assert [c.study_key for c in closer.close_once(102.0)] == [study.key], "closed by MPPS"
    assert store.study(study.key).expected == ()

    _put(store, _copy(tmp_path, 2), now=200.0)  # a late instance reopens the study
    assert closer.close_once(201.0) == [], "the old MPPS list must not close it at once"
    assert [c.study_key for c in closer.close_once(231.0)] == [study.key]
