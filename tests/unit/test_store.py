"""The store on a real file system: durability, encryption at rest, dedupe, positions, repair."""

import os
import stat
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from appliance.keystore import FileKeystore
from appliance.store import Outcome, Store, StoreFault, StoreFull
from appliance.validation import read_header

CT = Path(get_testdata_file("CT_small.dcm"))
MR = Path(get_testdata_file("MR_small.dcm"))


@pytest.fixture
def store(tmp_path):
    key = FileKeystore(tmp_path / "key").load_or_create()
    s = Store(tmp_path / "data", key)
    yield s
    s.close()


def _put(store, path, now=1000.0, site="a"):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    header = read_header(path, command_sop_class=ds.SOPClassUID,
                         command_sop_instance=ds.SOPInstanceUID)
    return store.put_instance(path, header, calling_aet="MOD", site=site, site_source="fixed",
                              now=now), header


def _variant(src: Path, dst: Path, **changes) -> Path:
    ds = pydicom.dcmread(src)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def test_key_file_is_private_and_stable(tmp_path):
    keystore = FileKeystore(tmp_path / "key")
    key = keystore.load_or_create()
    assert stat.S_IMODE(os.stat(keystore.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "key").st_mode) == 0o700
    assert FileKeystore(tmp_path / "key").load_or_create() == key


def test_the_index_is_for_the_box_user_alone(store):
    index = store.data_dir / "index"
    assert stat.S_IMODE(index.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in index.iterdir()} == {0o600}


def test_nothing_in_clear_at_rest(store, tmp_path):
    outcome, header = _put(store, CT)
    assert outcome is Outcome.STORED
    ds = pydicom.dcmread(CT)
    secrets = [str(ds.PatientName).encode(), ds.PatientID.encode(), header.study_uid.encode(),
               header.sop_instance_uid.encode(), bytes(ds.PixelData[:64])]
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for secret in secrets:
                assert secret not in content, f"{secret[:20]!r} in clear in {path.name}"


def test_blob_decrypts_to_exactly_what_was_received(store, tmp_path):
    _put(store, CT)
    study = store.studies()[0]
    (record,) = store.study_instances(study.key)
    store.write_plaintext(record, tmp_path / "out.dcm")
    assert (tmp_path / "out.dcm").read_bytes() == CT.read_bytes()
    assert store.verify_blob(record)


def test_same_content_twice_is_a_duplicate_and_stores_nothing(store):
    _put(store, CT)
    blobs = sorted(store.blob_dir.rglob("*.blob"))
    outcome, _ = _put(store, CT, now=1001.0)
    assert outcome is Outcome.DUPLICATE
    assert sorted(store.blob_dir.rglob("*.blob")) == blobs
    assert store.studies()[0].instances == 1


def test_same_uid_new_content_replaces_and_is_delivered_again(store, tmp_path):
    _put(store, CT)
    study = store.studies()[0]
    store.update_study(study.key, phase="closed")
    store.enqueue(study.key, ("a/pacs",), 1000.0)
    (item,) = store.next_batch("a/pacs", max_count=10, max_bytes=1 << 30, whole_study=True,
                               allowed=lambda s: True)
    assert store.record_delivered("a/pacs", item, 1001.0)
    assert store.study(study.key).completed_at is not None

    corrected = _variant(CT, tmp_path / "fixed.dcm", StudyDescription="CORRECTED")
    outcome, _ = _put(store, corrected, now=1002.0)
    assert outcome is Outcome.REPLACED
    study = store.study(study.key)
    assert (study.instances, study.corrections, study.completed_at) == (1, 1, None)
    assert len(list(store.blob_dir.rglob("*.blob"))) == 1, "old version's blob removed"
    counts = store.counts(study, "a/pacs")
    assert (counts.delivered, counts.pending) == (0, 1)


def test_ack_of_a_replaced_version_keeps_the_position_pending(store, tmp_path):
    _put(store, CT)
    study = store.studies()[0]
    store.update_study(study.key, phase="closed")
    store.enqueue(study.key, ("a/pacs",), 1000.0)
    (stale,) = store.next_batch("a/pacs", max_count=10, max_bytes=1 << 30, whole_study=True,
                                allowed=lambda s: True)
    _put(store, _variant(CT, tmp_path / "v2.dcm", StudyDescription="V2"), now=1001.0)
    assert not store.record_delivered("a/pacs", stale, 1002.0)
    assert store.counts(store.study(study.key), "a/pacs").pending == 1


