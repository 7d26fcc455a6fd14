"""The current site, worked out from configuration, a pin and a snapshot of signals (no I/O).

Automatic detection from GPS, networks and node echoes plugs in here as a
`SignalSnapshot`; until a detector reports a site, `auto` mode says unknown
and studies are held, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config import Config


@dataclass(frozen=True)
class SiteDecision:
    id: str | None
    source: str | None  # "gps" | "network" | "node" | "manual" | "fixed" | None

    def as_json(self) -> dict:
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
