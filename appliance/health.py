"""The health state, worked out from facts the box already has (no I/O).

Order of precedence: fault (the box cannot take new studies) > attention (a
person must look: failed deliveries, or studies waiting past their time-to-live)
> holding (studies wait for site or policy) > sending > ok.
"""

from __future__ import annotations

from dataclasses import dataclass

OK, SENDING, HOLDING, ATTENTION, FAULT = "ok", "sending", "holding", "attention", "fault"


@dataclass(frozen=True)
class HealthFacts:
    disk_below_reserve: bool
    receiver_running: bool
    failed_studies: int
    held_studies: int
    pending_instances: int
    overdue_studies: int = 0  # waiting longer than transmit.ttl_h


def health_state(facts: HealthFacts) -> str:
    if facts.disk_below_reserve or not facts.receiver_running:
        return FAULT
    if facts.failed_studies or facts.overdue_studies:
        return ATTENTION
    if facts.held_studies:
        return HOLDING
    if facts.pending_instances:
        return SENDING
    return OK