def test_a_group_of_answers_is_one_commit_that_completes_its_studies(store):
    """Acknowledgments committed in groups: the group's studies complete in the same
    transaction; an answer for a position no longer pending (assigned elsewhere
    meanwhile) changes nothing."""
    _put(store, CT, now=1.0)
    _put(store, MR, now=2.0)
    first, second = store.studies()
    for study in (first, second):
        store.update_study(study.key, phase="closed")
        store.enqueue(study.key, ("a/pacs",), 3.0)
    batch = store.next_batch("a/pacs", max_count=10, max_bytes=1 << 30, whole_study=False,
                             allowed=lambda s: True)
    with store.env.begin(write=True) as txn:
        txn.delete(batch[1].pending_key, db=store._db["pending"])
    assert first.key in store.record_delivered_group("a/pacs", batch, 4.0)
    assert store.study(first.key).completed_at == 4.0
    assert store.counts(store.study(second.key), "a/pacs").delivered == 0, "no ack made up"


def test_queue_order_batches_and_completion(store):
    _put(store, CT, now=1.0)
    _put(store, MR, now=2.0)
    first, second = store.studies()
    for study in (first, second):
        store.update_study(study.key, phase="closed")
        assert store.enqueue(study.key, ("a/pacs",), 3.0) == 1
        assert store.enqueue(study.key, ("a/pacs",), 3.0) == 0, "enqueue is idempotent"
    batch = store.next_batch("a/pacs", max_count=10, max_bytes=1 << 30, whole_study=False,
                             allowed=lambda s: True)
    assert [q.study.key for q in batch] == [first.key, second.key]
    only_second = store.next_batch("a/pacs", max_count=10, max_bytes=1 << 30,
                                   whole_study=False, allowed=lambda s: s.key == second.key)
    assert [q.study.key for q in only_second] == [second.key]
    assert store.record_delivered("a/pacs", batch[0], 4.0)
    assert store.study(first.key).completed_at == 4.0
    assert store.study(second.key).completed_at is None


def test_failed_positions_retry(store):
    _put(store, CT)
    study = store.studies()[0]
    store.update_study(study.key, phase="closed")
    store.enqueue(study.key, ("a/pacs",), 1.0)
    (item,) = store.next_batch("a/pacs", max_count=1, max_bytes=1 << 30, whole_study=True,
                               allowed=lambda s: True)
    store.record_failed("a/pacs", item, "PACS does not accept SOP class CT", 2.0)
    counts = store.counts(study, "a/pacs")
    assert (counts.failed, counts.pending, counts.reasons) == (
        1, 0, ("PACS does not accept SOP class CT",))
    assert store.retry_failed(study.key, 3.0) == 1
    assert store.counts(study, "a/pacs").pending == 1


def test_below_reserve_refuses_and_leaves_nothing(tmp_path):
    key = FileKeystore(tmp_path / "key").load_or_create()
    store = Store(tmp_path / "data", key, reserve_bytes=1 << 62)
    with pytest.raises(StoreFull):
        _put(store, CT)
    assert store.studies() == []
    assert list(store.blob_dir.rglob("*.blob")) == []
    store.close()


def test_repair_scrubs_leftovers_and_reports_missing_blobs(store):
    _put(store, CT)
    (store.temp_dir / "crash.part").write_bytes(b"x")
    (store.spool_dir / "tmp123.dcm").write_bytes(b"x")
    orphan = store.blob_dir / "ff" / "ff00.blob"
    orphan.write_bytes(b"x")
    report = store.repair()
    assert (report.temp_files_removed, report.orphan_blobs_removed, report.missing_blobs) == (
        2, 1, 0)
    assert not orphan.exists()
    (record,) = store.study_instances(store.studies()[0].key)
    store._blob_path(record.blob).unlink()
    assert store.repair().missing_blobs == 1


def _deliver_all(store, dest, now):
    batch = store.next_batch(dest, max_count=100, max_bytes=1 << 30, whole_study=False,
                             allowed=lambda s: True)
    for item in batch:
        store.record_delivered(dest, item, now)
    return batch


