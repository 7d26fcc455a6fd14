from datetime import datetime

from appliance.config import (
    Config,
    DestinationConfig,
    DetectConfig,
    PolicyConfig,
    SiteConfig,
)
from appliance.routing import (
    ANOTHER_SITE,
    ISOLATED,
    NO_DESTINATION,
    POLICY_BUDGET,
    POLICY_LINK,
    POLICY_WINDOW,
    SITE_UNKNOWN,
    Policy,
    block_reason,
    in_windows,
    link_for,
    next_window_start,
    route_study,
)
from appliance.signals import Link, Snapshot
from appliance.store import StudyRecord

NOON = datetime(2026, 11, 28, 12, 0)
WIRED_LINK = Link("eth0", "wired")
WIFI_LINK = Link("wlan0", "wifi", ssid="DEPOT")
CELL = Link("wwan0", "cellular")


def _config(isolate=True, windows=(), links=("wired", "wifi", "cellular")) -> Config:
    a = SiteConfig(
        id="a", policy=PolicyConfig(links=links, windows=windows),
        destinations=(
            DestinationConfig("pacs", "A_PACS", "127.0.0.1", 104),
            DestinationConfig("mammo", "A_MG", "127.0.0.1", 105, match=(("Modality", "MG"),)),
        ),
    )
    b = SiteConfig(id="b", destinations=(DestinationConfig("pacs", "B_PACS", "127.0.0.1", 106),))
    return Config(detect=DetectConfig(mode="auto", isolate=isolate), sites=(a, b))


def _study(site="a", modality="CT", **kw) -> StudyRecord:
    return StudyRecord(key="00", seq=1, study_uid="1.2.3", site=site, site_source="fixed",
                       phase="closed", modality=modality, **kw)


def test_study_goes_only_to_its_own_sites_destinations():
    assert route_study(_study("a"), _config()).destinations == ("a/pacs",)
    assert route_study(_study("b"), _config()).destinations == ("b/pacs",)


def test_match_sends_mammography_to_the_mammo_pacs_too():
    assert route_study(_study("a", "MG"), _config()).destinations == ("a/pacs", "a/mammo")


def test_unknown_site_is_held_never_guessed():
    for site in (None, "nowhere"):
        route = route_study(_study(site), _config())
        assert route.destinations == () and route.held_reason == SITE_UNKNOWN


def test_site_without_matching_destination_is_held():
    config = _config()
    only_mg = SiteConfig(id="a", destinations=(
        DestinationConfig("mammo", "A_MG", "h", 1, match=(("Modality", "MG"),)),))
    config = Config(detect=config.detect, sites=(only_mg,))
    assert route_study(_study("a", "CT"), config).held_reason == NO_DESTINATION


def test_isolation_blocks_a_study_away_from_its_site():
    kwargs = dict(link=WIRED_LINK, now=NOON)
    assert block_reason(_study("a"), _config(), current_site="b", **kwargs) == ISOLATED
    assert block_reason(_study("a"), _config(), current_site=None, **kwargs) == ISOLATED
    assert block_reason(_study("a"), _config(), current_site="a", **kwargs) is None
    assert block_reason(_study("a"), _config(isolate=False), current_site="b", **kwargs) is None


def test_link_and_window_policies():
    config = _config(links=("wired", "wifi"), windows=("19:00-23:00",))
    kwargs = dict(current_site="a")
    assert block_reason(_study(), config, link=CELL, now=NOON, **kwargs) == POLICY_LINK
    assert block_reason(_study(), config, link=WIFI_LINK, now=NOON, **kwargs) == POLICY_WINDOW
    evening = datetime(2026, 11, 28, 20, 0)
    assert block_reason(_study(), config, link=WIFI_LINK, now=evening, **kwargs) is None


def test_windows_spanning_midnight():
    assert in_windows(("22:00-02:00",), datetime(2026, 1, 1, 23, 30))
    assert in_windows(("22:00-02:00",), datetime(2026, 1, 1, 1, 0))
    assert not in_windows(("22:00-02:00",), datetime(2026, 1, 1, 12, 0))
    assert in_windows((), datetime(2026, 1, 1, 12, 0))


def test_windows_with_days():
    friday_evening = datetime(2026, 11, 27, 20, 0)  # a Friday
    saturday_evening = datetime(2026, 11, 28, 20, 0)
    assert in_windows(("Mon-Fri 19:00-23:00",), friday_evening)
    assert not in_windows(("Mon-Fri 19:00-23:00",), saturday_evening)
    assert in_windows(("Sat,Sun 00:00-24:00",), saturday_evening)
    saturday_1am = datetime(2026, 11, 28, 1, 0)
    assert in_windows(("Fri 22:00-02:00",), saturday_1am), "a window past midnight"
    assert not in_windows(("Sat 22:00-02:00",), saturday_1am)


