"""NetworkManager and ModemManager stand-ins on a private D-Bus (python-dbusmock).

This file has two roles.

1. A dbusmock *template* (`python -m dbusmock --system --template tests/dbusmock_nm.py`):
   the stock `networkmanager` template made readable by python-networkmanager. Its
   `load()` runs in the mock's process only and (a) names every method argument in
   Introspect() (python-networkmanager builds its API from introspection and fails on
   unnamed args), (b) declares the signals real NetworkManager declares, (c) makes
   DeactivateConnection() disconnect only the connection's own devices.
2. Helpers for the test process: `spawn_nm()` / `spawn_mm()` start a mock on the private
   system bus ($DBUS_SYSTEM_BUS_ADDRESS) and yield a scene driver (`NMScene`, `MMScene`).

Only documentation and carrier-grade-NAT addresses appear; no traffic is ever sent.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import dbus
import dbus.bus
import dbus.service
import dbusmock
from dbusmock import SpawnedMock, mockobject
from dbusmock.templates import networkmanager as stock
from dbusmock.templates.networkmanager import *  # noqa: F403  (template: constants, mock methods)

TEMPLATE = str(Path(__file__).resolve())
MOCK = "org.freedesktop.DBus.Mock"
NM = "org.freedesktop.NetworkManager"
NM_PATH = "/org/freedesktop/NetworkManager"
DEVICE = "org.freedesktop.NetworkManager.Device"
ACTIVE = "org.freedesktop.NetworkManager.Connection.Active"
SETTINGS_CONNECTION = "org.freedesktop.NetworkManager.Settings.Connection"
MM = "org.freedesktop.ModemManager1"
MM_MODEM = "org.freedesktop.ModemManager1.Modem"
MM_3GPP = "org.freedesktop.ModemManager1.Modem.Modem3gpp"
DEADLINE_S = 10.0

# ============================================================================ template (mock side)

# Real NetworkManager's argument names for the methods the stock template implements.
_ARG_NAMES = {
    "ActivateConnection": (["connection", "device", "specific_object"], ["active_connection"]),
    "AddAndActivateConnection": (["connection", "device", "specific_object"],
                                 ["path", "active_connection"]),
    "DeactivateConnection": (["active_connection"], []),
    "GetDevices": ([], ["devices"]), "GetAllDevices": ([], ["devices"]),
    "GetDeviceByIpIface": (["iface"], ["device"]), "Enable": (["enable"], []),
    "CheckConnectivity": ([], ["connectivity"]), "state": ([], ["state"]),
    "GetPermissions": ([], ["permissions"]), "ListConnections": ([], ["connections"]),
    "GetConnectionByUuid": (["uuid"], ["connection"]), "AddConnection": (["connection"], ["path"]),
    "AddConnectionUnsaved": (["connection"], ["path"]), "SaveHostname": (["hostname"], []),
    "Update": (["properties"], []), "GetSettings": ([], ["settings"]),
    "GetSecrets": (["setting_name"], ["secrets"]), "GetAccessPoints": ([], ["access_points"]),
    "GetAllAccessPoints": ([], ["access_points"]), "RequestScan": (["options"], []),
}
# Signals real NetworkManager declares; without them python-networkmanager makes no On<Signal>().
_SIGNALS = {
    NM: [("StateChanged", [("state", "u")]), ("PropertiesChanged", [("properties", "a{sv}")]),
         ("DeviceAdded", [("device_path", "o")]), ("DeviceRemoved", [("device_path", "o")])],
    DEVICE: [("StateChanged", [("new_state", "u"), ("old_state", "u"), ("reason", "u")])],
    "org.freedesktop.NetworkManager.Device.Wireless": [
        ("AccessPointAdded", [("access_point", "o")]),
        ("AccessPointRemoved", [("access_point", "o")])],
    "org.freedesktop.NetworkManager.Settings": [("NewConnection", [("connection", "o")]),
                                                ("ConnectionRemoved", [("connection", "o")])],
}


def _named_xml(xml: str) -> str:
    """Introspection XML with every argument named and NetworkManager's signals declared."""
    tree = ElementTree.fromstring(xml)
    for method in tree.iter("method"):
        ins, outs = _ARG_NAMES.get(method.get("name"), ([], []))
        counts = {"in": 0, "out": 0}
        for arg in method.findall("arg"):
            direction = arg.get("direction", "in")
            names, n = (ins if direction == "in" else outs), counts[direction]
            if "name" not in arg.attrib:
                arg.set("name", names[n] if n < len(names) else f"{direction}{n}")
            counts[direction] += 1
    for iface in tree.iter("interface"):
        for name, args in _SIGNALS.get(iface.get("name"), []):
            if iface.find(f"signal[@name='{name}']") is None:
                signal = ElementTree.SubElement(iface, "signal", {"name": name})
                for arg_name, sig in args:
                    ElementTree.SubElement(signal, "arg", {"name": arg_name, "type": sig})
    return ElementTree.tostring(tree, encoding="unicode")