def test_same_uid_under_another_study_leaves_the_old_study_and_survives_its_purge(
        store, tmp_path):
    _put(store, CT, now=1.0)
    old = store.studies()[0]
    store.update_study(old.key, phase="closed")
    store.enqueue(old.key, ("a/pacs",), 2.0)
    _deliver_all(store, "a/pacs", 3.0)
    assert store.study(old.key).completed_at is not None

    moved = _variant(CT, tmp_path / "moved.dcm", StudyInstanceUID="1.2.826.0.1.3680043.99.1",
                     StudyDescription="MOVED")
    outcome, header = _put(store, moved, now=4.0)
    assert outcome is Outcome.REPLACED
    new = store.study_by_uid(header.study_uid)
    assert store.study_instances(old.key) == [], "the old study no longer holds it"
    assert store.study(old.key) is None, "left empty, the old study goes (issue 12)"
    (record,) = store.study_instances(new.key)
    assert (new.instances, record.study_key) == (1, new.key)

    store.purge(now=10_000.0, retention_s=0)
    (record,) = store.study_instances(new.key)
    assert store.verify_blob(record), "purging the old study deleted the new version"
    store.update_study(new.key, phase="closed")
    store.enqueue(new.key, ("a/pacs",), 10_001.0)
    (item,) = _deliver_all(store, "a/pacs", 10_002.0)
    assert item.instance.study_key == new.key
    assert store.study(new.key).completed_at is not None


def test_purge_rechecks_a_study_that_received_an_instance_since_it_was_picked(store, tmp_path):
    _put(store, CT, now=1.0)
    study = store.studies()[0]
    store.update_study(study.key, phase="closed", completed_at=10.0)
    picked = store.study(study.key)
    corrected = _variant(CT, tmp_path / "late.dcm", StudyDescription="LATE")
    _put(store, corrected, now=20.0)  # arrives between the pick and the delete
    assert not store._delete_study(picked, 30.0)
    (record,) = store.study_instances(study.key)
    assert store.verify_blob(record)


def test_purge_removes_only_complete_studies_past_retention(store):
    _put(store, CT, now=1.0)
    _put(store, MR, now=2.0)
    done, waiting = store.studies()
    store.update_study(done.key, phase="closed", completed_at=10.0)
    assert store.purge(now=10.0 + 3600, retention_s=7200) == 0
    assert store.purge(now=10.0 + 7200, retention_s=7200) == 1
    assert [s.key for s in store.studies()] == [waiting.key]
    assert len(list(store.blob_dir.rglob("*.blob"))) == 1


def test_commitment_gates_completion_and_failed_instances_are_sent_again(store):
    _put(store, CT, now=1.0)
    study = store.studies()[0]
    store.update_study(study.key, phase="closed")
    store.enqueue(study.key, ("a/pacs",), 2.0, commitment=("a/pacs",))
    (item,) = store.next_batch("a/pacs", max_count=10, max_bytes=1 << 30, whole_study=True,
                               allowed=lambda s: True)
    assert not store.record_delivered("a/pacs", item, 3.0), "not complete before commitment"
    study = store.study(study.key)
    assert store.counts(study, "a/pacs").awaiting_commitment
    assert [s.key for s in store.awaiting_commitment("a/pacs", 4.0, 600)] == [study.key]

    store.commitment_requested("a/pacs", study, "1.2.3.4", 5.0)
    assert store.awaiting_commitment("a/pacs", 6.0, 600) == []
    assert store.awaiting_commitment("a/pacs", 700.0, 600) != [], "asked again after silence"
    assert store.commitment_result("1.2.3.4", {item.instance.sop_instance_uid}, 7.0)
    assert store.counts(study, "a/pacs").pending == 1, "not committed: sent again"
    assert not store.commitment_result("1.2.3.4", set(), 8.0), "a transaction ends once"

    (again,) = store.next_batch("a/pacs", max_count=10, max_bytes=1 << 30, whole_study=True,
                                allowed=lambda s: True)
    store.record_delivered("a/pacs", again, 9.0)
    store.commitment_requested("a/pacs", study, "1.2.3.5", 10.0)
    assert store.commitment_result("1.2.3.5", set(), 11.0)
    assert store.study(study.key).completed_at == 11.0


