"""Crashes, bad input, full disks and unknown callers: clear failures, nothing lost."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification

from appliance.synthetic import write_ct_study, write_multiframe
from tests.integration.conftest import dest
from tests.peers import CountingSCP, StoreSCP, peer_env, store_responses, storescu


class Modality:
    """A pynetdicom sender that stops wherever the test says (deterministic crash points)."""

    def __init__(self, port: int, calling_aet: str = "MODALITY") -> None:
        ae = AE(ae_title=calling_aet)
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        self.assoc = ae.associate("127.0.0.1", port, ae_title="FLUXBOX")
        assert self.assoc.is_established

    def send(self, item) -> int | None:
        """The status of one C-STORE, or None when no answer came."""
        if not self.assoc.is_established:
            return None
        status = self.assoc.send_c_store(item)
        return int(status.Status) if "Status" in status else None

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()


def _uids(files) -> set[str]:
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in files}


@pytest.fixture(scope="module")
def ct40(tmp_path_factory) -> list[Path]:
    return write_ct_study(tmp_path_factory.mktemp("ct40"), slices=40, rows=128, cols=128, seed=3)


def test_kill_9_during_ingest_loses_no_acknowledged_instance(make_box, ct40):
    with CountingSCP(ae_title="PACS") as scp:
        box = make_box([dest("pacs", "PACS", scp.port)]).start()
        modality = Modality(box.port)
        acked = []
        for n, path in enumerate(ct40):
            if n == 15:
                box.kill9()
            if modality.send(path) == 0:
                acked.append(path)
        assert 15 <= len(acked) < len(ct40), "the crash happened mid-study"
        box.start()
        box.wait_states("complete", timeout_s=60)
        assert _uids(acked) <= scp.uids()
        assert scp.resent() == {}


def test_kill_9_during_delivery_resends_at_most_what_was_in_flight(make_box, ct40):
    with CountingSCP(ae_title="PACS", delay_s=0.05) as scp:
        box = make_box([dest("pacs", "PACS", scp.port)]).start()
        cp = storescu("127.0.0.1", box.port, ct40, called_aet="FLUXBOX")
        assert cp.returncode == 0
        assert box.wait_for(lambda: len(scp.uids()) >= 10, 60, "delivery under way")
        box.kill9()
        delivered_before = len(scp.uids())
        assert delivered_before < len(ct40), "the crash happened mid-delivery"
        box.start()
        box.wait_states("complete", timeout_s=60)
        assert scp.uids() == _uids(ct40)
        assert sum(n - 1 for n in scp.counts.values()) <= 1


def test_malformed_datasets_are_refused_and_the_box_keeps_serving(make_box, ct40, tmp_path,
                                                                  monkeypatch):
    with CountingSCP(ae_title="PACS") as scp:
        box = make_box([dest("pacs", "PACS", scp.port)]).start()
        modality = Modality(box.port)

        no_study = pydicom.dcmread(ct40[0])
        no_study.SOPInstanceUID = generate_uid()
        del no_study.StudyInstanceUID
        assert modality.send(no_study) == 0xA900

        short_pixels = pydicom.dcmread(ct40[1])
        short_pixels.SOPInstanceUID = generate_uid()
        short_pixels.PixelData = short_pixels.PixelData[:-100]
        assert modality.send(short_pixels) == 0xA900

        garbage = tmp_path / "garbage.dcm"
        ds = pydicom.dcmread(ct40[2])
        ds.save_as(garbage, enforce_file_format=True)
        raw = bytearray(garbage.read_bytes())
        meta_end = 144 + int.from_bytes(raw[140:144], "little")
        raw[meta_end:] = os.urandom(len(raw) - meta_end)
        garbage.write_bytes(bytes(raw))
        monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
        assert (modality.send(garbage) or 0) & 0xF000 in (0xA000, 0xC000)
        monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)

        assert modality.assoc.send_c_echo().Status == 0
        assert modality.send(ct40[3]) == 0
        modality.close()
        (row,) = box.wait_states("complete", timeout_s=60)
        assert row["instances"] == 1
        assert scp.uids() == _uids([ct40[3]])
        assert box.status()["receiving"]["refused"] == 3


def test_unknown_calling_ae_title_is_rejected(make_box):
    box = make_box([dest("pacs", "PACS", 9)], box='allowed_calling_aets = ["CT1"]').start()

    def echo(aet):
        return subprocess.run(["echoscu", "-aet", aet, "-aec", "FLUXBOX", "127.0.0.1",
                               str(box.port)], capture_output=True, text=True, timeout=30,
                              env=peer_env())

    stranger = echo("STRANGER")
    assert stranger.returncode != 0
    assert "Association Rejected" in stranger.stdout + stranger.stderr
    assert echo("CT1").returncode == 0


def test_sigterm_stops_cleanly_and_restart_resumes(make_box, ct40):
    scp = CountingSCP(ae_title="PACS")
    scp.start()
    scp.stop()  # keep its port: the PACS is down while the study is queued
    box = make_box([dest("pacs", "PACS", scp.port)]).start()
    storescu("127.0.0.1", box.port, ct40[:5], called_aet="FLUXBOX")
    box.wait_for(lambda: box.studies()[0]["state"] in ("queued", "sending"), 30, "queued")
    assert box.stop() == 0
    assert not (box.data_dir / "control.sock").exists()
    with scp:
        box.start()
        box.wait_states("complete", timeout_s=60)
        assert scp.uids() == _uids(ct40[:5])


@pytest.fixture
def small_fs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_refuses_new_instances_and_loses_nothing(make_box, small_fs, ct40):
    with CountingSCP(ae_title="PACS") as scp:
        box = make_box([dest("pacs", "PACS", scp.port)],
                       box="reserve_mb = 4", data_dir=small_fs / "data").start()
        first = storescu("127.0.0.1", box.port, ct40[:10], called_aet="FLUXBOX")
        assert {a for _, a in store_responses(first)} == {"Success"}

        filler = small_fs / "filler"
        free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 2 * 1024 * 1024))
        refused = storescu("127.0.0.1", box.port, ct40[10:12], called_aet="FLUXBOX",
                           extra_args=["-nh"])
        answers = [a for _, a in store_responses(refused)]
        assert answers and all("OutOfResources" in a for a in answers), answers
        status = box.status()
        assert status["health"] == "fault"
        assert any("disk" in e for e in status["errors"])

        filler.unlink()
        again = storescu("127.0.0.1", box.port, ct40[10:12], called_aet="FLUXBOX")
        assert {a for _, a in store_responses(again)} == {"Success"}
        box.wait_states("complete", timeout_s=60)
        assert scp.uids() == _uids(ct40[:12])


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _dataset_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(140)
        f.seek(144 + int.from_bytes(f.read(4), "little"))
        digest = hashlib.sha256()
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_500_mb_instance_is_received_and_delivered_with_bounded_memory(make_box, tmp_path):
    big = write_multiframe(tmp_path / "big.dcm", size_bytes=500 * 1024 * 1024)
    with StoreSCP(aet="PACS") as pacs:
        box = make_box([dest("pacs", "PACS", pacs.port)],
                       transmit="dimse_timeout_s = 120").start()
        peak = [0]
        stop = threading.Event()

        def watch():
            while not stop.wait(0.2):
                peak[0] = max(peak[0], _peak_rss_bytes(box.proc.pid))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        cp = storescu("127.0.0.1", box.port, [big], called_aet="FLUXBOX")
        assert [a for _, a in store_responses(cp)] == ["Success"], cp.stdout[-2000:]
        box.wait_states("complete", timeout_s=300)
        peak[0] = max(peak[0], _peak_rss_bytes(box.proc.pid))
        stop.set()
        watcher.join()
        (received,) = pacs.files()
        assert _dataset_sha256(received) == _dataset_sha256(big)
        assert peak[0] < 300 * 1024 * 1024, f"peak RSS {peak[0] >> 20} MB"
        time.sleep(0)
