"""The box in-process with stand-in hardware (the hw fakes): link policy and site adoption."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from appliance.app import Box, Hardware
from appliance.config import parse_config
from appliance.signals import Link
from hw.gps import FixedPosition
from hw.modem import StaticModem
from hw.network import StaticLinks
from tests.gpsfake import HOSPITAL_A
from tests.peers import CountingSCP, free_port, storescu
from tests.support.waiting import wait_for


@pytest.fixture
def running() -> Iterator:
    boxes: list[Box] = []

    def start(config_text: str, hardware: Hardware) -> Box:
        box = Box(parse_config(config_text), hardware)
        box.start()
        boxes.append(box)
        return box

    yield start
    for box in boxes:
        box.stop()


def _config(tmp_path: Path, pacs_port: int, detect: str, policy: str = "") -> str:
    return f"""
[box]
port = {free_port()}
data_dir = "{tmp_path / 'data'}"
reserve_mb = 1
[detect]
{detect}
[transmit]
study_quiet_s = 0.5
retry_initial_s = 0.2
retry_max_s = 0.5
[[site]]
id = "a"
geofence = {{ lat = {HOSPITAL_A[0]}, lon = {HOSPITAL_A[1]}, radius_m = 400 }}
[site.policy]
{policy}
[[site.destination]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs_port}
"""




def _one_study(box: Box) -> dict:
    rows = box.studies_view()
    return rows[0] if len(rows) == 1 else {}


def test_cellular_waits_for_wifi_and_the_modem_shows_in_status(running, tmp_path, ct_study):
    radio = Link("radio0", "cellular", ("10.64.0.2/24",))
    links = StaticLinks([radio], routes={"127.0.0.1/32": "radio0"})
    modem = StaticModem()
    modem.update(signal_percent=71, technology="lte", registration="home", operator="Carrier")
    with CountingSCP(ae_title="PACS") as scp:
        config = _config(tmp_path, scp.port, 'mode = "fixed"\nfixed_site = "a"',
                         'links = ["wired", "wifi"]')
        box = running(config, Hardware(FixedPosition(), links, modem))
        storescu("127.0.0.1", box.config.box.port, ct_study, called_aet="FLUXBOX")
        row = wait_for(lambda: _one_study(box).get("state") == "held" and _one_study(box),
                    20, "held for the link policy")
        assert row["held_reason"] == "policy:link"
        status = box.status_view()
        assert status["link"]["class"] == "cellular"
        assert status["link"]["modem"]["technology"] == "lte"
        assert status["health"] == "holding"
        assert scp.uids() == set()

        links.set(Link("radio0", "wifi", ("10.64.0.2/24",), ssid="DEPOT"))
        box.supervisor.poke("test: docked")
        wait_for(lambda: _one_study(box).get("state") == "complete", 30, "delivery over Wi-Fi")
        assert len(scp.uids()) == len(ct_study)


def test_held_study_adopts_the_site_confirmed_soon_after_at_the_same_place(
        running, tmp_path, ct_study):
    parked_at_a = FixedPosition.at(*HOSPITAL_A)
    with CountingSCP(ae_title="PACS") as scp:
        detect = ('mode = "auto"\nhold_s = 3\nadopt_within_s = 600\nnode_interval_s = 3600')
        box = running(_config(tmp_path, scp.port, detect),
                      Hardware(parked_at_a, StaticLinks(), StaticModem()))
        assert box.current_site().id is None, "the new site must first hold"
        storescu("127.0.0.1", box.config.box.port, ct_study, called_aet="FLUXBOX")
        wait_for(lambda: _one_study(box).get("held_reason") == "site-unknown", 20, "held")
        wait_for(lambda: _one_study(box).get("state") == "complete", 30, "adopted and delivered")
        row = _one_study(box)
        assert row["site"] == "a"
        assert scp.uids() == {pydicom.dcmread(p).SOPInstanceUID for p in ct_study}


def test_without_adoption_a_held_study_waits_for_a_person(running, tmp_path, ct_study):
    with CountingSCP(ae_title="PACS") as scp:
        detect = 'mode = "auto"\nhold_s = 2\nnode_interval_s = 3600'
        box = running(_config(tmp_path, scp.port, detect),
                      Hardware(FixedPosition.at(*HOSPITAL_A), StaticLinks(), StaticModem()))
        storescu("127.0.0.1", box.config.box.port, ct_study, called_aet="FLUXBOX")
        wait_for(lambda: box.current_site().id == "a", 20, "site a confirmed")
        for worker, _ in box.workers.values():  # a delivery round of every worker, now
            worker.deliver_once()
        assert _one_study(box)["held_reason"] == "site-unknown"
        assert scp.uids() == set()