def _patch_introspection() -> None:
    original = mockobject.DBusMockObject.Introspect
    if getattr(original, "_fluxbox_named", False):
        return

    @dbus.service.method(dbus.INTROSPECTABLE_IFACE, in_signature="", out_signature="s",
                         path_keyword="object_path", connection_keyword="connection")
    def introspect(self: Any, object_path: str, connection: Any) -> str:
        return _named_xml(original(self, object_path, connection))

    introspect._fluxbox_named = True
    mockobject.DBusMockObject.Introspect = introspect


def _deactivate_connection(self: Any, active_conn_path: str) -> None:
    """Upstream disconnects every device; real NetworkManager only the connection's own."""
    active = dbusmock.get_object(active_conn_path)
    for dev_path in active.Get(stock.ACTIVE_CONNECTION_IFACE, "Devices"):
        stock.RemoveActiveConnection(self, dev_path, active_conn_path)


def load(mock: Any, parameters: dict) -> None:
    """Template entry point, in the mock's process: fix the stock template, then load it."""
    _patch_introspection()
    stock.deactivate_connection = _deactivate_connection
    stock.load(mock, parameters)


# ============================================================================ helpers (test side)


def _u32_address(address: str) -> dbus.UInt32:
    """NetworkManager's legacy IPv4 encoding: the address in network byte order as a u32."""
    return dbus.UInt32(struct.unpack("I", socket.inet_aton(address))[0])


def ipv4_setting() -> dict:
    """A connection's ipv4 section with the keys python-networkmanager's GetSettings() needs."""
    return {"method": "auto", "addresses": dbus.Array([], signature="au"),
            "routes": dbus.Array([], signature="au"), "dns": dbus.Array([], signature="u")}


def ipv6_setting() -> dict:
    return {"method": "ignore", "addresses": dbus.Array([], signature="(ayuay)"),
            "routes": dbus.Array([], signature="(ayuayu)"), "dns": dbus.Array([], signature="ay")}


