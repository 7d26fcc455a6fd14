"""Where a service listens (issue 12, item 7): `appliance.listening`, with a fake
`InterfaceAddresses` and a fake bind."""

from __future__ import annotations

from appliance.health import ATTENTION, HealthFacts, health_state
from appliance.listening import EVERY_ADDRESS, Listening, resolve


class Addresses:
    def __init__(self, table: dict[str, tuple[str, ...]]) -> None:
        self.table = table

    def addresses(self, interface: str) -> tuple[str, ...]:
        return self.table.get(interface, ())


def test_nothing_configured_means_every_address():
    assert resolve((), Addresses({})).addresses == (EVERY_ADDRESS,)


def test_interfaces_resolve_to_their_addresses_and_a_missing_one_waits():
    source = Addresses({"lan0": ("192.168.50.1", "fd00::1")})
    resolved = resolve(("lan0", "10.0.0.1", "lan1", "192.168.50.1"), source)
    assert resolved.addresses == ("192.168.50.1", "fd00::1", "10.0.0.1")
    assert resolved.waiting == ("lan1",)


def test_a_lan_without_an_address_is_never_replaced_by_every_address():
    resolved = resolve(("lan0",), Addresses({}))
    assert resolved.addresses == () and resolved.waiting == ("lan0",)


def test_step_binds_when_the_address_comes_and_rebinds_only_on_change():
    source = Addresses({})
    binds = []

    def bind(addresses):
        binds.append(addresses)
        return addresses

    listening = Listening("dicom", ("lan0",), source, bind)
    listening.step()
    assert listening.view() == {"addresses": [], "waiting": ["lan0"]}
    source.table["lan0"] = ("192.168.50.1",)
    listening.step()
    listening.step()
    assert binds == [(), ("192.168.50.1",)]
    assert listening.view() == {"addresses": ["192.168.50.1"], "waiting": []}
    source.table["lan0"] = ("192.168.60.1",)  # DHCP gave another address
    listening.step()
    assert binds[-1] == ("192.168.60.1",)


def test_an_address_that_failed_to_bind_is_tried_again():
    attempts = []

    def bind(addresses):
        attempts.append(addresses)
        return () if len(attempts) == 1 else addresses

    listening = Listening("dicom", ("10.0.0.1",), Addresses({}), bind)
    listening.step()
    assert listening.problems() == ["dicom: cannot listen on 10.0.0.1"]
    listening.step()
    assert listening.problems() == []
    assert attempts == [("10.0.0.1",), ("10.0.0.1",)]
    assert listening.bound == ("10.0.0.1",)


def test_an_interface_waiting_for_an_address_asks_for_attention():
    facts = HealthFacts(disk_below_reserve=False, receiver_running=True, failed_studies=0,
                        held_studies=0, pending_instances=0, listen_waiting=1)
    assert health_state(facts) == ATTENTION
