"""Receive, store, deliver: real modality (DCMTK storescu), real PACS (Orthanc, pynetdicom SCP)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from appliance.delivery import LAST_SUCCESS_SAVE_S
from appliance.encoding import UNCOMPRESSED
from tests.integration.conftest import dest
from tests.peers import CountingSCP, Orthanc, dataset_part, store_responses, storescu


def _send(box, files, **kw):
    cp = storescu("127.0.0.1", box.port, files, called_aet="FLUXBOX", **kw)
    return cp, dict(store_responses(cp))


def test_diverse_files_reach_orthanc_byte_for_byte(make_box, diverse_files, ct_study):
    with Orthanc(aet="ORTHANC") as pacs:
        box = make_box([dest("pacs", "ORTHANC", pacs.dicom_port)])
        with box:
            files = diverse_files + ct_study
            cp, answers = _send(box, files)
            assert cp.returncode == 0, cp.stdout + cp.stderr
            assert set(answers.values()) == {"Success"}
            rows = box.wait_states("complete", timeout_s=90)
            assert sum(r["instances"] for r in rows) == len(files)
            assert all(r["destinations"][0]["delivered"] == r["instances"] for r in rows)
            stored = pacs.instance_by_uid()
            for path in files:
                sent = pydicom.dcmread(path)
                received = pacs.instance_file(stored[sent.SOPInstanceUID])
                received_ds = pydicom.dcmread(io.BytesIO(received))
                if received_ds.file_meta.TransferSyntaxUID != sent.file_meta.TransferSyntaxUID:
                    # the PACS refused this encoding: only the encoding may change
                    assert sent.file_meta.TransferSyntaxUID in UNCOMPRESSED, path.name
                assert _content(received_ds) == _content(sent), path.name
                if path in ct_study:  # no padding to drop: what the modality sent, byte for byte
                    assert dataset_part(received) == dataset_part(path.read_bytes()), path.name


def _content(ds: pydicom.Dataset) -> dict:
    """Every value, less what a sender may drop: group lengths and trailing padding
    (storescu drops (FFFC,FFFC) before sending)."""
    return {e.tag: e.value for e in ds if e.tag.element != 0 and e.tag != 0xFFFCFFFC}


def test_pacs_down_at_first_then_up(make_box, ct_study):
    scp = CountingSCP(ae_title="PACS")
    from tests.peers import free_port

    scp.port = free_port()
    box = make_box([dest("pacs", "PACS", scp.port)])
    with box:
        cp, answers = _send(box, ct_study)
        assert set(answers.values()) == {"Success"}, "the modality never waits for the PACS"
        box.wait_for(lambda: any(d["last_error"] for d in box.status()["destinations"]),
                     30, "a delivery error while the PACS is down")
        assert box.studies()[0]["state"] in ("queued", "sending")
        with scp:
            box.wait_states("complete", timeout_s=60)
            assert scp.uids() == {pydicom.dcmread(p).SOPInstanceUID for p in ct_study}
            assert scp.resent() == {}


def test_pacs_aborting_mid_batch_resends_only_what_was_in_flight(make_box, ct_study):
    with CountingSCP(ae_title="PACS", abort_after=3, abort_times=2) as scp:
        box = make_box([dest("pacs", "PACS", scp.port)])
        with box:
            _send(box, ct_study)
            box.wait_states("complete", timeout_s=60)
        assert scp.aborts == 2
        assert scp.uids() == {pydicom.dcmread(p).SOPInstanceUID for p in ct_study}
        extra = sum(n - 1 for n in scp.counts.values())
        assert extra <= scp.aborts, f"resent {extra} with {scp.aborts} drops"


def test_last_delivery_time_survives_a_restart(make_box, ct_study):
    with CountingSCP(ae_title="PACS") as scp:
        box = make_box([dest("pacs", "PACS", scp.port)])
        with box:
            _send(box, ct_study)
            box.wait_states("complete", timeout_s=60)
            before = box.status()["destinations"][0]["last_success_at"]
        assert before
        with box:
            after = box.status()["destinations"][0]["last_success_at"]
    assert after is not None and before - LAST_SUCCESS_SAVE_S <= after <= before


def test_pacs_refusing_one_sop_class_fails_only_those(make_box, diverse_files, tmp_path):
    ct = pydicom.dcmread(diverse_files[0])
    mr = pydicom.dcmread(diverse_files[1])
    mr.StudyInstanceUID = ct.StudyInstanceUID
    mr.save_as(tmp_path / "mr.dcm", enforce_file_format=True)
    files = [diverse_files[0], tmp_path / "mr.dcm"]
    with CountingSCP(ae_title="PACS", refuse_sop_classes={mr.SOPClassUID}) as scp:
        box = make_box([dest("pacs", "PACS", scp.port)])
        with box:
            _send(box, files)
            (row,) = box.wait_states("failed", timeout_s=60)
            d = row["destinations"][0]
            assert (d["delivered"], d["failed"], d["pending"]) == (1, 1, 0)
            assert any("0x0122" in r for r in d["reasons"])
            assert box.status()["health"] == "attention"
            scp.refuse_sop_classes.clear()
            assert box.call("retry", study_uid=ct.StudyInstanceUID)["requeued"] == 1
            box.wait_states("complete", timeout_s=60)
        assert scp.uids() == {ct.SOPInstanceUID, mr.SOPInstanceUID}


PRIVATE_CLASS = "1.3.6.1.4.1.5962.301.1"


def _imperfect_study(tmp_path) -> list:
    """One study of three instances the first validation refused (issue 11): no Patient ID,
    a private SOP class, a retired (big endian) transfer syntax."""
    study_uid = generate_uid()
    out = []
    for name, change in [("CT_small.dcm", "no-patient-id"), ("CT_small.dcm", "private"),
                         ("MR_small_bigendian.dcm", "")]:
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.StudyInstanceUID = study_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if change == "no-patient-id":
            del ds.PatientID
        if change == "private":
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = PRIVATE_CLASS
        ds.save_as(tmp_path / f"{change or 'bigendian'}.dcm", enforce_file_format=True)
        out.append(tmp_path / f"{change or 'bigendian'}.dcm")
    return out


def test_any_storage_class_is_accepted_in_the_syntaxes_the_box_can_forward(make_box):
    """Issue 11: private, unknown and retired SOP classes and retired syntaxes are accepted;
    lossless wins over lossy; a syntax the box could never forward is refused per context."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, MRImageStorage

    box = make_box([dest("pacs", "PACS", 9)]).start()
    ae = AE(ae_title="MODALITY")
    offered = [
        (PRIVATE_CLASS, [pydicom.uid.ExplicitVRLittleEndian]),
        ("1.2.840.10008.5.1.4.1.1.6", [pydicom.uid.ExplicitVRLittleEndian]),  # retired US
        (CTImageStorage, ["1.2.840.10008.1.2.4.55"]),  # retired JPEG process 10 and 12
        (MRImageStorage, [pydicom.uid.JPEGBaseline8Bit, pydicom.uid.JPEGLSLossless]),
        (CTImageStorage, ["1.3.6.1.4.1.5962.300.1"]),  # private syntax
    ]
    for sop_class, syntaxes in offered:
        ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate("127.0.0.1", box.port, ae_title="FLUXBOX")
    try:
        assert assoc.is_established
        accepted = {cx.context_id: str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        rejected = {cx.context_id for cx in assoc.rejected_contexts}
    finally:
        assoc.release()
    explicit = pydicom.uid.ExplicitVRLittleEndian
    assert accepted == {1: explicit, 3: explicit, 5: "1.2.840.10008.1.2.4.55",
                        7: pydicom.uid.JPEGLSLossless}
    assert rejected == {9}


def _fluxbox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_imperfect_instances_are_accepted_delivered_and_shown_as_findings(make_box, tmp_path):
    """Issue 11: refuse only what cannot be kept faithfully; record the rest on the study."""
    files = _imperfect_study(tmp_path)
    with Orthanc(aet="ORTHANC") as pacs:
        box = make_box([dest("pacs", "ORTHANC", pacs.dicom_port)])
        with box:
            cp, answers = _send(box, files)
            assert set(answers.values()) == {"Success"}, cp.stdout + cp.stderr
            box.wait_states("complete", timeout_s=60)
            config = str(box.config_path)
            (row,) = json.loads(_fluxbox("studies", "--json", "--config", config).stdout)
            text = _fluxbox("studies", "--config", config).stdout
        stored = pacs.instance_by_uid()
        for path in files:  # as sent (storescu drops the trailing padding of CT_small)
            sent = pydicom.dcmread(path)
            received = pydicom.dcmread(io.BytesIO(pacs.instance_file(stored[sent.SOPInstanceUID])))
            assert received.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
            assert _content(received) == _content(sent), path.name
    for finding in ["1 instance(s): PatientID missing",
                    f"1 instance(s): private SOP class {PRIVATE_CLASS}",
                    "1 instance(s): retired transfer syntax: Explicit VR Big Endian"]:
        assert finding in row["findings"]
        assert f"finding: {finding}" in text
    names = {str(pydicom.dcmread(f).PatientName) for f in files}
    assert not any(name and name in text + json.dumps(row) for name in names)


def _settled(rows: list[dict], count: int) -> list[dict] | None:
    done = len(rows) == count and all(r["state"] in ("complete", "failed") for r in rows)
    return rows if done else None


def test_pacs_taking_no_context_of_a_batch_fails_it_and_the_queue_goes_on(make_box, tmp_path,
                                                                         diverse_files):
    """Issue 11 (found by the interoperability matrix): a PACS that accepts the association
    but none of its contexts made pynetdicom abort, and the box retried forever while every
    study behind waited."""
    private = _imperfect_study(tmp_path)[1]
    with CountingSCP(ae_title="PACS") as scp:  # standard storage classes only
        box = make_box([dest("pacs", "PACS", scp.port)])
        with box:
            _send(box, [private])
            _send(box, [diverse_files[0]])
            settled = box.wait_for(lambda: _settled(box.studies(), 2), 60, "both studies settled")
            rows = {r["study_uid"]: r for r in settled}
    failed = rows[pydicom.dcmread(private).StudyInstanceUID]
    assert failed["state"] == "failed"
    assert "PACS accepts none of the presentation contexts" in failed["destinations"][0][
        "reasons"][0]
    assert rows[pydicom.dcmread(diverse_files[0]).StudyInstanceUID]["state"] == "complete"
    assert scp.uids() == {pydicom.dcmread(diverse_files[0]).SOPInstanceUID}


def test_duplicate_send_is_acknowledged_and_not_sent_again(make_box, ct_study):
    with CountingSCP(ae_title="PACS") as scp:
        box = make_box([dest("pacs", "PACS", scp.port)])
        with box:
            _send(box, ct_study)
            box.wait_states("complete", timeout_s=60)
            cp, answers = _send(box, ct_study)
            assert set(answers.values()) == {"Success"}
            (row,) = box.wait_states("complete", timeout_s=60)
            assert row["instances"] == len(ct_study)
            assert box.status()["receiving"]["duplicate"] == len(ct_study)
        assert max(scp.counts.values()) == 1


def test_corrected_instance_replaces_and_is_delivered_again(make_box, ct_study, tmp_path):
    with CountingSCP(ae_title="PACS", keep_data=True) as scp:
        box = make_box([dest("pacs", "PACS", scp.port)])
        with box:
            _send(box, ct_study)
            box.wait_states("complete", timeout_s=60)
            ds = pydicom.dcmread(ct_study[0])
            ds.SeriesDescription = "CORRECTED"
            ds.save_as(tmp_path / "fixed.dcm", enforce_file_format=True)
            _send(box, [tmp_path / "fixed.dcm"])
            box.wait_for(lambda: scp.counts.get(ds.SOPInstanceUID) == 2, 60, "correction")
            (row,) = box.wait_states("complete", timeout_s=60)
            assert row["corrections"] == 1 and row["instances"] == len(ct_study)
        assert dataset_part((tmp_path / "fixed.dcm").read_bytes()) == scp.data[ds.SOPInstanceUID]


@pytest.mark.parametrize("batch", ["count", "size"])
def test_batches_by_count_and_size_with_parallel_associations(make_box, ct_study, batch):
    with CountingSCP(ae_title="PACS") as scp:
        transmit = (f'batch = "{batch}"\nbatch_count = 5\nbatch_mb = 1\nassociations = 2\n'
                    'adaptive = false')
        box = make_box([dest("pacs", "PACS", scp.port)], transmit=transmit)
        with box:
            _send(box, ct_study)
            box.wait_states("complete", timeout_s=60)
        assert scp.uids() == {pydicom.dcmread(p).SOPInstanceUID for p in ct_study}
        assert scp.associations >= 2
        assert scp.resent() == {}
