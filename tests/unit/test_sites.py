"""Site detection: evidence, conflicts, hysteresis, and the property that matters most."""

from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.config import (
    Config,
    DestinationConfig,
    DetectConfig,
    Geofence,
    SiteConfig,
)
from appliance.routing import block_reason, route_study
from appliance.signals import Link, Position, Snapshot
from appliance.sites import (
    UNKNOWN,
    SiteDecision,
    SiteTracker,
    candidate_site,
    decide_site,
    distance_m,
    gather_evidence,
)
from appliance.store import StudyRecord

A = SiteConfig(id="a", geofence=Geofence(51.5171, -0.1742, 400), networks=("10.20.0.0/16",),
               ssids=("A-IMAGING",), gateways=("00:1a:2b:3c:4d:5e",),
               destinations=(DestinationConfig("pacs", "A_PACS", "10.20.1.5", 104),))
B = SiteConfig(id="b", geofence=Geofence(51.4988, -0.1749, 400), networks=("10.30.0.0/16",),
               destinations=(DestinationConfig("pacs", "B_PACS", "10.30.1.5", 104),))
CONFIG = Config(detect=DetectConfig(mode="auto", hold_s=60), sites=(A, B))
NOW = 1_000_000.0


def fix(lat, lon, age_s=1.0, error_m=5.0, mode=3):
    return Position(lat, lon, mode, error_m, NOW - age_s, NOW)


def snap(position=None, links=(), nodes=None):
    return Snapshot(taken_at=NOW, position=position, links=tuple(links), nodes=nodes or {})


def test_distance():
    assert 2000 < distance_m(51.5171, -0.1742, 51.4988, -0.1749) < 2100


def test_each_kind_of_evidence_points_to_its_site():
    cases = [
        (snap(fix(51.5172, -0.1743)), "gps"),
        (snap(links=[Link("eth0", "wired", ("10.20.3.4/16",))]), "network"),
        (snap(links=[Link("wlan0", "wifi", ssid="A-IMAGING")]), "network"),
        (snap(links=[Link("eth0", "wired", gateway_mac="00:1A:2B:3C:4D:5E")]), "network"),
        (snap(nodes={"a": NOW - 10}), "node"),
    ]
    for snapshot, source in cases:
        assert candidate_site(gather_evidence(CONFIG, snapshot)) == SiteDecision("a", source)


def test_weak_or_stale_evidence_gives_no_vote():
    for position in (fix(51.5172, -0.1743, age_s=60), fix(51.5172, -0.1743, error_m=500),
                     fix(51.5172, -0.1743, mode=1), fix(51.5100, -0.1742)):
        assert gather_evidence(CONFIG, snap(position)) == {}
    assert gather_evidence(CONFIG, snap(nodes={"a": NOW - 3600})) == {}


def test_conflicting_evidence_gives_unknown():
    conflict = snap(fix(51.5172, -0.1743), links=[Link("eth0", "wired", ("10.30.0.9/16",))])
    assert set(gather_evidence(CONFIG, conflict)) == {"a", "b"}
    assert candidate_site(gather_evidence(CONFIG, conflict)) == UNKNOWN


def test_pin_beats_fixed_beats_detection():
    fixed = Config(detect=DetectConfig(mode="fixed", fixed_site="b"), sites=(A, B))
    detected = SiteDecision("a", "gps")
    assert decide_site(fixed, "a", detected) == SiteDecision("a", "manual")
    assert decide_site(fixed, None, detected) == SiteDecision("b", "fixed")
    assert decide_site(CONFIG, None, detected) == detected


def test_hysteresis_new_site_holds_before_taking_over():
    tracker = SiteTracker(hold_s=60)
    a, b = SiteDecision("a", "gps"), SiteDecision("b", "gps")
    assert tracker.step(a, {}, 0) is None and tracker.current == UNKNOWN
    change = tracker.step(a, {}, 60)
    assert change and change.after == a and tracker.confirmed_at == 60
    assert tracker.step(UNKNOWN, {}, 100) is None and tracker.current == a, "a blip keeps a"
    assert tracker.step(a, {}, 110) is None and tracker.current == a
    change = tracker.step(b, {"b": ["gps"]}, 200)
    assert change and change.after == UNKNOWN, "evidence for b ends a at once"
    assert tracker.step(b, {}, 230) is None and tracker.current == UNKNOWN
    assert tracker.step(b, {}, 260).after == b


def test_conflicting_evidence_ends_the_current_site_at_once():
    tracker = SiteTracker(hold_s=60)
    a = SiteDecision("a", "network")
    tracker.step(a, {"a": ["network:10.20.0.5"]}, 0)
    tracker.step(a, {"a": ["network:10.20.0.5"]}, 60)
    assert tracker.current == a
    conflict = {"a": ["network:10.20.0.5"], "b": ["gps:51.5,-0.17"]}
    change = tracker.step(UNKNOWN, conflict, 61)
    assert change and change.after == UNKNOWN, "a conflict must not keep stamping a for hold_s"
    assert tracker.step(UNKNOWN, conflict, 200) is None and tracker.current == UNKNOWN


def test_losing_all_evidence_ends_the_site_after_the_hold():
    tracker = SiteTracker(hold_s=30)
    a = SiteDecision("a", "network")
    tracker.step(a, {}, 0)
    tracker.step(a, {}, 30)
    assert tracker.step(UNKNOWN, {}, 40) is None
    assert tracker.step(UNKNOWN, {}, 70).after == UNKNOWN


SITES = st.sampled_from([None, "a", "b"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(SITES, st.integers(0, 120), st.booleans(), st.booleans()),
                min_size=1, max_size=60),
       st.integers(0, 90), st.booleans())
def test_no_study_ever_reaches_another_sites_destination(steps, hold_s, isolate):
    """Random drives: evidence changes, studies are acquired, delivery is attempted.

    A study is stamped only with a site the evidence pointed to when it was acquired,
    and is only ever routed to that site's destinations.
    """
    config = Config(detect=DetectConfig(mode="auto", isolate=isolate), sites=(A, B))
    tracker = SiteTracker(hold_s=hold_s)
    now = 0.0
    studies: list[StudyRecord] = []
    for evidence_site, dt, acquire, deliver in steps:
        now += dt
        candidate = SiteDecision(evidence_site, "gps") if evidence_site else UNKNOWN
        tracker.step(candidate, {}, now)
        current = tracker.current.id
        assert current in (None, evidence_site) or evidence_site is None, "never contradicts"
        if acquire:
            studies.append(StudyRecord(key=f"{len(studies):02x}", seq=len(studies),
                                       study_uid=str(len(studies)), site=current,
                                       site_source="gps", phase="closed"))
        if deliver:
            for study in studies:
                route = route_study(study, config)
                blocked = block_reason(study, config, current_site=current,
                                       link=None, now=datetime(2026, 1, 1, 12))
                for dest_id in route.destinations:
                    assert dest_id.split("/")[0] == study.site
                if study.site is None:
                    assert route.destinations == () and blocked is not None
                if isolate and blocked is None:
                    assert current == study.site
