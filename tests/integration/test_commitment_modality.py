"""Storage Commitment for the modality (issue 11, part 3): the box as SCP of the Push Model.

The modality's images go in with DCMTK storescu; the commitment request comes from
pynetdicom (tests/commitscu.py: Debian's DCMTK has no Storage Commitment SCU).
"""

from __future__ import annotations

import pydicom
from pydicom.uid import generate_uid

from tests.commitscu import CommitModality
from tests.integration.conftest import dest
from tests.peers import CountingSCP, Orthanc, free_port, storescu

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def _references(files) -> list[tuple[str, str]]:
    found = []
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    return found


def _modality_entry(port: int) -> str:
    return f'modalities = {{ MODALITY = {{ host = "127.0.0.1", port = {port} }} }}'


def _send(box, files) -> None:
    sent = storescu("127.0.0.1", box.port, files, called_aet="FLUXBOX")
    assert sent.returncode == 0, sent.stdout + sent.stderr


def test_box_mode_commits_what_the_box_holds_on_the_same_association(make_box, ct_study):
    # Nothing listens at the PACS's port: in "box" mode the box commits on its own.
    box = make_box([dest("pacs", "PACS", free_port())])
    files = ct_study[:4]
    refs = _references(files)
    unknown = (refs[0][0], generate_uid())
    other_class = (MR_IMAGE, refs[1][1])
    with box, CommitModality() as modality:
        _send(box, files)
        status, transaction = modality.request(box.port, [*refs, unknown, other_class],
                                               wait_same_s=30)
        assert status == 0x0000
        report = modality.wait(transaction, 1)
        assert report.association == "same"
        assert report.event_type == 2, "some failed"
        assert report.committed == frozenset(refs)
        assert report.failed == {unknown[1]: 0x0112, other_class[1]: 0x0119}
        assert box.studies()[0]["state"] != "complete", "committed before any delivery"
        status, _ = modality.request(box.port, [])
        assert status == 0x0115, "a request without references is an invalid argument"


def test_box_mode_reports_on_a_new_association_to_a_modality_that_left(make_box, ct_study):
    files = ct_study[:3]
    with CommitModality() as modality:
        box = make_box([dest("pacs", "PACS", free_port())], box=_modality_entry(modality.port))
        with box:
            _send(box, files)
            status, transaction = modality.request(box.port, _references(files),
                                                   listen_same=False)
            assert status == 0x0000
            report = modality.wait(transaction, 60)
    assert report.association == "new" and report.calling_aet == "FLUXBOX"
    assert report.event_type == 1 and report.failed == {}
    assert report.committed == frozenset(_references(files))


def test_pacs_mode_reports_only_once_delivered_and_the_request_survives_a_restart(
        make_box, ct_study):
    files = ct_study[:4]
    refs = _references(files)
    pacs_port = free_port()
    with CommitModality() as modality:
        box = make_box([dest("pacs", "PACS", pacs_port)],
                       box=f'commitment_mode = "pacs"\n{_modality_entry(modality.port)}')
        with box:
            _send(box, files)
            status, transaction = modality.request(box.port, [*refs, (refs[0][0], "1.2.3.4")])
            assert status == 0x0000
            box.wait_for(lambda: box.studies()[0]["state"] not in ("receiving", "complete"),
                         30, "the study closed and queued for a PACS that is down")
            assert modality.count(transaction) == 0, "reported before the PACS had it"
        box.start()  # the request was kept in the store across the restart
        try:
            with CountingSCP(ae_title="PACS", port=pacs_port) as pacs:
                report = modality.wait(transaction, 90)
                (row,) = box.wait_states("complete", timeout_s=30)
                assert pacs.uids() == {uid for _, uid in refs}
        finally:
            box.stop()
    assert report.association == "new" and report.event_type == 2
    assert report.committed == frozenset(refs)
    assert report.failed == {"1.2.3.4": 0x0112}
    assert report.at >= row["completed_at"], "reported before every destination acknowledged"
    assert modality.count(transaction) == 1


