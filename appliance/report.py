"""What `status` and `studies` show: JSON views and their text rendering.

Views carry no patient values: studies are named by UID (an identifier, not a
patient value), site, counts and reasons.
"""

from __future__ import annotations

import time
from typing import Any

from appliance.store import Store, StudyRecord
from appliance.studies import destination_state, study_state


def mpps_failures(store: Store) -> list[str]:
    """MPPS messages the RIS refused for good, one line per destination and reason (for
    `status` errors: a message that failed does not hold back the ones after it)."""
    lines: dict[str, None] = {}
    for step in store.studies():
        if step.kind != "mpps":
            continue
        for dest_id in step.destinations:
            for reason in store.counts(step, dest_id).reasons:
                lines[f"MPPS to {dest_id} failed: {reason}"] = None
    return list(lines)


def study_view(store: Store, study: StudyRecord, block: str | None) -> dict[str, Any]:
    destinations = []
    counts = {}
    for dest_id in study.destinations:
        c = store.counts(study, dest_id)
        counts[dest_id] = c
        destinations.append({
            "name": dest_id.split("/", 1)[-1], "delivered": c.delivered, "pending": c.pending,
            "failed": c.failed, "state": None, "reasons": list(c.reasons),
            "awaiting_commitment": c.awaiting_commitment,
        })
    state = study_state(study, counts, block if study.phase == "closed" else None)
    for entry, c in zip(destinations, counts.values(), strict=True):
        entry["state"] = destination_state(c, study.instances)
    held = study.held_reason or (block if state == "held" else None)
    return {
        "study_uid": study.study_uid, "site": study.site, "state": state,
        "instances": study.instances, "bytes": study.size_bytes, "held_reason": held,
        "destinations": destinations, "findings": list(study.findings),
        "corrections": study.corrections, "received_at": study.first_at,
        "completed_at": study.completed_at,
    }


def render_studies(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no studies"
    lines = [f"{'STATE':<10} {'SITE':<12} {'INST':>5} {'SIZE':>9}  {'DELIVERY':<28} STUDY"]
    for row in rows:
        delivery = ", ".join(
            f"{d['name']} {d['delivered']}/{row['instances']}" + (f" {d['failed']} failed"
                                                                   if d["failed"] else "")
            for d in row["destinations"]) or (row["held_reason"] or "-")
        lines.append(f"{row['state']:<10} {str(row['site'] or '?'):<12} {row['instances']:>5} "
                     f"{human_size(row['bytes']):>9}  {delivery:<28} {row['study_uid']}")
        for finding in row["findings"]:
            lines.append(f"{'':<10} finding: {finding}")
        for d in row["destinations"]:
            for reason in d["reasons"]:
                lines.append(f"{'':<10} {d['name']}: {reason}")
    return "\n".join(lines)


def render_status(status: dict[str, Any]) -> str:
    site = status["site"]
    link = status["link"]
    queue = status["queue"]
    lines = [
        f"health:  {status['health']}",
        f"site:    {site['id'] or 'unknown'} ({site['source'] or 'no evidence'})",
        f"link:    {link['class']}",
        f"queue:   {queue['studies']} studies, {queue['instances']} instances, "
        f"{human_size(queue['bytes'])}",
        f"disk:    {human_size(status['disk']['free_bytes'])} free",
    ]
    for dest in status.get("destinations", []):
        last = dest["last_success_at"]
        ago = f"{int(time.time() - last)} s ago" if last else "never"
        lines.append(f"dest:    {dest['id']} last delivery {ago}"
                     + (f", {dest['last_error']}" if dest["last_error"] else ""))
    for error in status["errors"]:
        lines.append(f"error:   {error}")
    version = status.get("version") or {}
    if version:
        lines.append(f"version: {version.get('appliance')}"
                     + (f" (firmware {version['firmware']})" if version.get("firmware") else ""))
    return "\n".join(lines)


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
