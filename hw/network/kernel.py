"""The kernel's view of links, needing no daemon: psutil, /proc/net/route, /proc/net/arp
and sysfs (`KernelLinks`); an interface's addresses for the listeners
(`KernelAddresses`); `route_interface(address)` asks the kernel (`ip -j route get`), takes
IP literals only (resolve names first) and never raises."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from appliance.signals import CELLULAR, WIFI, WIRED, Link, Links
from hw.network.classes import (
    ARPHRD_CELLULAR,
    CELLULAR_PREFIXES,
    OPER_DOWN,
    ClassMap,
    class_map,
)

log = logging.getLogger("fluxbox.hw.network")

ROUTE_TIMEOUT_S = 2.0


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