def test_pacs_mode_waits_for_the_pacs_own_commitment(make_box, ct_study):
    files = ct_study[:3]
    pacs = Orthanc(aet="ORTHANC")
    box = make_box([dest("pacs", "ORTHANC", pacs.dicom_port, commitment=True)],
                   box='commitment_mode = "pacs"')
    pacs.extra_config = {"DicomModalities": {"fluxbox": {
        "AET": "FLUXBOX", "Host": "127.0.0.1", "Port": box.port,
        "AllowStorageCommitment": True}}}
    with pacs, box, CommitModality() as modality:
        _send(box, files)
        status, transaction = modality.request(box.port, _references(files), wait_same_s=90)
        assert status == 0x0000
        report = modality.wait(transaction, 1)
        (row,) = box.wait_states("complete", timeout_s=10)
        assert pacs.sop_instance_uids() == {uid for _, uid in _references(files)}
    assert report.association == "same" and report.event_type == 1
    # complete means delivered and confirmed by Orthanc's own commitment report
    assert report.at >= row["completed_at"]


def test_orthanc_as_the_modality_gets_its_commitment_report_on_a_new_association(
        make_box, ct_study):
    # Orthanc's Storage Commitment SCU waits for the report on its own DICOM port.
    files = ct_study[:3]
    modality = Orthanc(aet="ORTHANC_MOD")
    box = make_box([dest("pacs", "PACS", free_port())],
                   box=f'modalities = {{ ORTHANC_MOD = {{ host = "127.0.0.1", '
                       f'port = {modality.dicom_port} }} }}')
    modality.extra_config = {"DicomModalities": {"fluxbox": {
        "AET": "FLUXBOX", "Host": "127.0.0.1", "Port": box.port,
        "AllowStorageCommitment": True}}}
    with modality, box:
        loaded = storescu("127.0.0.1", modality.dicom_port, files, called_aet="ORTHANC_MOD")
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        job = modality.rest("POST", "/modalities/fluxbox/store", {
            "Resources": modality.instances(), "StorageCommitment": True,
            "Synchronous": True})
        transaction = job["StorageCommitmentTransactionUID"]
        report = box.wait_for(
            lambda: (r := modality.rest("GET", f"/storage-commitment/{transaction}"))
            and r["Status"] != "Pending" and r, 60, "Orthanc's commitment report")
        assert report["Status"] == "Success", report
        assert {s["SOPInstanceUID"] for s in report["Success"]} == {
            uid for _, uid in _references(files)}
        assert report["Failures"] == []


def test_a_report_the_modality_cannot_take_yet_is_tried_again_until_it_can(make_box, ct_study):
    files = ct_study[:2]
    modality = CommitModality(port=free_port())  # not listening yet
    box = make_box([dest("pacs", "PACS", free_port())], box=_modality_entry(modality.port))
    with box:
        _send(box, files)
        status, transaction = modality.request(box.port, _references(files), listen_same=False)
        assert status == 0x0000
        box.wait_for(lambda: box.status()["commitment"]["last_error"], 60,
                     "a failed report to a modality that is not listening")
        assert box.status()["commitment"]["requests"] == 1
        with modality:
            report = modality.wait(transaction, 60)
            box.wait_for(lambda: box.status()["commitment"]["requests"] == 0, 10,
                         "the reported request forgotten")
    assert report.association == "new" and report.event_type == 1
    assert modality.count(transaction) == 1


RELEASE_TRIALS = 5  # the abort came in 4 of 5 trials: five in a row all released


def test_a_modality_releasing_right_after_its_request_is_released_and_reported_anew(
        make_box, ct_study):
    # Issue 7: a report sent on the asking association after the modality's A-RELEASE-RQ
    # went unanswered, and the box aborted the association the modality was releasing.
    files = ct_study[:3]
    refs = _references(files)
    with CommitModality() as modality:
        box = make_box([dest("pacs", "PACS", free_port())], box=_modality_entry(modality.port))
        with box:
            _send(box, files)
            for trial in range(RELEASE_TRIALS):
                status, transaction = modality.request(box.port, refs)  # releases at once
                assert status == 0x0000
                assert modality.endings[transaction] == "released", f"trial {trial}"
                report = modality.wait(transaction, 60)
                assert report.event_type == 1 and report.failed == {}
                assert report.committed == frozenset(refs)
                assert report.association == "new", f"trial {trial}"
                assert modality.count(transaction) == 1
