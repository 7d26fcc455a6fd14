"""The LED follower, stepped by hand on a sysfs-shaped LED directory."""

from appliance.control import ControlError
from appliance.health import LED_PATTERNS
from appliance.led_follower import NO_ANSWER_FAULT_S, LedFollower
from hw.led import SysfsLed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_led(tmp_path):
    d = tmp_path / "leds" / "front"
    d.mkdir(parents=True)
    for name, value in (("trigger", "none"), ("brightness", "0"), ("max_brightness", "255")):
        (d / name).write_text(value)
    return SysfsLed("front", root=tmp_path / "leds")


def test_the_led_follows_the_appliance_and_shows_when_it_is_gone(tmp_path):
    led = make_led(tmp_path)
    answers: list = ["sending", "ok", ControlError("not running"), ControlError("not running")]
    clock = Clock()

    def ask():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    follower = LedFollower(ask, led, clock)
    assert follower.step() == "sending"
    assert led.state()["trigger"] == "timer"
    assert (led.state()["delay_on"], led.state()["delay_off"]) == ("500", "500")
    assert follower.step() == "ok"
    assert (led.state()["trigger"], led.state()["brightness"]) == ("none", "255")
    clock.now += 5
    assert follower.step() == "booting"  # restarting: not (yet) a fault
    assert led.state()["trigger"] == LED_PATTERNS["booting"].trigger
    clock.now += NO_ANSWER_FAULT_S + 1
    assert follower.step() == "fault"
    assert (led.state()["delay_on"], led.state()["delay_off"]) == ("50", "50")


def test_an_unknown_state_shows_fault(tmp_path):
    led = make_led(tmp_path)
    assert LedFollower(lambda: "???", led).step() == "fault"
