"""`StaticLinks`: a LinkSource that reports what it is told (tests, boxes without the
hardware)."""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from appliance.signals import Link, Links


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
