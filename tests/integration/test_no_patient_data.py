"""No patient-identifying value reaches the log, `status`, `studies`, the metrics or the
console's main screen, and none lies in clear text on the data partition: checked end to
end, with a study that goes through every path that prints something about it (stored,
imperfect and recorded as a finding, refused, refused by the PACS, failed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from appliance.demo.synthetic import write_ct_study
from tests.integration.conftest import dest
from tests.integration.test_console import tmux, wait_screen
from tests.peers import CountingSCP, free_port, storescu

NAME = "Ødegård^Åsmund"
PATIENT_ID = "PID-SECRET-7731"
ACCESSION = "ACC-SECRET-4411"
BIRTH_DATE = "19510317"
BAD_BIRTH_DATE = "17.03.1951"  # not a DA: recorded as a finding, its value must not show
OTHER_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture, refused by the PACS below


def _clear_texts() -> list[bytes]:
    """Each identifying value in every encoding a file or log line could carry it in."""
    texts = [PATIENT_ID, ACCESSION, BIRTH_DATE, BAD_BIRTH_DATE, "Ødegård", "Åsmund"]
    out = {t.encode("utf-8") for t in texts} | {t.encode("latin-1") for t in texts}
    return sorted(out)


def _patient_study(tmp_path: Path) -> list[Path]:
    """Four instances of one study: two plain, one with an invalid birth date (a finding),
    one of a SOP class the PACS refuses; plus, last, one with short pixel data (refused)."""
    files = write_ct_study(tmp_path / "ct", slices=5, rows=32, cols=32, seed=5)
    study_uid = generate_uid()
    for n, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.StudyInstanceUID = study_uid
        ds.PatientName, ds.PatientID, ds.AccessionNumber = NAME, PATIENT_ID, ACCESSION
        ds.PatientBirthDate = BAD_BIRTH_DATE if n == 2 else BIRTH_DATE
        if n == 3:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = OTHER_CLASS
        if n == 4:
            ds.PixelData = ds.PixelData[:-10]
        ds.save_as(path, enforce_file_format=True)
    return files


def _views(box, metrics_port: int) -> dict[str, str]:
    """Everything the box shows a person or a script, by name."""
    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "appliance", *args, "--config",
                               str(box.config_path)], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    return {"studies": cli("studies"), "studies --json": cli("studies", "--json"),
            "status": cli("status"), "status --json": cli("status", "--json"),
            "metrics": metrics}


def _console_screen(box) -> str:
    session = f"fluxbox-console-{box.port}"
    command = f"{sys.executable} -m appliance console --config {box.config_path}"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", command)
    try:
        return wait_screen(session, "QUEUE")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True,
                       timeout=10)


def _files_holding(root: Path, texts: list[bytes]) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        content = path.read_bytes()
        found += [f"{path.relative_to(root)}: {t!r}" for t in texts if t in content]
    return found


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_no_patient_value_in_logs_views_console_or_clear_on_disk(make_box, tmp_path):
    files = _patient_study(tmp_path)
    metrics_port = free_port()
    with CountingSCP(ae_title="PACS", refuse_sop_classes={OTHER_CLASS}) as scp:
        box = make_box([dest("pacs", "PACS", scp.port)],
                       box=f'metrics_listen = "127.0.0.1:{metrics_port}"').start()
        storescu("127.0.0.1", box.port, files, called_aet="FLUXBOX", extra_args=["-nh"])
        (row,) = box.wait_states("failed", timeout_s=60)
        assert row["findings"], "the invalid birth date is recorded as a finding"
        assert box.status()["receiving"]["refused"] == 1
        assert len(scp.uids()) == 3
        shown = _views(box, metrics_port)
        shown["console"] = _console_screen(box)
        assert box.stop() == 0
    shown["log"] = box.log()

    texts = _clear_texts()
    holding = {hit.split(":")[0] for hit in _files_holding(files[0].parent, texts)}
    assert holding == {f.name for f in files}, "the search finds them where they are"
    leaks = [f"{view}: {t.decode(errors='replace')}" for view, out in shown.items()
             for t in texts if t.decode(errors="replace") in out]
    assert not leaks, leaks
    assert not _files_holding(box.data_dir, texts)