class NMScene:
    """Drives the NetworkManager mock: a scene of a parked vehicle, and what a drive changes.

    The built scene: `eth0` activated (198.51.100.10/24 via .1) and primary; `wlan0`
    activated on SSID HOSPITAL-A-GUEST (203.0.113.57/24 via .1); a gsm modem
    (`cdc-wdm0`, IP interface `wwan0`, metered) with an idle "LTE" connection.
    """

    SSID = "HOSPITAL-A-GUEST"

    def __init__(self, bus: dbus.bus.BusConnection):
        self.bus = bus
        self.manager = dbus.Interface(self._obj(NM_PATH), NM)
        self.settings = dbus.Interface(self._obj(f"{NM_PATH}/Settings"), f"{NM}.Settings")
        self._ip4_count = 0
        self.eth = self.wlan = self.modem = ""
        self.eth_ac = self.wifi_ac = self.gsm_conn = ""

    # ------------------------------------------------------------------ plumbing

    def _obj(self, path: str) -> Any:
        return self.bus.get_object(NM, path)

    def mock(self, path: str = NM_PATH) -> Any:
        return dbus.Interface(self._obj(path), MOCK)

    def set_property(self, path: str, iface: str, name: str, value: Any) -> None:
        self.mock().SetProperty(path, iface, name, value)

    def ip4_config(self, address: str, prefix: int, gateway: str) -> dbus.ObjectPath:
        self._ip4_count += 1
        path = f"{NM_PATH}/IP4Config/{self._ip4_count}"
        self.mock().AddObject(path, f"{NM}.IP4Config", {
            "Addresses": dbus.Array([dbus.Array([_u32_address(address), dbus.UInt32(prefix),
                                                 _u32_address(gateway)], signature="u")],
                                    signature="au"),
            "AddressData": dbus.Array([{"address": address, "prefix": dbus.UInt32(prefix)}],
                                      signature="a{sv}"),
            "Gateway": gateway,
            "Nameservers": dbus.Array([], signature="u"),
            "Domains": dbus.Array([], signature="s"),
        }, [])
        return dbus.ObjectPath(path)

    def device_extras(self, dev: str, metered: int, ip4: str = "/") -> None:
        """Properties real NetworkManager has and the template lacks (1 yes, 4 guess-no)."""
        self.mock(dev).AddProperties(DEVICE, {"Ip4Config": dbus.ObjectPath(ip4),
                                              "Metered": dbus.UInt32(metered),
                                              "Ip4Connectivity": dbus.UInt32(4)})

    def activate(self, conn: str, dev: str, ip4: str, specific: str = "/") -> str:
        """Activate `conn` on `dev` and give both the IPv4 config `ip4`."""
        ac = str(self.manager.ActivateConnection(conn, dev, specific))
        self.mock(ac).AddProperty(ACTIVE, "Ip4Config", dbus.ObjectPath(ip4))
        self.set_property(dev, DEVICE, "Ip4Config", dbus.ObjectPath(ip4))
        return ac

    def add_connection(self, conn_id: str, conn_type: str, uuid: str, extra: dict) -> str:
        return str(self.settings.AddConnection({
            "connection": {"id": conn_id, "type": conn_type, "uuid": uuid},
            "ipv4": ipv4_setting(), "ipv6": ipv6_setting(), **extra}))

    def add_device(self, name: str, iface: str, ip_iface: str, device_type: int,
                   specific_iface: str, specific: dict, metered: int) -> str:
        """A device of any type (the template has helpers only for ethernet and Wi-Fi)."""
        path = f"{NM_PATH}/Devices/{name}"
        self.mock().AddObject(path, specific_iface, specific, [])
        self.mock(path).AddProperties(DEVICE, {
            "DeviceType": dbus.UInt32(device_type), "State": dbus.UInt32(30),
            "StateReason": (dbus.UInt32(0), dbus.UInt32(0)), "Interface": iface,
            "IpInterface": ip_iface, "ActiveConnection": dbus.ObjectPath("/"),
            "AvailableConnections": dbus.Array([], signature="o"), "Managed": True,
            "AutoConnect": True, "Driver": "dbusmock", "Ip4Config": dbus.ObjectPath("/"),
            "Metered": dbus.UInt32(metered), "Ip4Connectivity": dbus.UInt32(1)})
        devices = [*self.manager.GetDevices(), dbus.ObjectPath(path)]
        self.set_property(NM_PATH, NM, "Devices", dbus.Array(devices, signature="o"))
        return path

    # ------------------------------------------------------------------ the scene

    def build(self) -> NMScene:
        self.eth = str(self.mock().AddEthernetDevice("eth0", "eth0", 30))
        self.device_extras(self.eth, 4)
        eth_conn = self.add_connection("Wired 1", "802-3-ethernet",
                                       "11111111-1111-1111-1111-111111111111",
                                       {"802-3-ethernet": {"mtu": dbus.UInt32(0)}})
        self.eth_ac = self.activate(eth_conn, self.eth,
                                    self.ip4_config("198.51.100.10", 24, "198.51.100.1"))

        self.wlan = str(self.mock().AddWiFiDevice("wlan0", "wlan0", 30))
        self.device_extras(self.wlan, 4)
        ap = self.mock().AddAccessPoint(self.wlan, "ap0", self.SSID, "AA:BB:CC:00:11:22",
                                        2, 2437, 54000, 82, 0x100)
        self.mock().AddAccessPoint(self.wlan, "ap1", "OTHER-NET", "AA:BB:CC:00:11:33",
                                   2, 5180, 300000, 40, 0x100)
        wifi_conn = self.mock().AddWiFiConnection(self.wlan, "wifi0", self.SSID, "wpa-psk")
        dbus.Interface(self._obj(wifi_conn), SETTINGS_CONNECTION).Update(
            {"connection": {}, "ipv4": ipv4_setting(), "ipv6": ipv6_setting()})
        self.wifi_ac = self.activate(wifi_conn, self.wlan,
                                     self.ip4_config("203.0.113.57", 24, "203.0.113.1"), ap)

        self.modem = self.add_device(
            "ttyUSB2", "cdc-wdm0", "wwan0", 8, f"{DEVICE}.Modem",
            {"ModemCapabilities": dbus.UInt32(0xC), "CurrentCapabilities": dbus.UInt32(0x8),
             "DeviceId": "357000000000000", "OperatorCode": "26201", "Apn": "internet.example"},
            metered=1)
        self.gsm_conn = self.add_connection("LTE", "gsm", "33333333-3333-3333-3333-333333333333",
                                            {"gsm": {"apn": "internet.example"}})
        self.mock().AddProperties(NM, {
            "PrimaryConnection": dbus.ObjectPath(self.eth_ac),
            "PrimaryConnectionType": "802-3-ethernet", "Metered": dbus.UInt32(4),
            "ActivatingConnection": dbus.ObjectPath("/")})
        return self

    def set_primary(self, ac: str, conn_type: str) -> None:
        self.set_property(NM_PATH, NM, "PrimaryConnection", dbus.ObjectPath(ac))
        self.set_property(NM_PATH, NM, "PrimaryConnectionType", conn_type)

    def drive_away(self) -> str:
        """Leave the hospital: Wi-Fi drops, the cable is pulled, the modem comes up as primary."""
        self.manager.DeactivateConnection(self.wifi_ac)
        self.mock().RemoveActiveConnection(self.eth, self.eth_ac)
        gsm_ac = self.activate(self.gsm_conn, self.modem,
                               self.ip4_config("100.64.12.34", 32, "100.64.12.1"))
        self.set_primary(gsm_ac, "gsm")
        return gsm_ac

    def set_metered(self, dev: str, metered: int) -> None:
        self.set_property(dev, DEVICE, "Metered", dbus.UInt32(metered))

    def add_wireguard(self) -> str:
        """A WireGuard tunnel `wg0` (device type 29), activated."""
        dev = self.add_device("wg0", "wg0", "wg0", 29, f"{DEVICE}.WireGuard",
                              {"ListenPort": dbus.UInt16(51820), "FwMark": dbus.UInt32(0)},
                              metered=4)
        conn = self.add_connection("site-vpn", "wireguard", "44444444-4444-4444-4444-444444444444",
                                   {"wireguard": {"listen-port": dbus.UInt32(51820)}})
        return self.activate(conn, dev, self.ip4_config("100.96.0.2", 24, "0.0.0.0"))

    def add_plugin_vpn(self) -> str:
        """An OpenVPN-style plugin VPN riding on eth0 (its tunnel interface is not named)."""
        conn = self.add_connection("hospital-vpn", "vpn", "55555555-5555-5555-5555-555555555555",
                                   {"vpn": {"service-type": f"{NM}.openvpn"}})
        ac = str(self.mock().AddActiveConnection([self.eth], conn, "/", "vpn0", dbus.UInt32(2)))
        self.mock(ac).AddProperty(ACTIVE, "Ip4Config",
                                  self.ip4_config("100.97.0.2", 24, "0.0.0.0"))
        self.mock().SetDeviceActive(self.eth, self.eth_ac)  # the VPN does not take over eth0
        return ac

    def add_loopback(self) -> str:
        """`lo` as NetworkManager 1.42 shows it: device type 32, which python-networkmanager
        2.2 does not know."""
        dev = self.add_device("lo", "lo", "lo", 32, f"{DEVICE}.Loopback", {}, metered=4)
        conn = self.add_connection("lo", "loopback", "66666666-6666-6666-6666-666666666666", {})
        return self.activate(conn, dev, self.ip4_config("127.0.0.1", 8, "0.0.0.0"))