def test_next_window_start():
    friday_noon = datetime(2026, 11, 27, 12, 7)
    assert next_window_start(("19:00-23:00",), friday_noon) == datetime(2026, 11, 27, 19, 0)
    assert next_window_start(("Mon 08:00-09:00",), friday_noon) == datetime(2026, 11, 30, 8, 0)
    assert next_window_start((), friday_noon) is None


def _policy_config(**policy) -> Config:
    site = SiteConfig(id="a", policy=PolicyConfig(**policy),
                      destinations=(DestinationConfig("pacs", "A_PACS", "h", 104),))
    return Config(detect=DetectConfig(mode="auto"), sites=(site,))


def test_docked_ssids_limit_wifi():
    config = _policy_config(docked_ssids=("DEPOT",))
    kw = dict(current_site="a", now=NOON)
    assert block_reason(_study(), config, link=WIFI_LINK, **kw) is None
    cafe = Link("wlan0", "wifi", ssid="CAFE")
    assert block_reason(_study(), config, link=cafe, **kw) == POLICY_LINK


def test_cellular_budget_per_day_and_month():
    config = _policy_config(cellular_mb_per_day=100, cellular_mb_per_month=1000)
    kw = dict(current_site="a", now=NOON, link=CELL)
    assert block_reason(_study(), config, cellular_used_bytes=(99_000_000, 0), **kw) is None
    assert block_reason(_study(), config, cellular_used_bytes=(100_000_000, 0), **kw
                        ) == POLICY_BUDGET
    assert block_reason(_study(), config, cellular_used_bytes=(0, 1_000_000_000), **kw
                        ) == POLICY_BUDGET
    assert block_reason(_study(), config, link=WIRED_LINK, current_site="a", now=NOON,
                        cellular_used_bytes=(10**12, 10**12)) is None


def test_urgent_studies_may_use_cellular_when_routine_ones_wait():
    config = _policy_config(links=("wired", "wifi"), windows=("19:00-23:00",),
                            urgent_match=(("StudyDescription", "*STAT*"),),
                            urgent_links=("wired", "wifi", "cellular"))
    routine = _study(study_description="CT HEAD")
    urgent = _study(study_description="CT HEAD STAT")
    kw = dict(current_site="a", now=NOON, link=CELL)
    assert block_reason(routine, config, **kw) == POLICY_LINK
    assert block_reason(urgent, config, **kw) is None


def test_link_for_a_destination_follows_the_route():
    snap = Snapshot(taken_at=0, links=(WIFI_LINK, CELL),
                    routes={"10.0.0.5": "wwan0", "127.0.0.1": "lo", "10.9.9.9": "tun0"})
    assert link_for("10.0.0.5", snap).link_class == "cellular"
    assert link_for("127.0.0.1", snap).link_class == "wired"
    assert link_for("10.9.9.9", snap, (("tun0", "cellular"),)).link_class == "cellular"
    assert link_for("192.0.2.1", snap) is None


def _policy(config: Config, *, here: str | None = "a", routes: dict | None = None,
            links: tuple = (), cellular_used: tuple[int, int] = (0, 0)) -> Policy:
    snapshot = Snapshot(taken_at=0.0, links=links, routes=routes or {})
    return Policy(config, current_site=lambda: here, snapshot=lambda: snapshot,
                  cellular_used=lambda now: cellular_used)


def test_the_gate_refuses_a_destination_of_another_site_before_anything_else():
    policy = _policy(_config())
    assert policy.gate(_study("a"), "b/pacs", NOON.timestamp()) == ANOTHER_SITE
    assert policy.gate(_study("a"), "nowhere/pacs", NOON.timestamp()) == ANOTHER_SITE
    assert policy.gate(_study("a"), "a/pacs", NOON.timestamp()) is None


def test_the_gate_judges_the_link_the_snapshot_routes_the_destination_over():
    config = _config(links=("wired", "wifi"))
    over_cell = _policy(config, links=(CELL,), routes={"127.0.0.1": "wwan0"})
    assert over_cell.link_class("a/pacs") == "cellular"
    assert over_cell.gate(_study("a"), "a/pacs", NOON.timestamp()) == POLICY_LINK
    wired = _policy(config, links=(WIRED_LINK,), routes={"127.0.0.1": "eth0"})
    assert wired.gate(_study("a"), "a/pacs", NOON.timestamp()) is None
    away = _policy(config, here="b", links=(WIRED_LINK,), routes={"127.0.0.1": "eth0"})
    assert away.gate(_study("a"), "a/pacs", NOON.timestamp()) == ISOLATED
    assert away.study_block(_study("a", destinations=("a/pacs",)), NOON.timestamp()) == ISOLATED
