"""A study's destinations, and whether policy lets it move now (no I/O).

A study is only ever routed to destinations of the site stamped on it when it
arrived (PRODUCT.md: a study acquired at one site is delivered only to that
site's destinations).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.config import Config, DestinationConfig, PolicyConfig, SiteConfig
from appliance.signals import CELLULAR, WIFI, WIRED, Link, Snapshot
from appliance.store import StudyRecord

SITE_UNKNOWN = "site-unknown"
ANOTHER_SITE = "another-site"  # a destination that is not of the study's site: never
NO_DESTINATION = "no-destination"
ISOLATED = "isolated"
POLICY_LINK = "policy:link"
POLICY_WINDOW = "policy:window"
POLICY_BUDGET = "policy:budget"


@dataclass(frozen=True)
class Route:
    destinations: tuple[str, ...]  # destination ids, "site/name"
    held_reason: str | None = None
    commitment: tuple[str, ...] = ()  # of those, the ones that ask for Storage Commitment


def destination_id(site: SiteConfig, dest: DestinationConfig) -> str:
    return f"{site.id}/{dest.name}"


_MATCH_FIELDS = {
    "Modality": "modality",
    "StationName": "station_name",
    "StudyDescription": "study_description",
    "CallingAETitle": "calling_aet",
}


def matches(dest: DestinationConfig, study: StudyRecord) -> bool:
    """Every `match` pattern must match (shell-style wildcards, case-insensitive)."""
    return _match_pairs(dest.match, study)


def _match_pairs(pairs: tuple[tuple[str, str], ...], study: StudyRecord) -> bool:
    for keyword, pattern in pairs:
        value = getattr(study, _MATCH_FIELDS.get(keyword, ""), None)
        if value is None or not fnmatch.fnmatchcase(str(value).upper(), pattern.upper()):
            return False
    return True


def route_study(study: StudyRecord, config: Config) -> Route:
    site = config.site(study.site) if study.site else None
    if site is None:
        return Route((), SITE_UNKNOWN)
    chosen = [d for d in site.destinations if matches(d, study)]
    ids = tuple(destination_id(site, d) for d in chosen)
    commitment = tuple(destination_id(site, d) for d in chosen if d.commitment)
    return Route(ids, None if ids else NO_DESTINATION, commitment)


_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _days(spec: str) -> set[int]:
    """"Mon-Fri" or "Sat,Sun" -> weekday numbers (Monday 0)."""
    days: set[int] = set()
    for part in spec.lower().split(","):
        first, _, last = part.partition("-")
        start, end = _DAY_NAMES.index(first), _DAY_NAMES.index(last or first)
        days.update(range(start, end + 1) if start <= end else [*range(start, 7),
                                                                *range(0, end + 1)])
    return days


def _window_parts(window: str) -> tuple[set[int], int, int]:
    days, _, times = window.strip().rpartition(" ")
    start_text, end_text = times.split("-")
    return (_days(days) if days else set(range(7))), _minutes(start_text), _minutes(end_text)


def in_windows(windows: tuple[str, ...], now: datetime) -> bool:
    """Windows are "[days ]HH:MM-HH:MM", local time; one that ends before it starts spans
    midnight and belongs to the day it starts on."""
    if not windows:
        return True
    minute = now.hour * 60 + now.minute
    today, yesterday = now.weekday(), (now.weekday() - 1) % 7
    for window in windows:
        days, start, end = _window_parts(window)
        if start < end and today in days and start <= minute < end:
            return True
        if start > end and ((today in days and minute >= start)
                            or (yesterday in days and minute < end)):
            return True
    return False


def next_window_start(windows: tuple[str, ...], now: datetime) -> datetime | None:
    """When delivery may next start under `windows` (None: no windows, any time)."""
    if not windows or in_windows(windows, now):
        return None
    probe = now.replace(second=0, microsecond=0)
    for _ in range(8 * 24 * 60 // 15):  # a week and a day, in quarter hours
        probe += timedelta(minutes=15 - probe.minute % 15)
        if in_windows(windows, probe):
            return probe
    return None


def _minutes(text: str) -> int:
    hours, minutes = text.strip().split(":")
    return int(hours) * 60 + int(minutes)


def link_for(host: str, snap: Snapshot, classes: tuple[tuple[str, str], ...] = ()) -> Link | None:
    """The link that carries traffic to `host`, from the snapshot's routes; None if no route.

    An interface the link source does not list (loopback, tun, veth, bridge) counts as
    wired unless `[links] classes` maps it.
    """
    interface = snap.routes.get(host)
    if interface is None:
        return None
    for link in snap.links:
        if link.interface == interface:
            return link
    return Link(interface, dict(classes).get(interface, WIRED))


def is_urgent(study: StudyRecord, site: SiteConfig) -> bool:
    return bool(site.policy.urgent_match) and _match_pairs(site.policy.urgent_match, study)


def block_reason(
    study: StudyRecord, config: Config, *, current_site: str | None, link: Link | None,
    now: datetime, cellular_used_bytes: tuple[int, int] = (0, 0),
) -> str | None:
    """Why `study` may not move now over `link`, or None when it may.

    `cellular_used_bytes` is (today, this month). Urgent studies (the site's
    `urgent_match`) may use `urgent_links` and ignore windows and the budget.
    With no route known the link is not judged: delivery tries, and backs off.
    """
    if study.held_reason:
        return study.held_reason
    site = config.site(study.site) if study.site else None
    if site is None:
        return SITE_UNKNOWN
    if config.detect.isolate and current_site != study.site:
        return ISOLATED
    policy = site.policy
    urgent = is_urgent(study, site)
    if link is not None:
        if link.link_class not in (policy.urgent_links if urgent else policy.links):
            return POLICY_LINK
        docked = not policy.docked_ssids or link.ssid in policy.docked_ssids
        if link.link_class == WIFI and not docked and not urgent:
            return POLICY_LINK
        if link.link_class == CELLULAR and not urgent and _over_budget(policy,
                                                                       cellular_used_bytes):
            return POLICY_BUDGET
    if not urgent and not in_windows(policy.windows, now):
        return POLICY_WINDOW
    return None


def delivery_block(
    study: StudyRecord, dest_id: str, config: Config, *, current_site: str | None,
    link: Link | None, now: datetime, cellular_used_bytes: tuple[int, int] = (0, 0),
) -> str | None:
    """Why `study` may not move to destination `dest_id` now (the delivery gate); None when
    it may. A destination of another site than the study's is refused whatever else holds:
    a study goes only to its own site (PRODUCT.md)."""
    if dest_id.split("/", 1)[0] != study.site:
        return ANOTHER_SITE
    if study.phase != "closed" and config.transmit.forward != "streaming":
        return "receiving"
    return block_reason(study, config, current_site=current_site, link=link, now=now,
                        cellular_used_bytes=cellular_used_bytes)


def _over_budget(policy: PolicyConfig, used: tuple[int, int]) -> bool:
    day_mb, month_mb = policy.cellular_mb_per_day, policy.cellular_mb_per_month
    return bool((day_mb and used[0] >= day_mb * 1_000_000)
                or (month_mb and used[1] >= month_mb * 1_000_000))


def destination_config(config: Config, dest_id: str) -> DestinationConfig:
    """A site's destination by id; "SITE/ris" is its MPPS relay to the RIS."""
    site_id, name = dest_id.split("/", 1)
    site = config.site(site_id)
    if site is None:
        raise KeyError(dest_id)
    if name == "ris" and site.mpps is not None:
        return DestinationConfig("ris", site.mpps.ae_title, site.mpps.host, site.mpps.port)
    return next(d for d in site.destinations if d.name == name)


