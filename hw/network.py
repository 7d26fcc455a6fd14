"""Network links: NetworkManager over D-Bus, the kernel's own view, and a static fake.

Three `LinkSource`s (see `appliance.signals`):

- `NetworkManagerLinks` reads NetworkManager through python-networkmanager: active
  connections, their devices, SSID, IPv4 addresses and gateway, metered, primary.
  Interfaces that NetworkManager does not know (or leaves unmanaged) are added from
  the kernel's view, so loopback and hand-configured interfaces are never missing.
  When NetworkManager does not answer, the whole answer is the kernel's view.
- `KernelLinks` needs no daemon: psutil, /proc/net/route, /proc/net/arp and sysfs.
- `StaticLinks` reports what it is told (tests, boxes without the hardware).

Link classes: Wi-Fi is `wifi`; modems, wwan*/ppp*/cdc-wdm* and other wwan devices
are `cellular`; everything else (ethernet, loopback, tun, veth, bridge, unknown) is
`wired`, unless `[links] classes` maps the interface name to a class.

Tunnels (NetworkManager `vpn`, `wireguard`, `tun` and `ip-tunnel` connections) are
links of their own with `vpn=True`, named by their kernel interface, with the class
and metered flag of the link they ride on (the device NetworkManager names for a
plugin VPN, else the primary non-tunnel link). A plugin VPN whose tunnel interface
cannot be found is reported by setting `vpn=True` on the link it rides on instead.

`KernelAddresses` gives an interface's addresses to the listeners (`appliance.listening`).

`route_interface(address)` asks the kernel (`ip -j route get`); it takes IP literals
only (resolve names first) and never raises.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from appliance.signals import CELLULAR, LINK_CLASSES, WIFI, WIRED, Link, Links, LinkSource

log = logging.getLogger("fluxbox.hw.network")

ClassMap = Mapping[str, str] | Iterable[tuple[str, str]]

NM_BUS_NAME = "org.freedesktop.NetworkManager"
CELLULAR_PREFIXES = ("wwan", "ppp", "cdc-wdm", "rmnet", "mhi")
ARPHRD_CELLULAR = {512, 519}  # PPP, RAWIP (qmi_wwan raw-ip, mhi)
OPER_DOWN = {"down", "lowerlayerdown", "notpresent", "dormant"}
TUNNEL_TYPES = {"vpn", "wireguard", "tun", "ip-tunnel"}
NM_ACTIVATED = 2  # NMActiveConnectionState
NM_UNMANAGED = 10  # NMDeviceState
NM_METERED = {1, 3}  # NMMetered: yes, guess-yes
ROUTE_TIMEOUT_S = 2.0


def class_map(classes: ClassMap | None) -> dict[str, str]:
    """`[links] classes` as a dict; pairs naming no known link class are dropped."""
    pairs = classes.items() if isinstance(classes, Mapping) else (classes or ())
    return {str(name): str(cls) for name, cls in pairs if cls in LINK_CLASSES}


# --------------------------------------------------------------------------- the kernel's view


def route_interface(address: str) -> str | None:
    """The interface the kernel would use to reach the IP literal `address`, or None."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except (ValueError, AttributeError):
        return None
    try:
        out = subprocess.run(["ip", "-j", "route", "get", str(ip)], capture_output=True,
                             text=True, timeout=ROUTE_TIMEOUT_S, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return _route_by_socket(ip)
    return _parse_route_get(out)


def _parse_route_get(out: str) -> str | None:
    """The `dev` of `ip -j route get` output (plain `ip route get` output also parses)."""
    try:
        routes = json.loads(out)
        return str(routes[0]["dev"]) if routes and routes[0].get("dev") else None
    except (ValueError, LookupError, TypeError, AttributeError):
        words = out.split()
        return words[words.index("dev") + 1] if "dev" in words[:-1] else None


def _route_by_socket(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Without `ip`: the interface holding the source address a UDP connect picks."""
    if ip.is_loopback:
        return "lo"
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((str(ip), 9))
            source = s.getsockname()[0]
        return interface_with_address(source)
    except OSError:
        return None


def interface_with_address(address: str) -> str | None:
    """The interface that holds `address` (no prefix), or None."""
    try:
        for name, addrs in psutil.net_if_addrs().items():
            if any(a.address.split("%")[0] == address for a in addrs):
                return name
    except OSError:
        pass
    return None


def _prefix_len(netmask: str | None) -> int | None:
    try:
        return bin(int(ipaddress.ip_address(netmask))).count("1") if netmask else None
    except ValueError:
        return None


def _usable_addresses(addrs: Iterable[Any]) -> tuple[str, ...]:
    """IPv4 and non-link-local IPv6 addresses as "address/prefix"."""
    found = []
    for a in addrs:
        if a.family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = a.address.split("%")[0]
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        if ip.version == 6 and ip.is_link_local:
            continue
        prefix = _prefix_len(a.netmask)
        found.append(f"{address}/{prefix}" if prefix is not None else address)
    return tuple(found)


class KernelAddresses:
    """`appliance.listening.InterfaceAddresses` from the kernel's view (this process's
    network namespace): the addresses an interface holds now, whether it is up or not."""

    def addresses(self, interface: str) -> tuple[str, ...]:
        try:
            addrs = psutil.net_if_addrs().get(interface, [])
        except OSError:
            return ()
        return tuple(a.split("/")[0] for a in _usable_addresses(addrs))


@dataclass(frozen=True)
class _Route:
    gateway: str
    metric: int


def default_routes(proc_root: Path = Path("/proc")) -> dict[str, _Route]:
    """IPv4 default routes by interface (lowest metric kept), from /proc/net/route."""
    routes: dict[str, _Route] = {}
    try:
        lines = (proc_root / "net" / "route").read_text().splitlines()[1:]
    except OSError:
        return routes
    for line in lines:
        f = line.split()
        if len(f) < 8 or f[1] != "00000000" or f[7] != "00000000":
            continue
        flags = int(f[3], 16)
        if not flags & 0x1 or not flags & 0x2:  # RTF_UP, RTF_GATEWAY
            continue
        route = _Route(socket.inet_ntoa(struct.pack("<I", int(f[2], 16))), int(f[6]))
        if f[0] not in routes or route.metric < routes[f[0]].metric:
            routes[f[0]] = route
    return routes


def neighbour_mac(ip: str | None, interface: str, proc_root: Path = Path("/proc")) -> str | None:
    """The MAC address the kernel's ARP table holds for `ip` on `interface`, or None."""
    if not ip:
        return None
    try:
        lines = (proc_root / "net" / "arp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        f = line.split()
        if len(f) >= 6 and f[0] == ip and f[5] == interface and int(f[2], 16) & 0x2:
            return f[3].lower() if f[3] != "00:00:00:00:00:00" else None
    return None


class KernelLinks:
    """LinkSource from the kernel alone: interfaces that are up with an address.

    `classes` maps interface names to link classes and wins over detection; wireless
    is told by sysfs (`wireless`, `phy80211`, DEVTYPE=wlan), cellular by DEVTYPE=wwan,
    the name (wwan*, ppp*, cdc-wdm*, rmnet*, mhi*) or a PPP/raw-IP link type; all
    else is wired. Cellular links count as metered. `primary` is the interface of the
    lowest-metric IPv4 default route.
    """

    def __init__(self, classes: ClassMap | None = None, sysfs_root: Path = Path("/sys"),
                 proc_root: Path = Path("/proc"), clock: Callable[[], float] = time.time):
        self.classes = class_map(classes)
        self.sysfs_root = Path(sysfs_root)
        self.proc_root = Path(proc_root)
        self._clock = clock

    def links(self) -> Links:
        now = self._clock()
        try:
            return Links(tuple(self._read()), now)
        except Exception:  # psutil or /proc surprises: no information is no links
            log.warning("kernel view of the links failed", exc_info=True)
            return Links((), now)

    def route_interface(self, address: str) -> str | None:
        return route_interface(address)

    def classify(self, interface: str) -> str:
        """The link class of `interface` by the configured map, then by sysfs and name."""
        if interface in self.classes:
            return self.classes[interface]
        dev = self.sysfs_root / "class" / "net" / interface
        devtype = self._uevent(dev).get("DEVTYPE")
        if (dev / "wireless").exists() or (dev / "phy80211").exists() or devtype == "wlan":
            return WIFI
        if devtype == "wwan" or interface.startswith(CELLULAR_PREFIXES):
            return CELLULAR
        return CELLULAR if self._read_int(dev / "type") in ARPHRD_CELLULAR else WIRED

    def link(self, interface: str, addresses: tuple[str, ...] = (),
             routes: Mapping[str, _Route] | None = None) -> Link:
        """One Link for `interface` as the kernel sees it."""
        routes = default_routes(self.proc_root) if routes is None else routes
        route = routes.get(interface)
        primary = min(routes, key=lambda n: routes[n].metric) if routes else None
        link_class = self.classify(interface)
        gateway = route.gateway if route else None
        return Link(interface=interface, link_class=link_class, addresses=addresses,
                    gateway=gateway, gateway_mac=neighbour_mac(gateway, interface, self.proc_root),
                    metered=link_class == CELLULAR, primary=interface == primary,
                    expected_kbps=self._speed_kbps(interface) if link_class == WIRED else None)

    def up_interfaces(self) -> dict[str, tuple[str, ...]]:
        """Interfaces that are up and operational, with their usable addresses."""
        stats, addrs = psutil.net_if_stats(), psutil.net_if_addrs()
        up = {}
        for name in sorted(stats):
            addresses = _usable_addresses(addrs.get(name, ()))
            if stats[name].isup and addresses and self._operational(name):
                up[name] = addresses
        return up

    def _read(self) -> list[Link]:
        routes = default_routes(self.proc_root)
        up = self.up_interfaces()
        return [self.link(name, addresses, routes) for name, addresses in up.items()]

    def _operational(self, interface: str) -> bool:
        try:
            state = (self.sysfs_root / "class/net" / interface / "operstate").read_text().strip()
        except OSError:
            return True
        return state not in OPER_DOWN

    def _speed_kbps(self, interface: str) -> int | None:
        mbps = self._read_int(self.sysfs_root / "class" / "net" / interface / "speed")
        return mbps * 1000 if mbps and mbps > 0 else None

    @staticmethod
    def _uevent(dev: Path) -> dict[str, str]:
        try:
            lines = (dev / "uevent").read_text().splitlines()
        except OSError:
            return {}
        return dict(line.split("=", 1) for line in lines if "=" in line)

    @staticmethod
    def _read_int(path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None


# --------------------------------------------------------------------------- D-Bus plumbing


def ensure_dbus_mainloop() -> None:
    """Make GLib the default D-Bus main loop, before the first system bus connection.

    python-networkmanager's proxies follow NetworkManager's name owner, which dbus-python
    allows only on a connection with a main loop; the shared `dbus.SystemBus()` takes the
    default loop when it is first made, so every hw module calls this first.
    """
    import dbus

    if dbus.get_default_main_loop() is None:
        from dbus.mainloop.glib import DBusGMainLoop

        DBusGMainLoop(set_as_default=True)


def nm_running() -> bool:
    """True when NetworkManager owns its name on the system bus."""
    try:
        ensure_dbus_mainloop()
        import dbus

        return bool(dbus.SystemBus().name_has_owner(NM_BUS_NAME))
    except Exception:  # no dbus-python, no system bus, a refused connection
        return False


def _import_nm() -> ModuleType:
    """python-networkmanager, imported once NetworkManager answers (it introspects on import)."""
    ensure_dbus_mainloop()
    import NetworkManager as nm

    if not getattr(nm, "_fluxbox_generic", False):
        known = nm.device_class

        def device_class(device_type: int) -> type:
            # python-networkmanager 2.2 knows device types up to 30; NM 1.42 has 32 (loopback)
            try:
                return known(device_type)
            except KeyError:
                return nm.Generic

        nm.device_class = device_class
        nm._fluxbox_generic = True
        _drop_restart_listener(nm)
    return nm


def _drop_restart_listener(nm: ModuleType) -> None:
    """Remove python-networkmanager's NameOwnerChanged receiver.

    Nobody runs a GLib main loop in the box, so its signals would pile up unread on the
    connection; were they dispatched, its handler would sleep 1 s and rebind the cached
    proxies to NetworkManager's unique name, which breaks at the next restart. Without
    it every proxy keeps following the well-known name, which survives restarts.
    """
    import dbus

    with contextlib.suppress(Exception):
        dbus.SystemBus().remove_signal_receiver(
            nm.SignalDispatcher.handle_restart, "NameOwnerChanged", "org.freedesktop.DBus")


# --------------------------------------------------------------------------- NetworkManager


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
            self._nm = _import_nm()
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


def best_link_source(classes: ClassMap | None = None) -> LinkSource:
    """NetworkManagerLinks when NetworkManager answers on the system bus, else KernelLinks."""
    return NetworkManagerLinks(classes) if nm_running() else KernelLinks(classes)


# --------------------------------------------------------------------------- fake


class StaticLinks:
    """A LinkSource that reports the links it is given; `set()` changes them.

    `route_interface` answers from `routes` (network -> interface, longest prefix; loopback
    goes to "lo"), then the link holding an address in the same network, then the primary
    link, then None.
    """

    def __init__(self, links: Iterable[Link] = (), routes: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time):
        self._links = tuple(links)
        self._routes = {"127.0.0.0/8": "lo", "::1/128": "lo", **(routes or {})}
        self._clock = clock
        self._lock = threading.Lock()

    def set(self, *links: Link) -> None:
        with self._lock:
            self._links = tuple(links)

    def links(self) -> Links:
        with self._lock:
            return Links(self._links, self._clock())

    def route_interface(self, address: str) -> str | None:
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except (ValueError, AttributeError):
            return None
        with self._lock:
            links = self._links
        nets = [(ipaddress.ip_network(net, strict=False), dev) for net, dev in self._routes.items()]
        matches = sorted((net.prefixlen, dev) for net, dev in nets
                         if net.version == ip.version and ip in net)
        if matches:
            return matches[-1][1]
        for link in links:
            for address_ in link.addresses:
                with contextlib.suppress(ValueError):
                    if ip in ipaddress.ip_interface(address_).network:
                        return link.interface
        return next((link.interface for link in links if link.primary), None)
