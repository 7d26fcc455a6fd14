"""Node detection: a C-ECHO to each site's PACS, short, rate-limited, never spamming.

Each site is probed at most every `node_interval_s`; a site that does not answer
is probed less and less often (doubling, up to 16 intervals), so a box parked
far away sends a hospital a handful of echoes an hour.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import

from appliance import dimse, statuses
from appliance.config import Config, DestinationConfig

log = logging.getLogger("fluxbox.nodes")

ECHO_TIMEOUT_S = 2.0
MAX_BACKOFF_FACTOR = 16


def echo(calling_ae: str, dest: DestinationConfig, timeout_s: float = ECHO_TIMEOUT_S) -> bool:
    """One C-ECHO; True only for a success answer. Never raises."""
    ae = dimse.calling_ae(calling_ae, connect_timeout_s=timeout_s, dimse_timeout_s=timeout_s)
    ae.add_requested_context(Verification)
    try:
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        if not assoc.is_established:
            return False
        status = assoc.send_c_echo()
        assoc.release()
        return "Status" in status and int(status.Status) == statuses.SUCCESS
    except Exception:  # a probe must never take the box down
        return False


class NodeProber:
    """`probe_once(now)` echoes the sites that are due; `answers` holds the last success."""

    def __init__(self, config: Config, echo_fn: Callable[[str, DestinationConfig], bool] = echo
                 ) -> None:
        self.config = config
        self.echo = echo_fn
        self.answers: dict[str, float] = {}
        self._next_at: dict[str, float] = {}
        self._misses: dict[str, int] = {}

    def probe_once(self, now: float | None = None) -> dict[str, float]:
        now = time.time() if now is None else now
        interval = self.config.detect.node_interval_s
        for site in self.config.sites:
            if not site.destinations or now < self._next_at.get(site.id, 0.0):
                continue
            answered = self.echo(self.config.box.ae_title, site.destinations[0])
            if answered:
                self.answers[site.id] = now
                self._misses[site.id] = 0
            else:
                self._misses[site.id] = self._misses.get(site.id, 0) + 1
            factor = min(MAX_BACKOFF_FACTOR, 2 ** max(0, self._misses[site.id] - 1))
            self._next_at[site.id] = now + interval * factor
        return dict(self.answers)