class Policy:
    """The delivery gate over what the box knows now: the current site, the latest
    snapshot of links and routes, and the cellular traffic so far. Delivery asks it;
    it never reaches back into the box."""

    def __init__(self, config: Config, *, current_site: Callable[[], str | None],
                 snapshot: Callable[[], Snapshot],
                 cellular_used: Callable[[float], tuple[int, int]]) -> None:
        self.config = config
        self.current_site = current_site
        self.snapshot = snapshot
        self.cellular_used = cellular_used

    def link_to(self, dest_id: str) -> Link | None:
        host = destination_config(self.config, dest_id).host
        return link_for(host, self.snapshot(), self.config.links.classes)

    def link_class(self, dest_id: str) -> str | None:
        link = self.link_to(dest_id)
        return link.link_class if link is not None else None

    def gate(self, study: StudyRecord, dest_id: str, now: float) -> str | None:
        """Why a study may not move to `dest_id` now; None when it may."""
        if dest_id.split("/", 1)[0] != study.site:
            return ANOTHER_SITE  # before any look-up: a destination of no configured site
        return delivery_block(
            study, dest_id, self.config, current_site=self.current_site(),
            link=self.link_to(dest_id), now=datetime.fromtimestamp(now),
            cellular_used_bytes=self.cellular_used(now),
        )

    def study_block(self, study: StudyRecord, now: float) -> str | None:
        """A study's block for display: the first of its destinations' blocks, if all
        block."""
        if not study.destinations:
            return study.held_reason or (None if study.site else SITE_UNKNOWN)
        blocks = [self.gate(study, d, now) for d in study.destinations]
        return blocks[0] if all(blocks) else None