class MMScene:
    """Drives the ModemManager mock (stock `modemmanager` template)."""

    def __init__(self, bus: dbus.bus.BusConnection):
        self.bus = bus
        self.root = dbus.Interface(bus.get_object(MM, "/org/freedesktop/ModemManager1"), MOCK)
        self.modem_path = ""

    def add_modem(self) -> str:
        """The template's modem (LTE, signal 70, "TheOperator"), registered at home."""
        self.modem_path = str(self.root.AddSimpleModem()[0])
        self._mock().AddProperty(MM_3GPP, "RegistrationState", dbus.UInt32(1))
        return self.modem_path

    def _mock(self) -> Any:
        return dbus.Interface(self.bus.get_object(MM, self.modem_path), MOCK)

    def update(self, iface: str, props: dict) -> None:
        self._mock().UpdateProperties(iface, props)

    def set_signal(self, percent: int) -> None:
        self.update(MM_MODEM, {"SignalQuality": dbus.Struct((dbus.UInt32(percent), True),
                                                            signature="ub")})

    def set_technology(self, bits: int) -> None:
        self.update(MM_MODEM, {"AccessTechnologies": dbus.UInt32(bits)})

    def set_registration(self, state: int) -> None:
        self.update(MM_3GPP, {"RegistrationState": dbus.UInt32(state)})

    def set_operator(self, name: str) -> None:
        self.update(MM_3GPP, {"OperatorName": name})


