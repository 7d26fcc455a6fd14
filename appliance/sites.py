"""The current site, worked out from configuration, a pin and a snapshot of signals (no I/O).

Evidence for a site: a fresh GPS fix inside its geofence (`gps`); an address of
the box inside its `networks`, a Wi-Fi SSID in its `ssids`, or a default gateway
(IP or MAC) in its `gateways` (`network`); its PACS answering a C-ECHO (`node`).
Evidence for two sites at once is a conflict and gives unknown: a study whose
site is unknown is held, never guessed.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass

from appliance.config import Config, SiteConfig
from appliance.signals import Link, Snapshot
from appliance.store.records import StudyRecord

SOURCE_ORDER = ("network", "gps", "node")  # the name a decision gives its strongest evidence


@dataclass(frozen=True)
class SiteDecision:
    id: str | None
    source: str | None  # "gps" | "network" | "node" | "manual" | "fixed" | None

    def as_json(self) -> dict[str, str | None]:
        return {"id": self.id, "source": self.source}


UNKNOWN = SiteDecision(None, None)


def decide_site(config: Config, pinned: str | None, detected: SiteDecision = UNKNOWN
                ) -> SiteDecision:
    """A pin (`fluxbox site set`) beats the config's fixed site, which beats detection."""
    if pinned:
        return SiteDecision(pinned, "manual")
    if config.detect.mode == "fixed" and config.detect.fixed_site:
        return SiteDecision(config.detect.fixed_site, "fixed")
    return detected


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine), metres."""
    r = 6_371_000.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(min(1.0, math.sqrt(a)))


def adoptable(studies: Iterable[StudyRecord], here: tuple[float, float] | None, now: float, *,
              within_s: float, radius_m: float) -> list[StudyRecord]:
    """Held studies that take a site just confirmed (`detect.adopt_within_s`): acquired
    at most `within_s` before, within `radius_m` of where the vehicle is. Never by guess:
    both time and position must agree, so no position or no window adopts nothing."""
    if not within_s or here is None:
        return []
    return [s for s in studies if s.site is None and s.position is not None
            and now - s.first_at <= within_s and distance_m(*s.position, *here) <= radius_m]


def _gps_evidence(site: SiteConfig, snap: Snapshot, config: Config) -> str | None:
    fix, fence = snap.position, site.geofence
    if fix is None or fence is None or fix.mode < 2:
        return None
    if snap.taken_at - fix.fix_time > config.detect.gps_max_age_s:
        return None
    if fix.error_m is not None and fix.error_m > config.detect.gps_max_error_m:
        return None
    metres = distance_m(fix.lat, fix.lon, fence.lat, fence.lon)
    return f"gps: {metres:.0f} m from the site" if metres <= fence.radius_m else None


def _network_evidence(site: SiteConfig, links: tuple[Link, ...]) -> str | None:
    networks = [ipaddress.ip_network(n) for n in site.networks]
    for link in links:
        for address in link.addresses:
            ip = ipaddress.ip_interface(address).ip
            if any(ip in net for net in networks):
                return f"network: address of {link.interface} in a site network"
        if link.ssid and link.ssid in site.ssids:
            return f"network: Wi-Fi SSID on {link.interface}"
        gateways = {g.lower() for g in site.gateways}
        if gateways & {(link.gateway or "").lower(), (link.gateway_mac or "").lower()}:
            return f"network: gateway of {link.interface}"
    return None


def _node_evidence(site: SiteConfig, snap: Snapshot, config: Config) -> str | None:
    answered = snap.nodes.get(site.id)
    fresh_s = 2.5 * config.detect.node_interval_s
    if answered is not None and snap.taken_at - answered <= fresh_s:
        return "node: the site's PACS answers"
    return None


def gather_evidence(config: Config, snap: Snapshot) -> dict[str, list[str]]:
    """Site id -> what points to it (empty sites left out)."""
    evidence: dict[str, list[str]] = {}
    for site in config.sites:
        found = [e for e in (_network_evidence(site, snap.links), _gps_evidence(site, snap, config),
                             _node_evidence(site, snap, config)) if e]
        if found:
            evidence[site.id] = found
    return evidence


def candidate_site(evidence: dict[str, list[str]]) -> SiteDecision:
    """The one site the evidence points to, or unknown when it points to none or several."""
    if len(evidence) != 1:
        return UNKNOWN
    ((site_id, found),) = evidence.items()
    sources = {item.split(":", 1)[0] for item in found}
    return SiteDecision(site_id, next(s for s in SOURCE_ORDER if s in sources))


def _contrary(current: str, candidate: SiteDecision, evidence: dict[str, list[str]]) -> bool:
    """Evidence for a site other than the current one: another site alone, or a conflict
    (the current site's evidence and another's at once). Mere loss of evidence is not."""
    return candidate.id is not None or any(site != current for site in evidence)


@dataclass(frozen=True)
class SiteChange:
    before: SiteDecision
    after: SiteDecision
    evidence: dict[str, list[str]]
    at: float


class SiteTracker:
    """Hysteresis over candidates (no I/O; time is passed in).

    A new site must hold for `hold_s` before it takes over. Evidence for another
    site ends the current one at once (a study is never stamped with the site the
    vehicle just left); mere loss of evidence ends it only after `hold_s` (a GPS
    blip while parked changes nothing).
    """

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.current = UNKNOWN
        self.confirmed_at: float | None = None
        self._pending: SiteDecision | None = None
        self._pending_since = 0.0

    def step(self, candidate: SiteDecision, evidence: dict[str, list[str]],
             now: float) -> SiteChange | None:
        if candidate.id == self.current.id:
            self._pending = None
            if candidate.id is not None and candidate.source != self.current.source:
                self.current = candidate  # same site, better or other evidence: not a change
            return None
        if self._pending is None or self._pending.id != candidate.id:
            self._pending, self._pending_since = candidate, now
        before = self.current
        if now - self._pending_since >= self.hold_s:
            self.current = candidate
            self.confirmed_at = now if candidate.id else None
            self._pending = None
        elif self.current.id is not None and _contrary(self.current.id, candidate, evidence):
            self.current = UNKNOWN  # contrary evidence: stop stamping the old site now
            self.confirmed_at = None
        if self.current == before:
            return None
        return SiteChange(before, self.current, evidence, now)
