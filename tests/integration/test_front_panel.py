"""The status LED follows health; the metrics endpoint answers a fleet monitor."""

from __future__ import annotations

import urllib.request

from appliance.app import Box, Hardware
from appliance.config import parse_config
from hw.gps import FixedPosition
from hw.led import SysfsLed
from hw.modem import NoModem
from hw.network import StaticLinks
from tests.contract.test_status_led import _fake_led
from tests.peers import free_port
from tests.support.waiting import wait_for


def test_led_shows_booting_then_ok_and_metrics_are_served(tmp_path):
    _fake_led(tmp_path / "leds")
    led = SysfsLed("status", root=tmp_path / "leds")
    metrics_port = free_port()
    config = parse_config(f"""
[box]
port = {free_port()}
data_dir = "{tmp_path / 'data'}"
reserve_mb = 1
metrics_listen = "127.0.0.1:{metrics_port}"
[detect]
mode = "fixed"
fixed_site = "a"
[[site]]
id = "a"
[[site.destination]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 9
""")
    box = Box(config, Hardware(FixedPosition(), StaticLinks(), NoModem(), led=led))
    try:
        box.start()
        assert led.state()["trigger"] in ("heartbeat", "none")
        wait_for(lambda: led.state() == {**led.state(), "trigger": "none", "brightness": "255"},
              10, "the LED steady on (ok)")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'fluxbox_health{state="ok"} 1.0' in text
        assert 'fluxbox_site{site="a",source="fixed"} 1.0' in text
        assert "fluxbox_queue_instances 0.0" in text
    finally:
        box.stop()
