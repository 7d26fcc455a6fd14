"""What `status` and `studies` show (and the metrics and the LED read): views built from
what the box's parts know, as plain dicts. No state of their own.

No patient-identifying value goes into a view (PRODUCT.md, Guarantees): a study is shown
by its UID, site, state, counts and findings; `test_no_patient_data.py` searches every
view for names, IDs, birth dates and accession numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.config import Config
from appliance.health import HealthFacts, health_state
from appliance.report import study_view
from appliance.routing import POLICY_WINDOW, next_window_start
from appliance.signals import CELLULAR, LINK_CLASSES, OFFLINE, Link, ModemState
from appliance.store import Store, StudyRecord

LATENCY_RECENT = 50  # complete studies the median delivery latency is taken over

View = dict[str, Any]  # a view as JSON: what `status --json` and `studies --json` print


def median_latency(rows: list[View], recent: int = LATENCY_RECENT) -> float | None:
    """Median seconds from arrival to complete over the most recent complete studies."""
    done = sorted((r["completed_at"], r["completed_at"] - r["received_at"]) for r in rows
                  if r["completed_at"])[-recent:]
    if not done:
        return None
    spans = sorted(float(span) for _, span in done)
    return spans[len(spans) // 2]


def studies_view(store: Store, studies: Iterable[StudyRecord],
                 block: Callable[[StudyRecord, float], str | None], *, ttl_h: float,
                 now: float) -> list[View]:
    """Every study; `overdue` marks one waiting past `transmit.ttl_h`. Nothing is ever
    deleted for being old and undelivered: it keeps trying, and health asks for a look."""
    rows = []
    for study in studies:
        if study.kind != "study":
            continue
        row = study_view(store, study, block(study, now))
        row["overdue"] = row["state"] != "complete" and now - study.first_at > ttl_h * 3600
        rows.append(row)
    return rows


def link_view(link: Link | None, modem: ModemState | None) -> View:
    """The link to the current site's first destination, and the modem."""
    return {
        "class": link.link_class if link else OFFLINE,
        "interface": link.interface if link else None,
        "ssid": link.ssid if link else None, "vpn": bool(link and link.vpn),
        "metered": bool(link and link.metered),
        "rate_kbps": link.expected_kbps if link else None,
        "modem": None if modem is None else {
            "signal_percent": modem.signal_percent, "technology": modem.technology,
            "registration": modem.registration, "operator": modem.operator},
    }


def held_view(rows: list[View], config: Config, now: float) -> View:
    """Held studies by reason, and when a window-held study may next move."""
    reasons: dict[str, int] = {}
    for row in rows:
        if row["state"] == "held":
            reasons[row["held_reason"]] = reasons.get(row["held_reason"], 0) + 1
    next_at = None
    if POLICY_WINDOW in reasons:
        starts = [next_window_start(s.policy.windows, datetime.fromtimestamp(now))
                  for s in config.sites if s.policy.windows]
        found = [s for s in starts if s is not None]
        next_at = min(found).isoformat() if found else None
    return {"reasons": reasons, "next_window": next_at}


@dataclass(frozen=True)
class Parts:
    """What the status view reads from the running box, each part as it is now."""

    site: View  # the current site decision, as JSON
    detect: View
    link: View
    errors: list[str]  # from the workers, the receiver, commitment, listening, ...
    receiver_running: bool
    receiving: View
    listening: View
    listen_problems: int  # interfaces waited for, addresses that cannot be listened on
    destinations: list[View]
    signals: View
    worklist: View
    commitment: View
    versions: View


def status_view(store: Store, config: Config, rows: list[View], parts: Parts,
                now: float) -> View:
    """`fluxbox status --json`: health and everything it is decided from."""
    waiting = [r for r in rows if r["state"] != "complete"]
    pending = sum(d["pending"] for r in rows for d in r["destinations"])
    free = store.free_bytes()
    errors = list(parts.errors)
    if free < store.reserve_bytes:
        errors.append("disk below reserve: new studies are refused")
    facts = HealthFacts(
        disk_below_reserve=free < store.reserve_bytes,
        receiver_running=parts.receiver_running,
        failed_studies=sum(r["state"] == "failed" for r in rows),
        held_studies=sum(r["state"] == "held" for r in rows),
        pending_instances=pending,
        overdue_studies=sum(r["overdue"] for r in rows),
        listen_waiting=parts.listen_problems,
    )
    if facts.overdue_studies:
        errors.append(f"{facts.overdue_studies} studies waiting longer than "
                      f"{config.transmit.ttl_h:g} h")
    return {
        "site": parts.site,
        "detect": parts.detect,
        "link": parts.link,
        "queue": {"studies": len(waiting), "instances": pending,
                  "bytes": sum(r["bytes"] for r in waiting)},
        "disk": {"free_bytes": free, "reserve_bytes": store.reserve_bytes},
        "health": health_state(facts),
        "errors": errors,
        "held": held_view(rows, config, now),
        "receiving": parts.receiving,
        "listening": parts.listening,
        "destinations": parts.destinations,
        "signals": parts.signals,
        "cellular_bytes": dict(zip(("today", "month"), store.traffic(CELLULAR, now),
                                   strict=True)),
        "worklist": parts.worklist,
        "commitment": parts.commitment,
        "sent_bytes_month": {c: store.traffic(c, now)[1] for c in LINK_CLASSES},
        "delivery_latency_s": median_latency(rows),
        "version": parts.versions,
    }
