"""Storage Commitment for the modality: when an instance counts as committed (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from appliance.commitment_scp import parse_request, verdict
from appliance.keystore import FileKeystore
from appliance.statuses import CLASS_INSTANCE_CONFLICT, NO_SUCH_SOP_INSTANCE, PROCESSING_FAILURE
from appliance.store import CommitRequest, InstanceCommit, Store
from appliance.validation import read_header

CT = Path(get_testdata_file("CT_small.dcm"))
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
MR_CLASS = "1.2.840.10008.5.1.4.1.1.4"


def _request(*held: bool) -> CommitRequest:
    refs = tuple((CT_CLASS, f"1.2.3.{n}") for n in range(len(held)))
    return CommitRequest("9.8.7", "CT1", refs, held, 1.0)


def test_every_instance_committed_gives_the_list_and_no_failures():
    report = verdict(_request(True, True), lambda c, i: InstanceCommit.COMMITTED)
    assert report.committed == ((CT_CLASS, "1.2.3.0"), (CT_CLASS, "1.2.3.1"))
    assert report.failed == () and report.event_type == 1


def test_unknown_and_other_class_fail_with_their_reasons():
    states = {"1.2.3.0": InstanceCommit.COMMITTED, "1.2.3.1": InstanceCommit.MISSING,
              "1.2.3.2": InstanceCommit.CLASS_CONFLICT, "1.2.3.3": InstanceCommit.FAILED}
    report = verdict(_request(True, False, False, True), lambda c, i: states[i])
    assert report.committed == ((CT_CLASS, "1.2.3.0"),)
    assert report.failed == ((CT_CLASS, "1.2.3.1", NO_SUCH_SOP_INSTANCE),
                             (CT_CLASS, "1.2.3.2", CLASS_INSTANCE_CONFLICT),
                             (CT_CLASS, "1.2.3.3", PROCESSING_FAILURE))
    assert report.event_type == 2
    ds = report.dataset("FLUXBOX")
    assert [int(item.FailureReason) for item in ds.FailedSOPSequence] == [0x0112, 0x0119, 0x0110]


def test_one_waiting_instance_holds_back_the_whole_report():
    states = {"1.2.3.0": InstanceCommit.COMMITTED, "1.2.3.1": InstanceCommit.WAITING}
    assert verdict(_request(True, True), lambda c, i: states[i]) is None


def test_an_instance_that_arrived_after_the_request_still_fails():
    report = verdict(_request(False), lambda c, i: InstanceCommit.COMMITTED)
    assert report.failed == ((CT_CLASS, "1.2.3.0", NO_SUCH_SOP_INSTANCE),)


def test_a_held_instance_purged_since_counts_as_committed():
    # The box purges only complete studies: delivered (and confirmed) everywhere.
    report = verdict(_request(True), lambda c, i: InstanceCommit.MISSING)
    assert report.committed == ((CT_CLASS, "1.2.3.0"),) and report.failed == ()


@pytest.mark.parametrize("info", [
    None, Dataset(),
    Dataset.from_json({"00081195": {"vr": "UI", "Value": ["1.2.3"]}}),  # no references
])
def test_a_request_without_transaction_or_references_is_unusable(info):
    assert parse_request(info) is None


def test_a_request_lists_its_references():
    info = Dataset()
    info.TransactionUID = "1.2.3"
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CT_CLASS, "1.2.3.4"
    info.ReferencedSOPSequence = [item]
    assert parse_request(info) == ("1.2.3", ((CT_CLASS, "1.2.3.4"),))


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data", FileKeystore(tmp_path / "key").load_or_create())
    yield s
    s.close()


def _put(store: Store) -> str:
    ds = pydicom.dcmread(CT, stop_before_pixels=True)
    header = read_header(CT, command_sop_class=ds.SOPClassUID,
                         command_sop_instance=ds.SOPInstanceUID)
    store.put_instance(CT, header, calling_aet="CT1", site="a", site_source="fixed", now=1.0)
    return ds.SOPInstanceUID


def test_end_to_end_an_instance_is_committed_once_delivered_and_confirmed(store):
    uid = _put(store)
    assert store.instance_commit(CT_CLASS, uid, end_to_end=False) is InstanceCommit.COMMITTED
    assert store.instance_commit(MR_CLASS, uid, end_to_end=False) is (
        InstanceCommit.CLASS_CONFLICT)
    assert store.instance_commit(CT_CLASS, "1.2.3", end_to_end=False) is InstanceCommit.MISSING
    assert store.instance_commit(CT_CLASS, uid, end_to_end=True) is InstanceCommit.WAITING
    study = store.studies()[0]
    store.update_study(study.key, phase="closed")
    store.enqueue(study.key, ("a/pacs",), 2.0, commitment=("a/pacs",))
    (item,) = store.next_batch("a/pacs", max_count=10, max_bytes=1 << 30, whole_study=True,
                               allowed=lambda s: True)
    store.record_delivered("a/pacs", item, 3.0)
    assert store.instance_commit(CT_CLASS, uid, end_to_end=True) is InstanceCommit.WAITING, (
        "acknowledged, but the PACS has not confirmed commitment yet")
    store.commitment_requested("a/pacs", store.study(study.key), "5.5.5", 4.0)
    store.commitment_result("5.5.5", set(), 5.0)
    assert store.instance_commit(CT_CLASS, uid, end_to_end=True) is InstanceCommit.COMMITTED


def test_end_to_end_a_replaced_instance_waits_for_its_new_version(store, tmp_path):
    uid = _put(store)
    study = store.studies()[0]
    store.update_study(study.key, phase="closed")
    store.enqueue(study.key, ("a/pacs",), 2.0)
    (item,) = store.next_batch("a/pacs", max_count=10, max_bytes=1 << 30, whole_study=True,
                               allowed=lambda s: True)
    store.record_delivered("a/pacs", item, 3.0)
    assert store.instance_commit(CT_CLASS, uid, end_to_end=True) is InstanceCommit.COMMITTED
    changed = pydicom.dcmread(CT)
    changed.SeriesDescription = "corrected"
    changed.save_as(tmp_path / "v2.dcm", enforce_file_format=True)
    header = read_header(tmp_path / "v2.dcm", command_sop_class=CT_CLASS,
                         command_sop_instance=uid)
    store.put_instance(tmp_path / "v2.dcm", header, calling_aet="CT1", site="a",
                       site_source="fixed", now=4.0)
    store.update_study(study.key, phase="closed")
    assert store.instance_commit(CT_CLASS, uid, end_to_end=True) is InstanceCommit.WAITING
    assert store.instance_commit(CT_CLASS, uid, end_to_end=False) is InstanceCommit.COMMITTED


def test_end_to_end_a_refused_instance_fails(store):
    uid = _put(store)
    study = store.studies()[0]
    store.update_study(study.key, phase="closed")
    store.enqueue(study.key, ("a/pacs",), 2.0)
    (item,) = store.next_batch("a/pacs", max_count=10, max_bytes=1 << 30, whole_study=True,
                               allowed=lambda s: True)
    store.record_failed("a/pacs", item, "PACS refused", 3.0)
    assert store.instance_commit(CT_CLASS, uid, end_to_end=True) is InstanceCommit.FAILED


def test_requests_are_kept_until_dropped_and_survive_reopening(tmp_path):
    key = FileKeystore(tmp_path / "key").load_or_create()
    store = Store(tmp_path / "data", key)
    request = _request(True, False)
    store.put_commit_request(request)
    store.close()
    store = Store(tmp_path / "data", key)
    assert store.commit_requests() == [request]
    store.drop_commit_request(request.transaction_uid)
    store.drop_commit_request(request.transaction_uid)
    assert store.commit_requests() == []
    store.close()


def test_modalities_are_keyed_by_ae_title_and_each_problem_has_its_line():
    from appliance.config import ConfigError, ModalityConfig, parse_config

    good = parse_config('[box]\ncommitment_mode = "pacs"\n[box.modalities.CT1]\n'
                        'host = "10.0.0.5"\nport = 104\n', "f.toml")
    assert good.box.commitment_mode == "pacs"
    assert good.box.modality("CT1") == ModalityConfig("CT1", "10.0.0.5", 104)
    assert good.box.modality("MG1") is None
    with pytest.raises(ConfigError) as caught:
        parse_config('[box]\ncommitment_mode = "modality"\n[box.modalities.CT1]\n'
                     'host = "10.0.0.5"\nport = 0\n[box.modalities.MG1]\nhots = "x"\n',
                     "f.toml")
    shown = [str(p) for p in caught.value.problems]
    assert any(s.startswith("f.toml:2: box.commitment_mode:") for s in shown), shown
    assert any(s.startswith("f.toml:5: box.modalities.CT1.port:") for s in shown), shown
    assert any(s.startswith("f.toml:7: box.modalities.MG1.hots: unknown key") for s in shown)
    assert any(s.startswith("f.toml:6: box.modalities.MG1.host: missing") for s in shown)
