"""The receive path's store: a data set written into an Intake as pynetdicom writes it, then
`put_intake`. The blob files on disk are always exactly those the index names."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filewriter import write_file_meta_info
from pynetdicom.dsutils import create_file_meta

from appliance.crypto import decrypt_stream
from appliance.keystore import FileKeystore
from appliance.store import Intake, Outcome, Store, StoreFault, StoreFull
from appliance.validation import InstanceHeader, read_header_from
from appliance.validation.elements import read_meta

CT = Path(get_testdata_file("CT_small.dcm"))


@pytest.fixture
def key(tmp_path) -> bytes:
    return FileKeystore(tmp_path / "key").load_or_create()


@pytest.fixture
def store(tmp_path, key):
    s = Store(tmp_path / "data", key)
    yield s
    s.close()


def _as_received(path: Path, **changes: object) -> bytes:
    """The bytes pynetdicom writes for `path` arriving by C-STORE: preamble, "DICM", its own
    file meta, then the data set as it travelled."""
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    raw = io.BytesIO()
    ds.save_as(raw, enforce_file_format=True)
    data = raw.getvalue()
    syntax, offset = read_meta(io.BytesIO(data), len(data))
    meta = io.BytesIO()
    write_file_meta_info(meta, create_file_meta(
        sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax=syntax))
    return bytes(128) + b"DICM" + meta.getvalue() + data[offset:]


def _receive(store: Store, received: bytes,
             fragment: int = 16_000) -> tuple[Intake, InstanceHeader]:
    intake = store.open_intake()
    head = received.index(b"DICM") + 4
    meta_end = head + 12 + int.from_bytes(received[head + 8:head + 12], "little")
    for part in (received[:128], received[128:head], received[head:meta_end]):
        intake.write(part)
    for at in range(meta_end, len(received), fragment):
        intake.write(received[at:at + fragment])
    intake.end()
    ds = pydicom.dcmread(io.BytesIO(received), stop_before_pixels=True)
    with intake.reader() as plain:
        header = read_header_from(plain, intake.size, command_sop_class=ds.SOPClassUID,
                                  command_sop_instance=ds.SOPInstanceUID)
    return intake, header


def _put(store: Store, received: bytes) -> Outcome:
    intake, header = _receive(store, received)
    try:
        return store.put_intake(intake, header, calling_aet="MOD", site="a",
                                site_source="fixed", now=1000.0)
    finally:
        intake.close()  # as the receiver does


def _blob_files(store: Store) -> set[str]:
    return {p.stem for p in store.blob_dir.glob("*/*") if p.is_file()}


def _named_blobs(store: Store) -> set[str]:
    return {r.blob for s in store.studies() for r in store.study_instances(s.key)}


def test_the_digest_is_the_one_the_file_path_computes(store, tmp_path, key):
    received = _as_received(CT)
    assert _put(store, received) is Outcome.STORED
    (record,) = store.study_instances(store.studies()[0].key)
    plain = tmp_path / "received.dcm"
    plain.write_bytes(received)
    other = Store(tmp_path / "other", key)
    try:
        with open(plain, "rb") as fp:
            header = read_header_from(fp, len(received), command_sop_class=record.sop_class_uid,
                                      command_sop_instance=record.sop_instance_uid)
        other.put_instance(plain, header, calling_aet="MOD", site="a", site_source="fixed")
        (old_path_record,) = other.study_instances(other.studies()[0].key)
    finally:
        other.close()
    assert record.digest == old_path_record.digest  # duplicates found across versions
    with open(store._blob_path(record.blob), "rb") as blob:
        assert b"".join(decrypt_stream(store.keys.blob_key, blob)) == received


def test_a_duplicate_leaves_no_second_blob(store):
    received = _as_received(CT)
    assert _put(store, received) is Outcome.STORED
    assert _put(store, received) is Outcome.DUPLICATE
    assert _blob_files(store) == _named_blobs(store) and len(_blob_files(store)) == 1


def test_a_new_version_replaces_the_old_blob(store):
    assert _put(store, _as_received(CT)) is Outcome.STORED
    assert _put(store, _as_received(CT, ImageComments="v2")) is Outcome.REPLACED
    assert _blob_files(store) == _named_blobs(store) and len(_blob_files(store)) == 1


def test_a_failure_removing_the_old_version_keeps_the_new_one(store, monkeypatch):
    """Once the index names the new blob, nothing may remove it (review finding): the old
    version's file is left to start-up's repair."""
    assert _put(store, _as_received(CT)) is Outcome.STORED
    (old,) = _named_blobs(store)

    def unlink_fails(name: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(store._blobs, "unlink", unlink_fails)
    assert _put(store, _as_received(CT, ImageComments="v2")) is Outcome.REPLACED
    (new,) = _named_blobs(store)
    assert new != old and _blob_files(store) == {old, new}
    monkeypatch.undo()
    store._blobs.repair()
    assert _blob_files(store) == {new}


def test_a_data_set_cut_off_mid_way_is_removed_at_start_up(store):
    intake = store.open_intake()
    intake.write(_as_received(CT)[:5000])  # and the box stops
    store._blobs.repair()
    assert not any(p.is_file() for p in store.blob_dir.glob("*/*"))


def test_a_failed_index_commit_leaves_no_blob(store, monkeypatch):
    def commit_fails(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_commit_instance", commit_fails)
    with pytest.raises(StoreFull):  # the receiver answers 0xA700
        _put(store, _as_received(CT))
    assert _blob_files(store) == set()


def test_file_meta_read_otherwise_than_validation_read_it_is_refused(store):
    intake, header = _receive(store, _as_received(CT))
    with pytest.raises(StoreFault):
        store.put_intake(intake, header.__class__(**{**header.__dict__,
                                                     "transfer_syntax": "1.2.840.10008.1.2"}),
                         calling_aet="MOD", site="a", site_source="fixed")
    assert _blob_files(store) == set()
