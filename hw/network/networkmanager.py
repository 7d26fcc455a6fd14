"""`NetworkManagerLinks`: NetworkManager read through python-networkmanager (active
connections, their devices, SSID, IPv4 addresses and gateway, metered, primary), with the
kernel's view for what it does not know or leaves unmanaged, and all of it when it does
not answer. Tunnels are links of their own with `vpn=True` (see the package docstring)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from types import ModuleType
from typing import Any

from appliance.signals import CELLULAR, WIFI, WIRED, Link, Links
from hw.network.classes import ClassMap
from hw.network.dbus import NM_BUS_NAME, import_networkmanager, nm_running
from hw.network.kernel import (
    KernelLinks,
    interface_with_address,
    neighbour_mac,
    route_interface,
)

log = logging.getLogger("fluxbox.hw.network")

TUNNEL_TYPES = {"vpn", "wireguard", "tun", "ip-tunnel"}
NM_ACTIVATED = 2  # NMActiveConnectionState
NM_UNMANAGED = 10  # NMDeviceState
NM_METERED = {1, 3}  # NMMetered: yes, guess-yes


class NetworkManagerLinks:
    """LinkSource from NetworkManager (python-networkmanager over the system bus).

    Reports each activated connection's device as a Link (tunnels as described in the
    module docstring), adds the kernel's view of interfaces NetworkManager does not
    manage, and answers with the kernel's view alone when NetworkManager does not
    answer. `kernel` is that view (default: KernelLinks(classes)); its `classes` apply
    to NetworkManager's interfaces too. `last_error` holds the latest failure, or None.
    """

    def __init__(self, classes: ClassMap | None = None, *, kernel: KernelLinks | None = None,
                 clock: Callable[[], float] = time.time):
        self.kernel = kernel or KernelLinks(classes, clock=clock)
        self.classes = self.kernel.classes
        self._clock = clock
        self._lock = threading.Lock()
        self._nm: ModuleType | None = None
        self.last_error: str | None = None

    def links(self) -> Links:
        now = self._clock()
        try:
            with self._lock:
                found = self._read()
        except Exception as exc:  # D-Bus or python-networkmanager failure: the kernel decides
            self._note_error(exc)
            return replace(self.kernel.links(), observed_at=now)
        self._note_error(None)
        return Links(tuple(found), now)

    def route_interface(self, address: str) -> str | None:
        return route_interface(address)

    def _note_error(self, exc: Exception | None) -> None:
        error = None if exc is None else f"{type(exc).__name__}: {exc}"
        if error != self.last_error:
            if error:
                log.warning("NetworkManager unreadable, using the kernel's view: %s", error)
            else:
                log.info("NetworkManager readable")
        self.last_error = error

    def _module(self) -> ModuleType:
        if self._nm is None:
            if not nm_running():
                raise ConnectionError("NetworkManager is not on the system bus")
            self._nm = import_networkmanager()
        return self._nm

    def _read(self) -> list[Link]:
        reader = _NMReader(self._module(), self.kernel)
        nm_links = reader.read()
        known = {link.interface for link in nm_links} | reader.managed_interfaces()
        up = self.kernel.up_interfaces()
        extra = [self.kernel.link(name, addrs) for name, addrs in up.items() if name not in known]
        if any(link.primary for link in nm_links):  # NetworkManager's primary wins
            extra = [replace(link, primary=False) for link in extra]
        return nm_links + extra


class _NMReader:
    """One reading of NetworkManager's state through python-networkmanager objects."""

    def __init__(self, nm: ModuleType, kernel: KernelLinks):
        import dbus

        self.nm = nm
        self.kernel = kernel
        self.errors: tuple[type[BaseException], ...] = (
            dbus.exceptions.DBusException, nm.ObjectVanished, LookupError, ValueError, TypeError)

    def read(self) -> list[Link]:
        manager = self.nm.NetworkManager
        primary = _path(self.prop(manager, "PrimaryConnection"))
        connections = self.objects("ActiveConnections", self.nm.ActiveConnection)
        active = [ac for ac in connections if self.prop(ac, "State") == NM_ACTIVATED]
        plain = [ac for ac in active if not self.is_tunnel(ac)]
        links = [link for ac in plain if (link := self.device_link(ac, primary))]
        carrier_default = next((lk for lk in links if lk.primary), links[0] if links else None)
        for ac in active:
            if self.is_tunnel(ac):
                links = self.add_tunnel(links, ac, primary, carrier_default)
        return links

    def managed_interfaces(self) -> set[str]:
        """Interface names of every device NetworkManager manages, active or not."""
        names = set()
        for dev in self.objects("Devices", self.nm.Device):
            if self.prop(dev, "State") != NM_UNMANAGED:
                names |= {self.prop(dev, "Interface"), self.prop(dev, "IpInterface")}
        names.discard(None)
        names.discard("")
        return names

    def objects(self, name: str, cls: type) -> list[Any]:
        """The objects a NetworkManager list property names, skipping any that vanish.

        Reading the list itself raises when NetworkManager is gone (the caller falls back).
        """
        import dbus

        proxy = self.nm.NetworkManager.proxy
        paths = proxy.Get(NM_BUS_NAME, name, dbus_interface=dbus.PROPERTIES_IFACE)
        found = []
        for path in paths:
            with contextlib.suppress(*self.errors):
                found.append(cls(str(path)))
        return found

    # ----------------------------------------------------------------- one connection

    def device_link(self, ac: Any, primary: str | None) -> Link | None:
        devices = self.prop(ac, "Devices") or []
        if not devices:
            return None
        dev = devices[0]
        interface = self.interface(dev)
        if not interface:
            return None
        ip4 = self.prop(ac, "Ip4Config") or self.prop(dev, "Ip4Config")
        gateway = self.gateway(ip4)
        return Link(interface=interface, link_class=self.link_class(dev, ac, interface),
                    addresses=self.addresses(ip4), gateway=gateway,
                    gateway_mac=neighbour_mac(gateway, interface, self.kernel.proc_root),
                    ssid=self.ssid(dev, ac), metered=self.prop(dev, "Metered") in NM_METERED,
                    primary=_path(ac) == primary, expected_kbps=self.kbps(dev))

    def add_tunnel(self, links: list[Link], ac: Any, primary: str | None,
                   carrier_default: Link | None) -> list[Link]:
        devices = self.prop(ac, "Devices") or []
        ip4 = self.prop(ac, "Ip4Config")
        addresses = self.addresses(ip4)
        own = bool(devices) and self.is_tunnel_device(devices[0])
        interface = self.interface(devices[0]) if own else None
        if devices and not own:  # a plugin VPN names the device it rides on
            parent = self.interface(devices[0])
            carrier = next((lk for lk in links if lk.interface == parent), None)
            if carrier is None:
                return links  # its carrier is not up: neither is the tunnel
        else:
            carrier = carrier_default
        if interface is None:
            interface = self.address_owner(addresses)
        if interface is None:  # a tunnel the kernel does not show: mark what it rides on
            return [replace(lk, vpn=True) if lk is carrier else lk for lk in links]
        carried = carrier.link_class if carrier else WIRED
        link_class = self.kernel.classes.get(interface, carried)
        tunnel = Link(interface=interface, link_class=link_class, addresses=addresses,
                      gateway=self.gateway(ip4), vpn=True,
                      metered=bool(carrier and carrier.metered), primary=_path(ac) == primary)
        return [lk for lk in links if lk.interface != interface] + [tunnel]

    @staticmethod
    def address_owner(addresses: Iterable[str]) -> str | None:
        owners = (interface_with_address(a.split("/")[0]) for a in addresses)
        return next(filter(None, owners), None)

    # ----------------------------------------------------------------- properties

    def prop(self, obj: Any, name: str, default: Any = None) -> Any:
        """A property of a python-networkmanager object; `default` when missing or gone.

        python-networkmanager builds a class's properties from the first object it
        introspects; a property that object lacked is read directly from D-Bus.
        """
        if obj is None:
            return default
        try:
            return getattr(obj, name)
        except AttributeError:
            return self.raw_prop(obj, name, default)
        except self.errors:
            return default

    def raw_prop(self, obj: Any, name: str, default: Any) -> Any:
        import dbus

        for iface in getattr(type(obj), "interface_names", ()):
            with contextlib.suppress(*self.errors):
                value = obj.proxy.Get(iface, name, dbus_interface=dbus.PROPERTIES_IFACE)
                return self.nm.fixups.to_python(type(obj).__name__, "Get", name, value, None)
        return default

    def interface(self, dev: Any) -> str | None:
        return self.prop(dev, "IpInterface") or self.prop(dev, "Interface") or None

    def is_tunnel(self, ac: Any) -> bool:
        if self.prop(ac, "Vpn") or self.prop(ac, "Type") in TUNNEL_TYPES:
            return True
        devices = self.prop(ac, "Devices") or []
        return bool(devices) and self.is_tunnel_device(devices[0])

    def is_tunnel_device(self, dev: Any) -> bool:
        return isinstance(dev, (self.nm.WireGuard, self.nm.Tun, self.nm.IPTunnel))

    def link_class(self, dev: Any, ac: Any, interface: str) -> str:
        if interface in self.kernel.classes:
            return self.kernel.classes[interface]
        if isinstance(dev, self.nm.Wireless):
            return WIFI
        if isinstance(dev, (self.nm.Modem, self.nm.Bluetooth)):
            return CELLULAR
        if isinstance(dev, self.nm.Wired):
            return WIRED
        by_type = {"802-11-wireless": WIFI, "gsm": CELLULAR, "cdma": CELLULAR,
                   "bluetooth": CELLULAR, "802-3-ethernet": WIRED, "pppoe": WIRED}
        return by_type.get(self.prop(ac, "Type")) or self.kernel.classify(interface)

    def gateway(self, ip4: Any) -> str | None:
        gateway = self.prop(ip4, "Gateway")
        return str(gateway) if gateway and gateway not in ("0.0.0.0", "::") else None

    def addresses(self, ip4: Any) -> tuple[str, ...]:
        data = self.prop(ip4, "AddressData") or []
        found = [f"{d['address']}/{d['prefix']}" for d in data if "address" in d and "prefix" in d]
        if not found:  # NetworkManager before 1.0: [address, prefix, gateway] triples
            found = [f"{a[0]}/{a[1]}" for a in self.prop(ip4, "Addresses") or [] if len(a) >= 2]
        return tuple(found)

    def ssid(self, dev: Any, ac: Any) -> str | None:
        if not isinstance(dev, self.nm.Wireless):
            return None
        for ap in (self.prop(ac, "SpecificObject"), self.prop(dev, "ActiveAccessPoint")):
            if isinstance(ap, self.nm.AccessPoint) and (ssid := self.prop(ap, "Ssid")):
                return str(ssid)
        return self.settings_ssid(ac)

    def settings_ssid(self, ac: Any) -> str | None:
        """The SSID from the connection profile, read raw (python-networkmanager's
        GetSettings() needs keys NetworkManager may leave out)."""
        import dbus

        conn_path = _path(self.prop(ac, "Connection"))
        if not conn_path:
            return None
        with contextlib.suppress(*self.errors):
            proxy = dbus.SystemBus().get_object(NM_BUS_NAME, conn_path)
            settings = proxy.GetSettings(dbus_interface=f"{NM_BUS_NAME}.Settings.Connection")
            raw = settings.get("802-11-wireless", {}).get("ssid")
            return bytes(int(b) for b in raw).decode("utf-8", "replace") if raw else None
        return None

    def kbps(self, dev: Any) -> int | None:
        if isinstance(dev, self.nm.Wireless):
            rate = self.prop(dev, "Bitrate")  # kbit/s
            return int(rate) if rate else None
        if isinstance(dev, self.nm.Wired):
            speed = self.prop(dev, "Speed")  # Mbit/s
            return int(speed) * 1000 if speed else None
        return None


def _path(obj: Any) -> str | None:
    """The D-Bus object path of a python-networkmanager object (None for none)."""
    if obj is None:
        return None
    return str(getattr(obj, "object_path", obj) or "") or None
