"""Compression ahead of time, on the real store: variants are lossless, tied to the
version they were made from, and never made while a modality is sending."""

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless

from appliance.config import Config, DestinationConfig, SiteConfig
from appliance.demo.synthetic import write_ct_study
from appliance.keystore import FileKeystore
from appliance.precompress import Precompressor
from appliance.store import Store
from appliance.validation import read_header


@pytest.fixture
def queued(tmp_path):
    store = Store(tmp_path / "data", FileKeystore(tmp_path / "key").load_or_create())
    (path,) = write_ct_study(tmp_path / "ct", slices=1, rows=128, cols=128, seed=2)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    header = read_header(path, command_sop_class=ds.SOPClassUID,
                         command_sop_instance=ds.SOPInstanceUID)
    store.put_instance(path, header, calling_aet="CT", site="a", site_source="fixed", now=1.0)
    study = store.studies()[0]
    store.update_study(study.key, phase="closed")
    store.enqueue(study.key, ("a/pacs",), 2.0)
    config = Config(sites=(SiteConfig(id="a", destinations=(DestinationConfig(
        "pacs", "P", "h", 1, transfer_syntaxes=("JPEGLSLossless",)),)),))
    yield store, config, path, store.study_instances(study.key)[0]
    store.close()


def test_a_lossless_variant_is_made_and_decodes_to_the_same_pixels(queued, tmp_path):
    store, config, path, record = queued
    busy = [True]
    pre = Precompressor(store, config, receiving_busy=lambda: busy[0])
    assert pre.compress_once() == 0, "nothing while a modality is sending"
    busy[0] = False
    assert pre.compress_once() == 1
    assert pre.compress_once() == 0, "made once"
    variant = store.variant(record, str(JPEGLSLossless))
    assert variant is not None and variant.size_bytes < record.size_bytes / 2
    store.write_plaintext(variant, tmp_path / "variant.dcm")
    compressed = pydicom.dcmread(tmp_path / "variant.dcm")
    assert compressed.file_meta.TransferSyntaxUID == JPEGLSLossless
    original = pydicom.dcmread(path)
    assert compressed.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(compressed.pixel_array, original.pixel_array)


def test_compression_ahead_writes_no_plaintext_copy(queued, monkeypatch):
    """The instance is decrypted into memory, compressed there and encrypted again: no
    copy in clear is written (it was, to spool/, before)."""
    store, config, path, record = queued

    def no_copy(*args: object) -> None:
        raise AssertionError("a plaintext copy was written")

    monkeypatch.setattr(store._blobs, "write_plaintext", no_copy)
    assert Precompressor(store, config, receiving_busy=lambda: False).compress_once() == 1
    assert not any(store.spool_dir.iterdir()) and not any(store.temp_dir.iterdir())


def test_a_variant_of_an_older_version_is_not_used(queued, tmp_path):
    store, config, path, record = queued
    Precompressor(store, config, receiving_busy=lambda: False).compress_once()
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = "CORRECTED"
    ds.save_as(tmp_path / "v2.dcm", enforce_file_format=True)
    header = read_header(tmp_path / "v2.dcm", command_sop_class=ds.SOPClassUID,
                         command_sop_instance=ds.SOPInstanceUID)
    store.put_instance(tmp_path / "v2.dcm", header, calling_aet="CT", site="a",
                       site_source="fixed", now=3.0)
    (current,) = store.study_instances(store.studies()[0].key)
    assert store.variant(current, str(JPEGLSLossless)) is None
    assert store.repair().orphan_blobs_removed == 0, "variant blobs are known to repair"
