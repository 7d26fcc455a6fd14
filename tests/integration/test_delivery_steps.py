"""The closing and delivery steps driven one at a time, at the times the test gives, against
a real PACS on loopback: no sleeping, every outcome the step's own (issue 9: test seams)."""

from __future__ import annotations

from appliance.store import Store
from tests.peers import CountingSCP
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
