"""The status LED driven from outside the appliance (`fluxbox led`).

On the firmware image the appliance runs as an unprivileged, sandboxed user, and the
kernel's LED files belong to root (the timer trigger even makes new ones). So there the
appliance leaves the LED alone (FLUXBOX_STATUS_LED=external) and fluxbox-led.service runs
this as root: it asks the appliance for its health over the control socket and shows the
matching pattern. While the appliance does not answer (starting, restarting) the LED shows
`booting`; when it has not answered for NO_ANSWER_FAULT_S, `fault`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from appliance.control import ControlError
from appliance.health import BOOTING, FAULT, LED_PATTERNS, StatusLed

NO_ANSWER_FAULT_S = 120.0
STEP_S = 1.0


class LedFollower:
    """Shows on `led` the health `ask_health` returns; one `step` per reading."""

    def __init__(self, ask_health: Callable[[], str], led: StatusLed,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ask_health = ask_health
        self.led = led
        self.clock = clock
        self.last_answer_at = clock()

    def step(self) -> str:
        """Read the health once and show it; returns the state shown."""
        try:
            state = self.ask_health()
            self.last_answer_at = self.clock()
        except ControlError:
            silent_s = self.clock() - self.last_answer_at
            state = FAULT if silent_s > NO_ANSWER_FAULT_S else BOOTING
        if state not in LED_PATTERNS:
            state = FAULT
        self.led.show(LED_PATTERNS[state])
        return state

    def run(self, stop: threading.Event, every_s: float = STEP_S) -> None:
        self.step()
        while not stop.wait(every_s):
            self.step()
