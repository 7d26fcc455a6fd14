"""The health state, worked out from facts the box already has (no I/O).

Order of precedence: fault (the box cannot take new studies) > attention (a
person must look: failed deliveries, or studies waiting past their time-to-live)
> holding (studies wait for site or policy) > sending > ok. A listen interface
without an address is for a person too (attention): the modality cannot reach the box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

OK, SENDING, HOLDING, ATTENTION, FAULT = "ok", "sending", "holding", "attention", "fault"
BOOTING = "booting"


@dataclass(frozen=True)
class LedPattern:
    """What the status LED does: a kernel LED trigger and, for `timer`, its rhythm."""

    trigger: str  # "none" (steady, at `on`), "timer" or "heartbeat"
    on: bool = True
    delay_on_ms: int = 0
    delay_off_ms: int = 0
    meaning: str = ""


# The front panel, as the README's table shows it to service staff.
LED_PATTERNS: dict[str, LedPattern] = {
    BOOTING: LedPattern("heartbeat", meaning="starting up"),
    OK: LedPattern("none", True, meaning="steady on: all delivered, nothing waiting"),
    SENDING: LedPattern("timer", True, 500, 500, "slow blink: studies on their way"),
    HOLDING: LedPattern("timer", True, 100, 1900, "short flash every 2 s: studies wait for "
                        "their site, a link, a window or a budget"),
    ATTENTION: LedPattern("timer", True, 250, 250, "quick blink: a person should look "
                          "(failed delivery, or a study waiting too long)"),
    FAULT: LedPattern("timer", True, 50, 50, "flicker: the box cannot take studies "
                      "(disk full, receiver down)"),
}


class StatusLed(Protocol):
    def show(self, pattern: LedPattern) -> None:
        """Make the LED follow `pattern`; never raises (a missing LED is not a fault)."""
        ...


@dataclass(frozen=True)
class HealthFacts:
    disk_below_reserve: bool
    receiver_running: bool
    failed_studies: int
    held_studies: int
    pending_instances: int
    overdue_studies: int = 0  # waiting longer than transmit.ttl_h
    listen_waiting: int = 0  # interfaces without an address yet, addresses that failed to bind


def health_state(facts: HealthFacts) -> str:
    if facts.disk_below_reserve or not facts.receiver_running:
        return FAULT
    if facts.failed_studies or facts.overdue_studies or facts.listen_waiting:
        return ATTENTION
    if facts.held_studies:
        return HOLDING
    if facts.pending_instances:
        return SENDING
    return OK
