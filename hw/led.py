"""The front-panel status LED through the kernel's LED class (/sys/class/leds/NAME).

Patterns use the kernel's own triggers (timer, heartbeat), so the LED keeps blinking
even while the appliance is busy or restarting. A missing LED or trigger is logged
once and otherwise ignored.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from appliance.health import LedPattern

log = logging.getLogger("fluxbox.hw.led")


class SysfsLed:
    """One LED under `root` (default /sys/class/leds); writes only what changed."""

    def __init__(self, name: str, root: Path = Path("/sys/class/leds")) -> None:
        self.path = Path(root) / name
        self._shown: LedPattern | None = None
        self._warned = False

    def show(self, pattern: LedPattern) -> None:
        if pattern == self._shown:
            return
        try:
            self._apply(pattern)
        except OSError as exc:
            if not self._warned:
                log.warning("status LED unavailable path=%s error=%s", self.path, exc.strerror)
                self._warned = True
            return
        self._shown = pattern

    def _apply(self, pattern: LedPattern) -> None:
        brightness = self._max_brightness() if pattern.on else 0
        if pattern.trigger == "none":
            self._write("trigger", "none")
            self._write("brightness", str(brightness))
            return
        self._write("trigger", pattern.trigger)
        if pattern.trigger == "timer":  # the timer trigger creates these files
            self._write("delay_on", str(pattern.delay_on_ms))
            self._write("delay_off", str(pattern.delay_off_ms))
        self._write("brightness", str(brightness))

    def _max_brightness(self) -> int:
        try:
            return int((self.path / "max_brightness").read_text().strip() or 1)
        except (OSError, ValueError):
            return 1

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)

    def state(self) -> dict[str, str]:
        """What the LED's files say now (for the console and tests)."""
        out = {}
        for name in ("trigger", "brightness", "delay_on", "delay_off"):
            with contextlib.suppress(OSError):
                out[name] = (self.path / name).read_text().strip()
        return out


class NoLed:
    """A box without a status LED."""

    def show(self, pattern: LedPattern) -> None:
        return None