# ------------------------------------------------------------------ spawning


def bus_address() -> str:
    address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")
    assert address.startswith("unix:path="), "start a private system bus first"
    return address


def wait_name_released(bus: dbus.bus.BusConnection, name: str,
                       deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while bus.name_has_owner(name):
        assert time.monotonic() < deadline, f"{name} still owned after {deadline_s} s"
        time.sleep(0.02)


@contextmanager
def _spawned(template: str, name: str,
             stderr_path: Path | None) -> Iterator[dbus.bus.BusConnection]:
    bus = dbus.bus.BusConnection(bus_address())
    err = open(stderr_path or os.devnull, "ab")  # noqa: SIM115  (closed below)
    try:
        with SpawnedMock.spawn_with_template(template, {}, dbusmock.BusType.SYSTEM,
                                             stdout=subprocess.DEVNULL, stderr=err) as server:
            try:
                yield bus
            finally:
                server.terminate()
                server.process.wait(DEADLINE_S)
        wait_name_released(bus, name)
    finally:
        err.close()
        bus.close()


@contextmanager
def spawn_nm(stderr_path: Path | None = None) -> Iterator[NMScene]:
    """NetworkManager's API on the private system bus, with the built scene."""
    with _spawned(TEMPLATE, NM, stderr_path) as bus:
        yield NMScene(bus).build()


@contextmanager
def spawn_mm(stderr_path: Path | None = None) -> Iterator[MMScene]:
    """ModemManager's API on the private system bus, with no modem yet."""
    with _spawned("modemmanager", MM, stderr_path) as bus:
        yield MMScene(bus)
