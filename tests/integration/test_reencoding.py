"""A PACS that accepts only Implicit VR Little Endian gets Explicit VR Little Endian
instances re-encoded in pieces, whatever their size, with the same values (PRODUCT.md:
uncompressed data may change only its encoding; issue 11, part 2: memory bounded)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from appliance.demo.synthetic import write_multiframe
from appliance.encoding import IN_MEMORY_MAX_BYTES
from tests.integration.conftest import dest
from tests.peers import StoreSCP, store_responses, storescu

RSS_LIMIT = 200 * 1024**2


def _implicit_only_pacs(out_dir: Path) -> StoreSCP:
    return StoreSCP(aet="PACS", out_dir=out_dir,
                    extra_args=["--implicit", "--max-pdu", "131072"])


def _pixel_sha256(path: Path) -> str:
    """SHA-256 of the native Pixel Data, the file's last element, read in pieces."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    length = (int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1))
              * int(ds.SamplesPerPixel) * int(ds.BitsAllocated) // 8)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(-length, 2)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _values(ds) -> dict:
    """Every element's value by tag, sequences item by item: what re-encoding must keep
    (an implicit VR is inferred, so VRs themselves may read differently)."""
    return {elem.tag: [_values(item) for item in elem.value] if elem.VR == "SQ"
            else elem.value for elem in ds}


def _headers_match(sent: Path, received: Path) -> None:
    a = pydicom.dcmread(sent, stop_before_pixels=True)
    b = pydicom.dcmread(received, stop_before_pixels=True)
    assert b.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert _values(a) == _values(b)


def _send_and_deliver(make_box, files: list[Path], out_dir: Path) -> tuple[list[Path], int]:
    with _implicit_only_pacs(out_dir) as pacs:
        box = make_box([dest("pacs", "PACS", pacs.port)],
                       transmit="dimse_timeout_s = 600").start()
        cp = storescu("127.0.0.1", box.port, files, called_aet="FLUXBOX")
        assert {a for _, a in store_responses(cp)} == {"Success"}, cp.stdout[-2000:]
        box.wait_states("complete", timeout_s=600)
        peak = box.peak_rss_bytes()
        box.stop()
        return pacs.files(), peak


def test_explicit_instances_reach_an_implicit_only_pacs_with_their_values(
        make_box, diverse_files, tmp_path):
    explicit = [f for f in diverse_files
                if pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID
                == ExplicitVRLittleEndian]
    assert len(explicit) >= 2
    received, _ = _send_and_deliver(make_box, explicit, tmp_path / "pacs")
    by_uid = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f
              for f in received}
    assert len(by_uid) == len(explicit)
    for sent in explicit:
        uid = str(pydicom.dcmread(sent, stop_before_pixels=True).SOPInstanceUID)
        got, expected = pydicom.dcmread(by_uid[uid]), pydicom.dcmread(sent)
        assert got.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        # DCMTK drops Data Set Trailing Padding (FFFC,FFFC) on receipt: padding, no value
        # (the box keeps it: tests/unit/test_transcode.py).
        expected.pop(0xFFFCFFFC, None)
        assert _values(got) == _values(expected)


@pytest.mark.slow
def test_a_600_mb_explicit_instance_is_reencoded_for_the_pacs_with_bounded_memory(
        make_box, tmp_path):
    big = write_multiframe(tmp_path / "big.dcm", size_bytes=600 * 1024**2, seed=5)
    (received,), peak = _send_and_deliver(make_box, [big], tmp_path / "pacs")
    _headers_match(big, received)
    assert _pixel_sha256(received) == _pixel_sha256(big)
    assert peak < RSS_LIMIT, f"peak RSS {peak >> 20} MB"


def _in_syntax(source: Path, out: Path, syntax: str, study_uid: str) -> Path:
    """`source` re-encoded in `syntax` by pydicom, as a study's new instance."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = study_uid
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    if syntax == ExplicitVRBigEndian:  # pydicom converts byte order only when forced
        pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    else:
        ds.save_as(out, enforce_file_format=True)
    return out


def test_concurrent_in_memory_conversions_keep_the_box_under_its_memory_bound(
        make_box, tmp_path):
    # Issue 7: Big Endian and Deflate reach an Implicit-only PACS by loading the instance,
    # several copies of it; three associations converting at once took the box to about
    # 600 MB. One loaded instance at a time keeps it under the product's 200 MB.
    source = write_multiframe(tmp_path / "source.dcm", size_bytes=IN_MEMORY_MAX_BYTES
                              - (2 << 20), rows=512, cols=512, seed=9)
    study = generate_uid()
    files = [_in_syntax(source, tmp_path / f"{n}.dcm", syntax, study) for n, syntax in
             enumerate([ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian])]
    source.unlink()
    assert all(f.stat().st_size <= IN_MEMORY_MAX_BYTES for f in files)
    with _implicit_only_pacs(tmp_path / "pacs") as pacs:
        box = make_box([dest("pacs", "PACS", pacs.port)],
                       transmit="associations = 3\nadaptive = false\ndimse_timeout_s = 600"
                       ).start()
        cp = storescu("127.0.0.1", box.port, files, called_aet="FLUXBOX")
        assert {a for _, a in store_responses(cp)} == {"Success"}, cp.stdout[-2000:]
        box.wait_states("complete", timeout_s=120)
        peak = box.peak_rss_bytes()
        assert len(pacs.files()) == len(files)
    assert peak < RSS_LIMIT, f"peak RSS {peak >> 20} MB"
