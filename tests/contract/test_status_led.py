"""The status LED: every health state shows its own pattern through the LED class files."""

from pathlib import Path

import pytest

from appliance.health import LED_PATTERNS
from hw.led import NoLed, SysfsLed


def _fake_led(root: Path, name: str = "status") -> Path:
    """A directory shaped like /sys/class/leds/NAME (this kernel has no LED class)."""
    led = root / name
    led.mkdir(parents=True)
    for file, value in (("brightness", "0"), ("max_brightness", "255"),
                        ("trigger", "[none] timer heartbeat"),
                        ("delay_on", "0"), ("delay_off", "0")):
        (led / file).write_text(value)
    return led


@pytest.mark.parametrize("state", sorted(LED_PATTERNS))
def test_each_health_state_has_a_distinct_pattern_on_the_led(tmp_path, state):
    _fake_led(tmp_path)
    led = SysfsLed("status", root=tmp_path)
    led.show(LED_PATTERNS[state])
    pattern = LED_PATTERNS[state]
    shown = led.state()
    assert shown["trigger"] == pattern.trigger
    if pattern.trigger == "timer":
        assert (shown["delay_on"], shown["delay_off"]) == (str(pattern.delay_on_ms),
                                                           str(pattern.delay_off_ms))
    if pattern.trigger == "none":
        assert shown["brightness"] == ("255" if pattern.on else "0")


def test_patterns_are_told_apart():
    seen = {(p.trigger, p.on, p.delay_on_ms, p.delay_off_ms) for p in LED_PATTERNS.values()}
    assert len(seen) == len(LED_PATTERNS)


def test_a_missing_led_is_not_a_fault(tmp_path):
    SysfsLed("absent", root=tmp_path).show(LED_PATTERNS["ok"])
    NoLed().show(LED_PATTERNS["fault"])
