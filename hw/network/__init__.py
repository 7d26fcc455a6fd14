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

from appliance.signals import LinkSource
from hw.network.classes import ClassMap, class_map
from hw.network.dbus import ensure_dbus_mainloop, nm_running
from hw.network.kernel import (
    KernelAddresses,
    KernelLinks,
    default_routes,
    interface_with_address,
    neighbour_mac,
    route_interface,
)
from hw.network.networkmanager import NetworkManagerLinks
from hw.network.static import StaticLinks

__all__ = [
    "ClassMap", "KernelAddresses", "KernelLinks", "LinkSource", "NetworkManagerLinks",
    "StaticLinks", "best_link_source", "class_map", "default_routes",
    "ensure_dbus_mainloop", "interface_with_address", "neighbour_mac", "nm_running",
    "route_interface",
]


def best_link_source(classes: ClassMap | None = None) -> LinkSource:
    """NetworkManagerLinks when NetworkManager answers on the system bus, else KernelLinks."""
    return NetworkManagerLinks(classes) if nm_running() else KernelLinks(classes)
