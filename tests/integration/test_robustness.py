"""Crashes, bad input, full disks and unknown callers: clear failures, nothing lost."""

from __future__ import annotations

import math
import os
import select
import subprocess
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification

from appliance.delivery.acks import ACK_GROUP_MAX, ACK_GROUP_S
from appliance.demo.synthetic import write_ct_study, write_multiframe
from tests import rawpdu
from tests.integration.conftest import dest
from tests.peers import CountingSCP, peer_env, store_responses, storescu


class Modality:
    """A pynetdicom sender that stops wherever the test says (deterministic crash points)."""

    def __init__(self, port: int, calling_aet: str = "MODALITY",
                 sop_class: str = CTImageStorage) -> None:
        ae = AE(ae_title=calling_aet)
        ae.add_requested_context(sop_class)
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
        # The one in flight, and the answers of the group not yet committed: at most those
        # that came within ACK_GROUP_S (the PACS answers one per delay_s) and the next.
        uncommitted = min(ACK_GROUP_MAX, math.ceil(ACK_GROUP_S / 0.05) + 1)
        assert sum(n - 1 for n in scp.counts.values()) <= 1 + uncommitted


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


def test_a_missing_blob_fails_that_instance_and_the_queue_goes_on(make_box, ct40, tmp_path):
    """One instance's stored copy vanishes (a bad sector, a careless hand): that instance is
    failed with a reason, and every other instance, of its study and of later studies,
    still reaches the PACS."""
    later = write_ct_study(tmp_path / "later", slices=3, rows=64, cols=64, seed=11)
    scp = CountingSCP(ae_title="PACS")
    scp.start()
    scp.stop()  # down while both studies are queued
    box = make_box([dest("pacs", "PACS", scp.port)]).start()
    storescu("127.0.0.1", box.port, ct40[:4], called_aet="FLUXBOX")
    storescu("127.0.0.1", box.port, later, called_aet="FLUXBOX")
    box.wait_for(lambda: len(box.studies()) == 2
                 and all(r["state"] in ("queued", "sending") for r in box.studies()),
                 30, "both studies queued")
    assert box.stop() == 0
    blobs = sorted(box.data_dir.rglob("*.blob"), key=lambda p: p.stat().st_mtime)
    blobs[0].unlink()  # the first instance of the first study
    with scp:
        box.start()
        box.wait_for(lambda: len(scp.uids()) == 3 + 3, 60, "every other instance delivered")
        box.wait_for(lambda: sorted(r["state"] for r in box.studies()) == ["complete", "failed"],
                     30, "first study failed, the later one complete")
    assert scp.uids() == _uids(ct40[1:4]) | _uids(later)
    first = next(r for r in box.studies() if r["state"] == "failed")
    (destination,) = first["destinations"]
    assert (destination["delivered"], destination["failed"]) == (3, 1)
    assert "stored copy cannot be sent" in " ".join(destination.get("reasons", []))


def test_sigterm_during_a_c_store_lets_it_finish_and_keeps_it(make_box, tmp_path):
    """SIGTERM while a modality is sending: the C-STORE in flight finishes with Success (the
    box drains open associations before it closes its index), the box exits 0 with no
    error, and the instance is there after the restart."""
    big = write_multiframe(tmp_path / "big.dcm", size_bytes=120 * 1024 * 1024)
    box = make_box([dest("pacs", "PACS", 9)], transmit="study_quiet_s = 600").start()
    sop_class = pydicom.dcmread(big, stop_before_pixels=True).SOPClassUID
    modality = Modality(box.port, sop_class=sop_class)
    box.wait_for(lambda: box.status()["receiving"]["associations"] == 1, 10, "association open")
    statuses: list[object] = []

    def send() -> None:
        try:
            statuses.append(modality.send(str(big)))
        except Exception as exc:  # reported by the assertion below
            statuses.append(repr(exc))

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert box.stop(timeout_s=60) == 0
    finally:
        sender.join(60)
    assert statuses == [0], f"the C-STORE in flight at SIGTERM got {statuses}"
    log = box.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-2000:]
    box.start()
    (row,) = box.studies()
    assert row["instances"] == 1


def _blob_files(data_dir: Path) -> list[Path]:
    return list((data_dir / "blobs").glob("*/*"))


def test_a_c_store_that_never_ends_is_cut_at_the_reserve_and_leaves_no_spool(
        make_box, small_fs, ct40):
    """A sender streams one data set for ever (issue 7): the box aborts it once it has eaten
    half the disk reserve, removes the partial (encrypted) blob, and stores the next
    modality's instances as before."""
    box = make_box([dest("pacs", "PACS", 9)], box="reserve_mb = 8",
                   data_dir=small_fs / "data").start()
    sock = rawpdu.connect(box.port)
    with sock:
        sock.sendall(rawpdu.associate_rq())
        accept = rawpdu.read_reply(sock, 10)
        assert accept is not None and accept.pdu_type == rawpdu.ASSOCIATE_AC
        sock.sendall(rawpdu.p_data([(3, 0x03, rawpdu.store_command(generate_uid()))]))
        fragment = rawpdu.p_data([(3, 0x00, bytes(64 * 1024))])  # never the last fragment
        assert rawpdu.send_quietly(sock, fragment)
        # written encrypted on the data partition as it arrives (never the system's /tmp)
        box.wait_for(lambda: _blob_files(box.data_dir), 10, "a blob being written")
        sent, reply = len(fragment), None
        while sent < 64 * 1024 * 1024 and reply is None:  # the box answers, or drops
            if not rawpdu.send_quietly(sock, fragment):
                break
            sent += len(fragment)
            if select.select([sock], [], [], 0)[0]:
                reply = rawpdu.read_reply(sock, 10)
    assert reply is not None and reply.pdu_type == rawpdu.ABORT, reply
    assert sent < 24 * 1024 * 1024, "the box took more than its file system holds"
    box.wait_for(lambda: not _blob_files(box.data_dir), 10, "the partial blob removed")
    done = storescu("127.0.0.1", box.port, ct40[:2], called_aet="FLUXBOX")
    assert {a for _, a in store_responses(done)} == {"Success"}
