"""Smoke tests of the test peers, the flaky relay and the synthetic studies."""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from appliance.demo.relay import FlakyRelay
from appliance.demo.synthetic import (
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    MG_FOR_PRESENTATION_STORAGE,
    write_ct_study,
    write_mg_study,
    write_multiframe,
)
from tests.peers import (
    CountingSCP,
    Orthanc,
    StoreSCP,
    dataset_part,
    free_port,
    port_open,
    store_responses,
    storescu,
    wait_port,
)

needs_dcmtk = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk not installed")
needs_orthanc = pytest.mark.skipif(not os.path.exists("/usr/sbin/Orthanc"),
                                   reason="orthanc not installed")
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_ct_study(tmp_path_factory.mktemp("ct"), slices=6, rows=256, cols=256, seed=1)


@pytest.fixture(scope="module")
def compressed_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """RLE, JPEG-LS, JPEG 2000 and deflated samples, each with its own SOP Instance UID."""
    out = tmp_path_factory.mktemp("compressed")
    paths = []
    for name in ("MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "MR_small_jp2klossless.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        uid = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        if 0xFFFCFFFC in ds:  # trailing padding: senders may drop it
            del ds[0xFFFCFFFC]
        if ds.file_meta.TransferSyntaxUID.is_encapsulated:
            ds["PixelData"].VR = "OB"  # some samples say OW; senders correct it
        if name == "MR_small.dcm":
            ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        path = out / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _transfer_syntax(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A TCP echo server on loopback, one thread per connection."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := _recv(conn):
                conn.sendall(data)

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    yield srv.getsockname()
    stop.set()
    thread.join(5)
    srv.close()


def _recv(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except OSError:
        return b""


# --------------------------------------------------------------------------- ports


def test_free_port_and_wait_port() -> None:
    port = free_port()
    assert not port_open("127.0.0.1", port)
    with pytest.raises(TimeoutError):
        wait_port("127.0.0.1", port, timeout_s=0.2)
    with socket.create_server(("127.0.0.1", port)):
        wait_port("127.0.0.1", port, timeout_s=2)


# --------------------------------------------------------------------------- DCMTK


@needs_dcmtk
def test_storescu_to_storescp_keeps_transfer_syntaxes(
        ct_files: list[Path], compressed_files: list[Path]) -> None:
    sent = ct_files + compressed_files
    with StoreSCP(aet="ARCHIVE") as scp:
        cp = storescu("127.0.0.1", scp.port, sent, called_aet="ARCHIVE")
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert [r for _, r in store_responses(cp)] == ["Success"] * len(sent)
        received = {_uid(p): p for p in scp.files()}
        assert len(received) == len(sent)
        for path in sent:
            got = received[_uid(path)]
            assert _transfer_syntax(got) == _transfer_syntax(path)
            if _transfer_syntax(path) != DeflatedExplicitVRLittleEndian:
                assert dataset_part(got.read_bytes()) == dataset_part(path.read_bytes())
        pid = scp.proc.pid if scp.proc else None
    assert pid is not None and not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_dcmtk
@needs_orthanc
def test_storescu_to_orthanc_and_back(ct_files: list[Path], compressed_files: list[Path]) -> None:
    sent = ct_files + compressed_files
    with Orthanc(aet="PACS") as pacs:
        cp = storescu("127.0.0.1", pacs.dicom_port, sent, called_aet="PACS")
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert pacs.count_instances() == len(sent)
        assert pacs.sop_instance_uids() == {_uid(p) for p in sent}
        assert len(pacs.studies()) == 2
        by_uid = pacs.instance_by_uid()
        for path in sent:
            stored = pacs.instance_file(by_uid[_uid(path)])
            assert pydicom.dcmread(io.BytesIO(stored)).file_meta.TransferSyntaxUID == \
                _transfer_syntax(path)
            if _transfer_syntax(path) == DeflatedExplicitVRLittleEndian:
                assert pydicom.dcmread(io.BytesIO(stored)) == pydicom.dcmread(path)
            else:
                assert dataset_part(stored) == dataset_part(path.read_bytes())
        pacs.delete_all()
        assert pacs.count_instances() == 0
        pid = pacs.proc.pid if pacs.proc else None
    assert pid is not None and not _alive(pid)


# --------------------------------------------------------------------------- CountingSCP


@needs_dcmtk
def test_counting_scp_records_and_aborts(ct_files: list[Path]) -> None:
    with CountingSCP(abort_after=2, abort_times=1, keep_data=True) as scp:
        first = storescu("127.0.0.1", scp.port, ct_files, called_aet="PACS")
        assert first.returncode != 0  # the peer aborted on the third C-STORE
        second = storescu("127.0.0.1", scp.port, ct_files, called_aet="PACS")
        assert second.returncode == 0, second.stdout + second.stderr
        assert scp.wait_for(len(ct_files), timeout_s=5)
    records = scp.records
    assert [r.status for r in records[:3]] == [0, 0, None]
    assert scp.aborts == 1 and scp.associations == 2
    uids = [_uid(p) for p in ct_files]
    assert scp.uids() == set(uids)
    assert scp.resent() == {uid: 2 for uid in uids[:3]}
    assert {r.transfer_syntax for r in records} == {"1.2.840.10008.1.2.1"}
    assert scp.data[uids[0]] == dataset_part(ct_files[0].read_bytes())


@needs_dcmtk
def test_counting_scp_refusals(ct_files: list[Path], compressed_files: list[Path]) -> None:
    def override(ds: pydicom.Dataset) -> int | None:
        return 0xB007 if ds.get("InstanceNumber") == 2 else None

    with CountingSCP(refuse_sop_classes={MR_IMAGE_STORAGE}, status_override=override) as scp:
        cp = storescu("127.0.0.1", scp.port, ct_files[:3] + compressed_files[:1],
                      called_aet="PACS", extra_args=["-nh"])
    responses = [r for _, r in store_responses(cp)]
    assert responses[0] == "Success" and responses[1].startswith("Warning")
    assert responses[3] == "Refused: SOPClassNotSupported"
    assert [r.status for r in scp.records] == [0, 0xB007, 0, 0x0122]

    with CountingSCP(refuse_all=True) as scp:
        cp = storescu("127.0.0.1", scp.port, ct_files[:1], called_aet="PACS")
    assert cp.returncode != 0 and scp.records[0].status == 0xA700
    assert scp.uids() == set()

    with CountingSCP(reject_association=True) as scp:
        cp = storescu("127.0.0.1", scp.port, ct_files[:1], called_aet="PACS")
    assert cp.returncode != 0 and "Rejected" in cp.stdout + cp.stderr
    assert scp.records == []


# --------------------------------------------------------------------------- FlakyRelay


def _roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    """Send payload from one thread, read the echo back in this one."""
    sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
    sender.start()
    got = bytearray()
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    sender.join(10)
    return bytes(got)


def test_relay_forwards_cuts_and_goes_down(echo_server: tuple[str, int]) -> None:
    payload = np.random.default_rng(0).bytes(3 * 1024 * 1024)
    with FlakyRelay(echo_server) as relay:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
            assert _roundtrip(s, payload) == payload
            relay.cut()
            with pytest.raises(OSError):
                for _ in range(100):  # the RST may take a send or two to show
                    s.sendall(b"x" * 1000)
                    if not s.recv(65536):
                        raise ConnectionResetError
        assert relay.cuts == 1 and relay.bytes_forwarded >= 2 * len(payload)
        relay.set_down(True)
        # the reset may already fail the connect, or else the first send or receive
        with pytest.raises(OSError), socket.create_connection(
                ("127.0.0.1", relay.port), timeout=10) as s:
            s.sendall(b"hello")
            if not s.recv(10):
                raise ConnectionResetError
        relay.set_down(False)
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
            assert _roundtrip(s, b"again") == b"again"
        assert relay.connections == 2 and relay.refused == 1
    relay.stop()  # idempotent


@needs_dcmtk
def test_relay_cuts_a_dicom_transfer(ct_files: list[Path]) -> None:
    instance = ct_files[0].stat().st_size
    with CountingSCP() as scp, FlakyRelay(scp.address, cut_after_bytes=int(2.5 * instance),
                                          cut_times=1) as relay:
        cut = storescu("127.0.0.1", relay.port, ct_files, called_aet="PACS")
        assert cut.returncode != 0
        assert relay.cuts == 1
        again = storescu("127.0.0.1", relay.port, ct_files, called_aet="PACS")
        assert again.returncode == 0, again.stdout + again.stderr
        assert relay.cuts == 1 and relay.connections == 2
    assert scp.uids() == {_uid(p) for p in ct_files}
    assert 1 <= len(scp.resent()) <= 2


# --------------------------------------------------------------------------- synthetic


def test_synthetic_ct(tmp_path: Path) -> None:
    uid = generate_uid()
    paths = write_ct_study(tmp_path / "a", slices=12, rows=256, cols=256, study_uid=uid,
                           study_date="20240102")
    assert len(paths) == 12
    datasets = [pydicom.dcmread(p) for p in paths]
    first = datasets[0]
    assert first.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert first.SOPClassUID == CT_IMAGE_STORAGE and first.Modality == "CT"
    for keyword in ("PatientID", "PatientName", "AccessionNumber", "StationName",
                    "StudyDescription", "FrameOfReferenceUID", "ImageOrientationPatient",
                    "PixelSpacing", "SliceThickness", "ImagesInAcquisition"):
        assert keyword in first, keyword
    assert {d.StudyInstanceUID for d in datasets} == {uid}
    assert len({d.SOPInstanceUID for d in datasets}) == 12
    assert [d.InstanceNumber for d in datasets] == list(range(1, 13))
    assert len({d.ImagePositionPatient[2] for d in datasets}) == 12
    hu = first.pixel_array.astype(np.float32) * first.RescaleSlope + first.RescaleIntercept
    assert hu.shape == (256, 256)
    assert hu.min() <= -1000 and hu.max() > 500 and 0 < np.median(hu[96:160, 96:160]) < 100
    assert not np.array_equal(datasets[0].pixel_array, datasets[6].pixel_array)
    raw = first.pixel_array.tobytes()
    assert 1.5 < len(raw) / len(zlib.compress(raw, 1)) < 8
    again = write_ct_study(tmp_path / "b", slices=12, rows=256, cols=256, study_uid=uid,
                           study_date="20240102")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


@pytest.mark.parametrize("bits", [12, 14])
def test_synthetic_mg(tmp_path: Path, bits: int) -> None:
    paths = write_mg_study(tmp_path, rows=832, cols=640, bits_stored=bits)
    datasets = [pydicom.dcmread(p) for p in paths]
    assert [(d.ImageLaterality, d.ViewPosition) for d in datasets] == [
        ("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
    for d in datasets:
        assert d.SOPClassUID == MG_FOR_PRESENTATION_STORAGE and d.Modality == "MG"
        assert d.PresentationIntentType == "FOR PRESENTATION" and d.BitsStored == bits
        px = d.pixel_array
        assert px.shape == (832, 640) and px.max() < 2**bits and px.std() > 50


def test_write_multiframe_streams(tmp_path: Path) -> None:
    size = 50 * 1024 * 1024
    tracemalloc.start()
    try:
        path = write_multiframe(tmp_path / "big.dcm", size_bytes=size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024
    assert path.stat().st_size >= size
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.SOPClassUID == ENHANCED_CT_IMAGE_STORAGE
    assert header.NumberOfFrames == 25 and len(header.PerFrameFunctionalGroupsSequence) == 25
    frames = pydicom.dcmread(path).pixel_array
    assert frames.shape == (25, 1024, 1024)
    assert not np.array_equal(frames[0], frames[24])


@pytest.mark.slow
def test_synthetic_ct_default_size_is_fast(tmp_path: Path) -> None:
    start = time.monotonic()
    paths = write_ct_study(tmp_path)
    assert len(paths) == 300 and time.monotonic() - start < 30
