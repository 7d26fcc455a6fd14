"""The write path keeps no plaintext: a received instance is encrypted as it arrives, and
one being sent is decrypted into the outgoing PDUs (README, Guarantees: encrypted at rest).

A study whose pixel data repeats a random marker is sent to a box with its own temporary
directory; the box is killed while the study arrives and again while it leaves, and after
each kill every file under the data directory and the temporary directory is scanned for the
marker. A crash is the moment plaintext would be left behind.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from pathlib import Path

import pydicom
import pytest

from appliance.crypto import CHUNK_BYTES
from appliance.demo.synthetic import write_ct_study
from appliance.validation.elements import read_meta
from tests import rawpdu
from tests.integration.conftest import dest
from tests.integration.test_robustness import Modality
from tests.peers import CountingSCP
from tests.support.ports import free_port

MARKER = os.urandom(32)  # in clear only in the test's own files


def _marked_study(folder: Path, slices: int) -> list[Path]:
    files = write_ct_study(folder, slices=slices, rows=512, cols=512, seed=11)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.PixelData = (MARKER * (len(ds.PixelData) // len(MARKER) + 1))[:len(ds.PixelData)]
        ds.save_as(path)
    return files


def _kill_mid_data_set(box, ds: pydicom.Dataset, box_tmp: Path) -> None:
    """Send half of a data set (marker included) in fragments that are not the last, wait
    until the box has written them, and kill it."""
    data = rawpdu.encode_dataset(ds)
    half = data[:len(data) // 2]
    assert MARKER in half
    with rawpdu.connect(box.port) as sock:
        sock.sendall(rawpdu.associate_rq())
        accept = rawpdu.read_reply(sock, 10)
        assert accept is not None and accept.pdu_type == rawpdu.ASSOCIATE_AC
        sock.sendall(rawpdu.p_data([(3, 0x03, rawpdu.store_command(ds.SOPInstanceUID))]))
        for at in range(0, len(half), 16_000):  # within the 16 KiB PDUs it announced
            sock.sendall(rawpdu.p_data([(3, 0x00, half[at:at + 16_000])]))
        # a file holds at least a chunk of it (the box encrypts 256 KiB at a time)
        box.wait_for(lambda: _written(box.data_dir, box_tmp) >= CHUNK_BYTES, 10, "half a data set")
        box.kill9()


def _written(*roots: Path) -> int:
    """The size of the largest file under `roots` that is not the index."""
    return max((p.stat().st_size for root in roots for p in root.rglob("*")
                if p.is_file() and "index" not in p.parts), default=0)


def _marker_hits(*roots: Path) -> list[str]:
    """Files under `roots` holding the marker (read in pieces overlapping by its length)."""
    hits = []
    for root in roots:
        for path in (p for p in root.rglob("*") if p.is_file()):
            with open(path, "rb") as f:
                tail = b""
                while piece := f.read(1 << 20):
                    if MARKER in tail + piece:
                        hits.append(str(path.relative_to(root)))
                        break
                    tail = piece[-len(MARKER):]
    return hits


@pytest.fixture
def box_tmp(tmp_path, monkeypatch) -> Path:
    """The box process's TMPDIR (the test process keeps its own)."""
    folder = tmp_path / "box-tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def test_no_plaintext_of_a_received_instance_on_disk(make_box, box_tmp, tmp_path):
    files = _marked_study(tmp_path / "study", slices=30)
    box = make_box([dest("pacs", "PACS", free_port())]).start()  # nothing leaves
    _kill_mid_data_set(box, pydicom.dcmread(files[0]), box_tmp)
    assert _marker_hits(box.data_dir, box_tmp) == []
    box.start()
    modality = Modality(box.port)
    acknowledged = 0
    for n, path in enumerate(files):
        if n == 12:
            box.kill9()  # while the study arrives
        acknowledged += modality.send(path) == 0
    assert 12 <= acknowledged < len(files), "the kill came mid-study"
    assert _marker_hits(box.data_dir, box_tmp) == []
    box.start()  # and what start-up does with what the kill left
    assert box.studies()[0]["instances"] == acknowledged
    assert _marker_hits(box.data_dir, box_tmp) == []


def test_no_plaintext_of_a_sent_instance_on_disk(make_box, box_tmp, tmp_path):
    files = _marked_study(tmp_path / "study", slices=30)
    with CountingSCP(ae_title="PACS", delay_s=0.05) as scp:
        box = make_box([dest("pacs", "PACS", scp.port)]).start()
        modality = Modality(box.port)
        assert all(modality.send(path) == 0 for path in files)
        modality.close()
        assert box.wait_for(lambda: len(scp.uids()) >= 5, 60, "delivery under way")
        box.kill9()  # while the study leaves
        assert len(scp.uids()) < len(files), "the kill came mid-delivery"
        assert _marker_hits(box.data_dir, box_tmp) == []
        box.start()
        box.wait_states("complete", timeout_s=120)
        assert len(scp.uids()) == len(files)
        assert _marker_hits(box.data_dir, box_tmp) == []


KILLS = 50


def _dataset_digest(path: Path) -> str:
    """sha256 of a file's data set bytes (after its file meta), as a PACS receives them."""
    with open(path, "rb") as fp:
        size = fp.seek(0, 2)
        fp.seek(0)
        _, offset = read_meta(fp, size)
        fp.seek(offset)
        return hashlib.sha256(fp.read()).hexdigest()


def _send_until_killed(port: int, files: list[Path], acknowledged: dict[str, Path]) -> None:
    """Send `files` on one association, recording what the box acknowledged, until the
    association ends (the box was killed) or all went."""
    try:
        modality = Modality(port)
    except AssertionError:
        return  # killed before it associated
    for path in files:
        status = modality.send(path)
        if status is None:
            return
        if status == 0:
            acknowledged[pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID] = path
    modality.close()


@pytest.mark.slow
def test_random_kills_of_the_write_path_lose_no_acknowledged_instance(make_box, tmp_path):
    """The box is killed (-9) 50 times at random moments while a modality sends: while a
    data set arrives, is validated, synced, indexed or answered. After each restart every
    instance it ever acknowledged must be there; at the end all of them reach a PACS byte
    for byte, each once."""
    files = write_ct_study(tmp_path / "ct", slices=60, rows=256, cols=256, seed=12)
    rng = random.Random(int(os.environ.get("FLUXBOX_KILL_SEED", "20261203")))
    pacs_port = free_port()  # nothing listens there until the end: nothing leaves meanwhile
    box = make_box([dest("pacs", "PACS", pacs_port)]).start()
    acknowledged: dict[str, Path] = {}
    for _ in range(KILLS):
        start = rng.randrange(len(files))
        sender = threading.Thread(target=_send_until_killed,
                                  args=(box.port, files[start:] + files[:start], acknowledged))
        sender.start()
        time.sleep(rng.uniform(0.0, 0.4))
        box.kill9()
        sender.join(30)
        assert not sender.is_alive()
        box.start()
        held = sum(row["instances"] for row in box.studies())
        assert held >= len(acknowledged), "an acknowledged instance was lost"
    assert len(acknowledged) >= 10, "the kills left too little acknowledged to prove much"
    with CountingSCP(ae_title="PACS", port=pacs_port, keep_data=True) as scp:
        box.wait_states("complete", timeout_s=180)
        received = {r.sop_instance_uid: r.sha256 for r in scp.records if r.status == 0}
        for uid, path in acknowledged.items():
            assert received.get(uid) == _dataset_digest(path), f"instance {uid} not intact"
        assert scp.resent() == {}
