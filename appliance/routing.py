"""A study's destinations, and whether policy lets it move now (no I/O).

A study is only ever routed to destinations of the site stamped on it when it
arrived (PRODUCT.md: a study acquired at one site is delivered only to that
site's destinations).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.config import Config, DestinationConfig, SiteConfig
from appliance.store import StudyRecord

SITE_UNKNOWN = "site-unknown"
NO_DESTINATION = "no-destination"
ISOLATED = "isolated"
POLICY_LINK = "policy:link"
POLICY_WINDOW = "policy:window"


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
    for keyword, pattern in dest.match:
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


def block_reason(
    study: StudyRecord, config: Config, *, current_site: str | None, link_class: str,
    now: datetime,
) -> str | None:
    """Why `study` may not move now, or None when it may."""
    if study.held_reason:
        return study.held_reason
    site = config.site(study.site) if study.site else None
    if site is None:
        return SITE_UNKNOWN
    if config.detect.isolate and current_site != study.site:
        return ISOLATED
    if link_class not in site.policy.links:
        return POLICY_LINK
    if not in_windows(site.policy.windows, now):
        return POLICY_WINDOW
    return None
