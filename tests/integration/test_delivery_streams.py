"""Delivery streams each instance from its encrypted blob into the outgoing PDUs
(`appliance/delivery/cstore.py`, `wire.py`): the PACS gets the data set as the modality
sent it, byte for byte, in every encoding, with no plaintext written anywhere on the way,
and an instance of any size goes out in bounded memory.

GDCM ships no storage SCP (Debian's libgdcm-tools has gdcmscu, a client): it takes part
as the modality in `test_interop.py` and `test_large_instances.py`; the PACS here are
DCMTK storescp and pynetdicom (Orthanc: `test_core_path.py`, `test_interop.py`).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    generate_uid,
)

from appliance.demo.synthetic import write_ct_study, write_multiframe
from tests.integration.conftest import dest
from tests.peers import (
    CountingSCP,
    StoreSCP,
    dataset_part,
    dataset_sha256,
    store_responses,
    storescu,
)

RSS_LIMIT = 150 * 1024**2  # the product's delivery target (the ingest side measured 71 MB)
WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TMPFILE")


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _sent_by_storescu(files: list[Path], out: Path) -> dict[str, bytes]:
    """What storescu puts on the wire for each file (DCMTK may drop trailing padding):
    the data set a PACS receives from it directly, by SOP Instance UID."""
    with StoreSCP(aet="REFERENCE", out_dir=out) as reference:
        cp = storescu("127.0.0.1", reference.port, files, called_aet="REFERENCE")
        assert {a for _, a in store_responses(cp)} == {"Success"}, cp.stdout[-2000:]
        received = reference.files()
    return {_uid(p): dataset_part(p.read_bytes()) for p in received}


def _as_sent(data: bytes, syntax: str) -> bytes:
    """What the box forwards: the data set as received, a deflated one padded to even."""
    return data + b"\0" if syntax == DeflatedExplicitVRLittleEndian and len(data) % 2 else data


@pytest.mark.parametrize("pacs_kind", ["storescp", "pynetdicom"])
def test_every_encoding_reaches_the_pacs_byte_for_byte(make_box, diverse_files, ct_study,
                                                       tmp_path, pacs_kind):
    """Little and big endian, implicit, deflated, RLE, JPEG, JPEG 2000, JPEG-LS,
    multi-frame: the data set the PACS gets from the box is the one it would have got
    from the modality."""
    files = diverse_files + ct_study[:3]
    expected = _sent_by_storescu(files, tmp_path / "reference")
    syntaxes = {_uid(f): str(pydicom.dcmread(f, stop_before_pixels=True)
                             .file_meta.TransferSyntaxUID) for f in files}
    pacs = (StoreSCP(aet="PACS", out_dir=tmp_path / "pacs") if pacs_kind == "storescp"
            else CountingSCP(ae_title="PACS", keep_data=True))
    with pacs:
        port = pacs.port
        box = make_box([dest("pacs", "PACS", port)])
        with box:
            cp = storescu("127.0.0.1", box.port, files, called_aet="FLUXBOX")
            assert {a for _, a in store_responses(cp)} == {"Success"}, cp.stdout[-2000:]
            box.wait_states("complete", timeout_s=120)
        got = ({_uid(p): dataset_part(p.read_bytes()) for p in pacs.files()}
               if isinstance(pacs, StoreSCP) else dict(pacs.data))
    assert got.keys() == expected.keys()
    for uid, data in expected.items():
        assert got[uid] == _as_sent(data, syntaxes[uid]), syntaxes[uid]


def _marked_study(out: Path, marker: bytes) -> list[Path]:
    """A CT study whose pixel data is `marker` over and over, plus one instance of it in
    Explicit VR Big Endian (an Implicit-only PACS gets it converted in memory)."""
    files = write_ct_study(out, slices=24, rows=256, cols=256, seed=3)
    pixels = (marker * (256 * 256 * 2 // len(marker)))
    for path in files:
        ds = pydicom.dcmread(path)
        ds.PixelData = pixels
        ds.save_as(path, enforce_file_format=True)
    ds = pydicom.dcmread(files[0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    big_endian = out / "big_endian.dcm"
    pydicom.dcmwrite(big_endian, ds, implicit_vr=False, little_endian=False,
                     force_encoding=True)
    return [*files, big_endian]


def _files_holding(marks: list[bytes], roots: list[Path], pid: int) -> set[str]:
    """Files under `roots`, and files the process has open (unlinked ones too), whose
    content holds one of `marks`."""
    found = set()
    candidates = [p for root in roots for p in root.rglob("*")]
    candidates += list(Path(f"/proc/{pid}/fd").iterdir())
    for path in candidates:
        try:
            if not path.is_file():
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if any(mark in data for mark in marks):
            found.add(os.path.realpath(path))
    return found


def test_delivery_writes_no_plaintext_anywhere(make_box, tmp_path, monkeypatch):
    """While a study goes to three PACS (as stored; Explicit to Implicit streamed and Big
    Endian converted in memory; a slow one), nothing the box opens for writing is new and
    no file on disk or open in the box (unlinked temporary files too) holds a byte run of
    the pixel data. The data set reaching the PACS does."""
    marker = os.urandom(32)
    marks = [marker, bytes(np.frombuffer(marker, dtype="<u2").byteswap().tobytes())]
    files = _marked_study(tmp_path / "study", marker)
    box_tmp = tmp_path / "box-tmp"
    box_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(box_tmp))
    with (StoreSCP(aet="PACS", out_dir=tmp_path / "pacs") as pacs,
          StoreSCP(aet="IMPLICIT", out_dir=tmp_path / "implicit",
                   extra_args=["--implicit"]) as implicit,
          CountingSCP(ae_title="SLOW", delay_s=0.05) as slow):
        box = make_box([dest("pacs", "PACS", pacs.port),
                        dest("implicit", "IMPLICIT", implicit.port),
                        dest("slow", "SLOW", slow.port)],
                       transmit="study_quiet_s = 4").start()
        cp = storescu("127.0.0.1", box.port, files, called_aet="FLUXBOX")
        assert {a for _, a in store_responses(cp)} == {"Success"}, cp.stdout[-2000:]
        assert box.studies()[0]["state"] == "receiving", "delivery began too soon to watch"
        trace = tmp_path / "strace.log"
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-p", str(box.proc.pid), "-o",
                                   str(trace), "-e", "trace=open,openat,creat,memfd_create"])
        hits: set[str] = set()
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                hits.update(_files_holding(marks, [box.data_dir, box_tmp], box.proc.pid))
                time.sleep(0.005)

        watcher = threading.Thread(target=watch, daemon=True)
        try:
            time.sleep(1.0)  # strace attached to every thread
            watcher.start()
            box.wait_states("complete", timeout_s=120)
        finally:
            done.set()
            tracer.terminate()
            tracer.wait(10)
            watcher.join(10)
            box.stop()
        assert len(pacs.files()) == len(implicit.files()) == len(files)
        assert len(slow.uids()) == len(files)
        assert any(marker in p.read_bytes() for p in pacs.files()), "the test sees the marker"
    assert hits == set(), f"plaintext found in {sorted(hits)}"
    opened = [line for line in trace.read_text().splitlines()
              if WRITE_FLAGS.search(line) and "= -1" not in line or "memfd_create" in line]
    assert opened == [], "files opened for writing during delivery:\n" + "\n".join(opened)


@pytest.mark.slow
def test_a_256_mb_instance_streams_out_under_150_mb(make_box, tmp_path):
    """Sent as stored, in bounded memory: the box never holds an instance whole."""
    big = write_multiframe(tmp_path / "big.dcm", size_bytes=256 * 1024**2, seed=13)
    with StoreSCP(aet="PACS", extra_args=["--max-pdu", "131072"]) as pacs:
        box = make_box([dest("pacs", "PACS", pacs.port)],
                       transmit="dimse_timeout_s = 600").start()
        try:
            cp = storescu("127.0.0.1", box.port, [big], called_aet="FLUXBOX",
                          timeout_s=600)
            assert [a for _, a in store_responses(cp)] == ["Success"], cp.stdout[-2000:]
            box.wait_states("complete", timeout_s=600)
            peak = box.peak_rss_bytes()
            (received,) = pacs.files()
            assert dataset_sha256(received) == dataset_sha256(big)
        finally:
            box.stop()
    assert peak < RSS_LIMIT, f"peak RSS {peak >> 20} MB"