def test_a_late_instance_resets_commitment_and_an_old_transaction_confirms_nothing(
        store, tmp_path):
    _put(store, CT, now=1.0)
    study = store.studies()[0]
    store.update_study(study.key, phase="closed")
    store.enqueue(study.key, ("a/pacs",), 2.0, commitment=("a/pacs",))
    _deliver_all(store, "a/pacs", 3.0)
    store.commitment_requested("a/pacs", store.study(study.key), "1.2.3.4.1", 4.0)
    assert store.commitment_result("1.2.3.4.1", set(), 5.0)
    assert store.study(study.key).completed_at is not None

    # a late instance of the same study: the confirmation does not cover it
    ds = pydicom.dcmread(MR)
    ds.StudyInstanceUID = study.study_uid
    path = tmp_path / "late.dcm"
    ds.save_as(path, enforce_file_format=True)
    store.commitment_requested("a/pacs", store.study(study.key), "1.2.3.4.2", 6.0)
    _put(store, path, now=7.0)
    store.update_study(study.key, phase="closed")
    store.enqueue(study.key, ("a/pacs",), 8.0, commitment=("a/pacs",))
    _deliver_all(store, "a/pacs", 9.0)
    assert store.study(study.key).completed_at is None, "completed without a new commitment"
    assert store.commitment_result("1.2.3.4.2", set(), 10.0)  # asked before the late one
    assert store.study(study.key).completed_at is None, "an old transaction confirmed it"
    assert [s.key for s in store.awaiting_commitment("a/pacs", 11.0, 60)] == [study.key]
    store.commitment_requested("a/pacs", store.study(study.key), "1.2.3.4.3", 11.0)
    assert store.commitment_result("1.2.3.4.3", set(), 12.0)
    assert store.study(study.key).completed_at is not None


def test_a_damaged_index_value_is_counted_and_never_stops_the_start_or_costs_a_blob(store):
    _put(store, CT, now=1.0)
    _put(store, MR, now=2.0)
    blobs = sorted(store.blob_dir.rglob("*.blob"))
    with store.env.begin(write=True) as txn:
        key, value = next(iter(txn.cursor(db=store._db["instances"])))
        txn.put(key, value[:-1] + bytes([value[-1] ^ 1]), db=store._db["instances"])
        key, value = next(iter(txn.cursor(db=store._db["studies"])))
        txn.put(key, value[:-1] + bytes([value[-1] ^ 1]), db=store._db["studies"])
    report = store.repair()
    assert report.damaged_records == 1
    assert sorted(store.blob_dir.rglob("*.blob")) == blobs, "a blob was taken for an orphan"
    assert len(store.studies()) == 1, "the readable study is still listed"


@pytest.mark.parametrize("error", ["DiskError", "MapFullError", "Error"])
def test_an_index_write_error_is_a_clean_failure_and_leaves_no_blob(store, monkeypatch, error):
    import lmdb

    def fail(*args, **kwargs):
        raise getattr(lmdb, error)("simulated")

    monkeypatch.setattr(store, "_commit_instance", fail)
    expected = StoreFull if error != "Error" else StoreFault
    with pytest.raises(expected):
        _put(store, CT)
    assert list(store.blob_dir.rglob("*.blob")) == []
    assert list(store.temp_dir.iterdir()) == []


def test_acknowledgments_keep_no_plain_content_digest(store):
    _put(store, CT)
    study = store.studies()[0]
    store.update_study(study.key, phase="closed")
    store.enqueue(study.key, ("a/pacs",), 2.0)
    (item,) = _deliver_all(store, "a/pacs", 3.0)
    with store.env.begin() as txn:
        values = [v for _, v in txn.cursor(db=store._db["acked"])]
    assert values and all(item.instance.digest.encode() not in v for v in values)


def test_a_refusal_of_a_replaced_version_does_not_fail_the_new_one(store, tmp_path):
    _put(store, CT, now=1.0)
    study = store.studies()[0]
    store.update_study(study.key, phase="closed")
    store.enqueue(study.key, ("a/pacs",), 2.0)
    (old,) = store.next_batch("a/pacs", max_count=10, max_bytes=1 << 30, whole_study=True,
                              allowed=lambda s: True)
    _put(store, _variant(CT, tmp_path / "v2.dcm", StudyDescription="V2"), now=3.0)
    store.record_failed("a/pacs", old, "refused", 4.0)  # the PACS refused the old version
    counts = store.counts(store.study(study.key), "a/pacs")
    assert (counts.pending, counts.failed) == (1, 0), "the new version must still be sent"
