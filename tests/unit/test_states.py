import random

from appliance.backoff import Backoff
from appliance.health import HealthFacts, health_state
from appliance.store import DeliveryCounts, StudyRecord
from appliance.studies import study_state


def _study(phase="closed", held=None, instances=3, completed_at=None) -> StudyRecord:
    return StudyRecord(key="00", seq=1, study_uid="1.2", site="a", site_source="fixed",
                       phase=phase, held_reason=held, instances=instances,
                       destinations=("a/pacs",), completed_at=completed_at)


def test_states_derive_from_counts():
    c = DeliveryCounts
    assert study_state(_study(phase="receiving"), {}) == "receiving"
    assert study_state(_study(held="site-unknown"), {}) == "held"
    assert study_state(_study(), {"a/pacs": c(0, 3, 0)}) == "queued"
    assert study_state(_study(), {"a/pacs": c(0, 3, 0)}, block="isolated") == "held"
    assert study_state(_study(), {"a/pacs": c(1, 2, 0)}) == "sending"
    assert study_state(_study(), {"a/pacs": c(3, 0, 0)}) == "complete"
    assert study_state(_study(), {"a/pacs": c(2, 0, 1)}) == "failed"
    assert study_state(_study(), {"a/pacs": c(1, 1, 1)}) == "sending"
    two = {"a/pacs": c(3, 0, 0), "a/arch": c(0, 3, 0)}
    assert study_state(_study(), two) == "queued" or study_state(_study(), two) == "sending"
    assert study_state(_study(), two) != "complete"


def test_backoff_doubles_to_the_cap_and_clears():
    b = Backoff(initial_s=1, cap_s=8, rng=random.Random(1))
    delays = [b.failed(100.0) for _ in range(6)]
    assert 0.75 <= delays[0] <= 1.25
    assert all(d <= 8 * 1.25 for d in delays) and delays[-1] >= 8 * 0.75
    assert not b.ready(100.0)
    b.clear()
    assert b.ready(100.0)


def test_health_precedence():
    base = dict(disk_below_reserve=False, receiver_running=True, failed_studies=0,
                held_studies=0, pending_instances=0)
    assert health_state(HealthFacts(**base)) == "ok"
    assert health_state(HealthFacts(**{**base, "pending_instances": 3})) == "sending"
    assert health_state(HealthFacts(**{**base, "held_studies": 1, "pending_instances": 3})
                        ) == "holding"
    assert health_state(HealthFacts(**{**base, "failed_studies": 1, "held_studies": 1})
                        ) == "attention"
    assert health_state(HealthFacts(**{**base, "disk_below_reserve": True})) == "fault"
