"""The closing and delivery steps driven one at a time, at the times the test gives, against
a real PACS on loopback: no sleeping, every outcome the step's own (issue 9: test seams)."""

from __future__ import annotations

import time

import pydicom
import pytest

from appliance.delivery.worker import PEER_ABORTS_MAX
from appliance.demo.synthetic import write_multiframe
from appliance.store import Store
from tests.peers import CountingSCP, dataset_part
from tests.support.parts import QUIET_S, Parts


def _uids(store: Store) -> set[str]:
    return {r.sop_instance_uid for s in store.studies() for r in store.study_instances(s.key)}


def test_a_study_closes_only_once_it_has_been_quiet_for_study_quiet_s(tmp_path, ct_study):
    with CountingSCP(ae_title="PACS") as pacs:
        parts = Parts(tmp_path, ct_study[:2], pacs.port, close=False)
        try:
            assert parts.closer.close_once(parts.now + QUIET_S - 1) == []
            assert parts.state() == "receiving"
            assert parts.worker.deliver_once().sent == 0, "nothing goes before the study closes"
            assert parts.closer.close_once(parts.now + QUIET_S + 1)
            assert parts.state() == "closed"
            assert parts.worker.deliver_once().sent == 2
            assert pacs.uids() == _uids(parts.store)
        finally:
            parts.close()


def test_a_pacs_out_of_resources_is_tried_again_after_back_off_by_the_clock(tmp_path,
                                                                           ct_study):
    with CountingSCP(ae_title="PACS", refuse_all=True, refuse_status=0xA700) as pacs:
        parts = Parts(tmp_path, ct_study[:3], pacs.port)
        try:
            first = parts.worker.deliver_once()
            assert first.sent == 0 and first.error, first
            tried = pacs.associations
            retry_at = parts.worker.backoff.next_at
            assert retry_at > parts.now

            pacs.refuse_all = False
            parts.now = retry_at - 0.01  # still backing off: no association at all
            assert parts.worker.deliver_once().sent == 0
            assert pacs.associations == tried

            parts.now = retry_at
            assert parts.worker.deliver_once().sent == 3
            assert pacs.uids() == _uids(parts.store)
            assert parts.worker.backoff.next_at == 0.0, "success clears the back-off"
            assert parts.store.study(parts.study.key).completed_at == parts.now, "complete"
        finally:
            parts.close()


def test_a_stopping_box_ends_a_batch_after_the_instance_in_flight(tmp_path, ct_study):
    """SIGTERM while a long batch goes out: the worker stops after the instance in flight
    (the box closes its index only then); the rest goes, once, after the restart."""
    with CountingSCP(ae_title="PACS") as pacs:
        parts = Parts(tmp_path, ct_study[:8], pacs.port)
        try:
            def stop_once_two_arrived() -> None:  # runs as the third one is about to go
                if len(pacs.uids()) == 2:
                    parts.worker.stopping.set()

            parts.pause = stop_once_two_arrived
            assert parts.worker.deliver_once().sent == 3
            assert len(pacs.uids()) == 3
            parts.worker.stopping.clear()
            parts.pause = lambda: None
            assert parts.worker.deliver_once().sent == 5
            assert pacs.uids() == _uids(parts.store) and pacs.resent() == {}
        finally:
            parts.close()


def test_an_instance_the_pacs_aborts_on_fails_after_three_aborts_and_the_rest_go(tmp_path,
                                                                               ct_study):
    """The PACS's application aborts the association on one instance, every time (issue 7):
    after PEER_ABORTS_MAX batches that instance fails with that reason, the others reach
    the PACS, and nothing waits for ever behind it."""
    choke = pydicom.dcmread(ct_study[1], stop_before_pixels=True).SOPInstanceUID
    with CountingSCP(ae_title="PACS", abort_on={choke}) as pacs:
        parts = Parts(tmp_path, ct_study[:4], pacs.port)
        try:
            batches = []
            while len(batches) <= PEER_ABORTS_MAX and not any(r.failed for r in batches):
                batches.append(parts.worker.deliver_once())
                parts.now = max(parts.now, parts.worker.backoff.next_at)
            assert len(batches) == PEER_ABORTS_MAX and batches[-1].failed == 1, batches
            assert pacs.aborts == PEER_ABORTS_MAX
            for _ in range(3):  # the rest go on (each batch stops at an abort no more)
                parts.worker.deliver_once()
                parts.now = max(parts.now, parts.worker.backoff.next_at)
            delivered = {r.sop_instance_uid for r in pacs.records if r.status == 0}
            assert delivered == _uids(parts.store) - {choke}
            counts = parts.store.counts(parts.study, "a/pacs")
            assert (counts.delivered, counts.failed, counts.pending) == (3, 1, 0)
        finally:
            parts.close()


def test_a_dropped_link_is_never_counted_against_an_instance(tmp_path, ct_study):
    """A connection that breaks while an instance is sent (the PACS process dies, the link
    drops) is the link's fault: the instance stays pending however often it happens."""
    with CountingSCP(ae_title="PACS", drop_times=PEER_ABORTS_MAX + 2) as pacs:
        parts = Parts(tmp_path, ct_study[:1], pacs.port)
        try:
            for _ in range(PEER_ABORTS_MAX + 2):
                assert parts.worker.deliver_once().failed == 0
                parts.now = max(parts.now, parts.worker.backoff.next_at)
            assert parts.store.counts(parts.study, "a/pacs").pending == 1
            assert pacs.drop_times == 0, "every batch reached the PACS and was cut"
            assert parts.worker.deliver_once().sent == 1
        finally:
            parts.close()


@pytest.fixture(scope="module")
def multiframe_8mb(tmp_path_factory):
    """An 8 MB Enhanced CT instance: 64 PDUs to a PACS announcing 128 KiB."""
    return write_multiframe(tmp_path_factory.mktemp("mf") / "mf.dcm", size_bytes=8 << 20,
                            rows=512, cols=512, seed=4)


@pytest.mark.parametrize("abort", [True, False], ids=["pacs-aborts", "link-lost"])
def test_an_instance_cut_mid_data_set_stays_pending_and_goes_whole_later(
        tmp_path, multiframe_8mb, abort):
    """The PACS aborts (A-ABORT, then it closes) or the connection breaks after 5 of the
    instance's PDUs: the send stops at once (no time-out waited, the rest of the data
    set never queued), the instance stays pending (a broken link is never counted
    against it) and the next try delivers it whole."""
    uid = pydicom.dcmread(multiframe_8mb, stop_before_pixels=True).SOPInstanceUID
    with CountingSCP(ae_title="PACS", keep_data=True, cut_after_pdus=5,
                     cut_abort=abort) as pacs:
        parts = Parts(tmp_path, [multiframe_8mb], pacs.port)
        try:
            started = time.monotonic()
            first = parts.worker.deliver_once()
            assert time.monotonic() - started < 10, "no DIMSE time-out waited"
            assert first.sent == 0 and first.error and pacs.cuts == 1, first
            assert pacs.records == [], "the PACS never had the whole instance"
            assert parts.store.counts(parts.study, "a/pacs").pending == 1
            if not abort:
                assert parts.worker.peer_aborts == {}, "a broken link is not the instance's"
            parts.now = parts.worker.backoff.next_at
            assert parts.worker.deliver_once().sent == 1
            assert pacs.data[uid] == dataset_part(multiframe_8mb.read_bytes())
            assert parts.store.study(parts.study.key).completed_at == parts.now
        finally:
            parts.close()
