"""ModemSource contract: the StaticModem fake and ModemManager (dbusmock) alike.

Each implementation's test class provides a `rig`: the source and a driver that makes
the stand-in's modem appear and change (signal, technology, registration, operator).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from appliance.signals import ModemState
from hw.modem import (
    MODEM,
    MODEM_3GPP,
    MODEM_CDMA,
    TECHNOLOGIES,
    ModemManagerModem,
    NoModem,
    StaticModem,
    registration,
    technology,
)

# MMModemAccessTechnology and MMModem3gppRegistrationState values the drivers use
TECH_BITS = {"gsm": 1 << 1, "edge": 1 << 4, "umts": 1 << 5, "hspa": 1 << 9, "lte": 1 << 14,
             "5g": 1 << 15}
REGISTRATION = {"home": 1, "searching": 2, "roaming": 5}


class StaticDriver:
    def __init__(self, source: StaticModem):
        self.source = source

    def appear(self) -> None:
        self.source.set(ModemState(70, "lte", "home", "TheOperator"))

    def signal(self, percent: int) -> None:
        self.source.update(signal_percent=percent)

    def technology(self, name: str) -> None:
        self.source.update(technology=name)

    def registration(self, name: str) -> None:
        self.source.update(registration=name)

    def operator(self, name: str) -> None:
        self.source.update(operator=name)


class MMDriver:
    def __init__(self, scene: Any):
        self.scene = scene

    def appear(self) -> None:
        self.scene.add_modem()

    def signal(self, percent: int) -> None:
        self.scene.set_signal(percent)

    def technology(self, name: str) -> None:
        self.scene.set_technology(TECH_BITS[name])

    def registration(self, name: str) -> None:
        self.scene.set_registration(REGISTRATION[name])

    def operator(self, name: str) -> None:
        self.scene.set_operator(name)


class ModemSourceContract:
    """What every ModemSource promises."""

    @pytest.fixture
    def rig(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def test_no_modem_is_none(self, rig):
        source, _ = rig
        assert source.modem() is None

    def test_a_modem_reports_its_state(self, rig, wait_for):
        source, driver = rig
        driver.appear()
        state = wait_for(source.modem, what="a modem")
        assert isinstance(state, ModemState)
        assert state.signal_percent == 70 and 0 <= state.signal_percent <= 100
        assert state.technology == "lte" and state.technology in TECHNOLOGIES
        assert state.registration == "home" and state.operator == "TheOperator"
        assert abs(state.observed_at - time.time()) < 5

    def test_signal_and_technology_changes_reach_the_state(self, rig, wait_for):
        source, driver = rig
        driver.appear()
        wait_for(source.modem, what="a modem")
        driver.signal(18)
        driver.technology("umts")
        wait_for(lambda: (s := source.modem()) and (s.signal_percent, s.technology) == (18, "umts"),
                 what="signal 18 on UMTS")
        driver.technology("5g")
        wait_for(lambda: source.modem().technology == "5g", what="5G")

    def test_registration_and_operator_changes_reach_the_state(self, rig, wait_for):
        source, driver = rig
        driver.appear()
        wait_for(source.modem, what="a modem")
        driver.registration("roaming")
        driver.operator("Abroad Telecom")
        wait_for(lambda: (s := source.modem()) and (s.registration, s.operator)
                 == ("roaming", "Abroad Telecom"), what="roaming abroad")

    def test_each_reading_is_fresh(self, rig, wait_for):
        source, driver = rig
        driver.appear()
        first = wait_for(source.modem, what="a modem")
        time.sleep(0.01)
        assert source.modem().observed_at > first.observed_at


class TestStaticModem(ModemSourceContract):
    @pytest.fixture
    def rig(self):
        source = StaticModem()
        return source, StaticDriver(source)

    def test_set_none_removes_the_modem(self):
        source = StaticModem(ModemState(50, "lte", "home", "X"))
        source.set(None)
        assert source.modem() is None


class TestModemManagerModem(ModemSourceContract):
    """ModemManager's API from python-dbusmock's `modemmanager` template."""

    @pytest.fixture
    def rig(self, mm):
        return ModemManagerModem(), MMDriver(mm)

    def test_modemmanager_absent_is_none(self, system_bus):
        source = ModemManagerModem()
        assert source.modem() is None and source.last_error is None

    def test_modemmanager_stopping_is_none(self, system_bus, tmp_path, wait_for):
        from tests.dbusmock_nm import spawn_mm

        source = ModemManagerModem()
        with spawn_mm(tmp_path / "mm.log") as scene:
            scene.add_modem()
            wait_for(source.modem, what="a modem")
        assert source.modem() is None


def test_no_modem():
    assert NoModem().modem() is None


@pytest.mark.parametrize("bits, expected", [
    (0, None), (1 << 14, "lte"), ((1 << 14) | (1 << 15), "5g"), (1 << 9, "hspa"),
    ((1 << 5) | (1 << 4), "umts"), (1 << 4, "edge"), (1 << 3, "gprs"), (1 << 2, "gsm"),
    (1 << 16, "lte"), (1 << 12, "evdo"), (1 << 10, "cdma"),
])
def test_technology_is_the_most_capable(bits, expected):
    assert technology(bits) == expected


@pytest.mark.parametrize("interfaces, expected", [
    ({MODEM_3GPP: {"RegistrationState": 5}, MODEM: {"State": 8}}, "roaming"),
    ({MODEM_3GPP: {"RegistrationState": 6}}, "home"),
    ({MODEM_CDMA: {"Cdma1xRegistrationState": 0, "EvdoRegistrationState": 3}}, "roaming"),
    ({MODEM: {"State": 7}}, "searching"),
    ({MODEM: {"State": 11}}, "registered"),
    ({MODEM: {"State": 2}}, "locked"),
    ({MODEM: {}}, None),
])
def test_registration_words(interfaces, expected):
    assert registration(interfaces) == expected
