"""Storage Commitment: a study is complete only once the PACS confirms it holds it."""

from __future__ import annotations

import pydicom

from tests.integration.conftest import dest
from tests.peers import CountingSCP, Orthanc, storescu


def test_study_is_complete_only_after_orthanc_commits_it(make_box, ct_study):
    pacs = Orthanc(aet="ORTHANC")
    box = make_box([dest("pacs", "ORTHANC", pacs.dicom_port, commitment=True)])
    pacs.extra_config = {"DicomModalities": {"fluxbox": {
        "AET": "FLUXBOX", "Host": "127.0.0.1", "Port": box.port,
        "AllowStorageCommitment": True}}}
    with pacs, box:
        storescu("127.0.0.1", box.port, ct_study, called_aet="FLUXBOX")
        (row,) = box.wait_states("complete", timeout_s=90)
        assert row["destinations"][0]["delivered"] == len(ct_study)
        assert pacs.sop_instance_uids() == {pydicom.dcmread(p).SOPInstanceUID for p in ct_study}
        assert row["destinations"][0]["awaiting_commitment"] is False
        assert box.status()["errors"] == []


def test_pacs_without_storage_commitment_fails_the_study_with_a_reason(make_box, ct_study):
    with CountingSCP(ae_title="PACS") as scp:
        scp_port = scp.port
        box = make_box([dest("pacs", "PACS", scp_port, commitment=True)])
        with box:
            storescu("127.0.0.1", box.port, ct_study[:3], called_aet="FLUXBOX")
            (row,) = box.wait_states("failed", timeout_s=60)
            d = row["destinations"][0]
            assert d["delivered"] == 3 and d["state"] == "failed"
            assert "PACS does not support Storage Commitment" in d["reasons"]
        assert len(scp.uids()) == 3
