"""Where a service listens: its configured addresses and interface names, resolved.

`box.listen` and `box.metrics_listen` name IP addresses and network interfaces (the
vehicle's LAN). An interface is resolved to its addresses through an `InterfaceAddresses`
(`hw/network/kernel.py` reads the kernel's view; the core reads no sysfs). An interface with no
address yet (cable out, DHCP not done, a USB NIC not plugged in) is waited for: the
service listens on what it has, `step` tries again, health says `attention` and one log
line names the interface each time it starts or stops waiting. Never a fallback to every
address: a missing LAN must not open the box to the other side.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from appliance.logs import event

log = logging.getLogger("fluxbox.listening")

EVERY_ADDRESS = "0.0.0.0"
RETRY_S = 5.0  # how often interfaces still waiting for an address are looked at again


class InterfaceAddresses(Protocol):
    def addresses(self, interface: str) -> tuple[str, ...]:
        """The interface's IP addresses (no prefix; IPv6 link-local left out, it needs a
        scope); () when it has none or does not exist. Never raises."""
        ...


class NoInterfaces:
    """Without a hardware adapter: no interface has an address."""

    def addresses(self, interface: str) -> tuple[str, ...]:
        return ()


def is_address(target: str) -> bool:
    try:
        ipaddress.ip_address(target)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class Resolved:
    addresses: tuple[str, ...]  # to listen on, in the order configured, no repeats
    waiting: tuple[str, ...] = ()  # interfaces named but without an address yet


def resolve(targets: Iterable[str], source: InterfaceAddresses) -> Resolved:
    """`targets` (addresses and interface names) as addresses; none configured: every
    address, as before `box.listen` existed."""
    targets = tuple(targets)
    if not targets:
        return Resolved((EVERY_ADDRESS,))
    addresses: list[str] = []
    waiting: list[str] = []
    for target in targets:
        found = (target,) if is_address(target) else source.addresses(target)
        if not found:
            waiting.append(target)
        addresses += [a for a in found if a not in addresses]
    return Resolved(tuple(addresses), tuple(waiting))


class Listening:
    """Keeps one service's bound addresses in step with its targets.

    `bind(addresses)` is the service's own: it listens on exactly those addresses (starting
    and stopping listeners) and returns the ones it could bind. `step` is safe to repeat:
    nothing is rebound while the addresses stay the same.
    """

    def __init__(self, service: str, targets: Iterable[str], source: InterfaceAddresses,
                 bind: Callable[[tuple[str, ...]], tuple[str, ...]]) -> None:
        self.service = service
        self.targets = tuple(targets)
        self.source = source
        self.bind = bind
        self.bound: tuple[str, ...] = ()
        self.waiting: tuple[str, ...] = ()
        self._wanted: tuple[str, ...] | None = None

    def step(self) -> Resolved:
        resolved = resolve(self.targets, self.source)
        for interface in sorted(set(resolved.waiting) - set(self.waiting)):
            event(log, "listen interface has no address", logging.WARNING,
                  service=self.service, interface=interface, retry_s=RETRY_S)
        for interface in sorted(set(self.waiting) - set(resolved.waiting)):
            event(log, "listen interface has an address", service=self.service,
                  interface=interface)
        self.waiting = resolved.waiting
        if resolved.addresses != self._wanted or set(self.bound) != set(resolved.addresses):
            self._wanted = resolved.addresses
            self.bound = self.bind(resolved.addresses)
        return resolved

    @property
    def failed(self) -> tuple[str, ...]:
        """Addresses resolved but not listened on (the bind failed; tried again)."""
        return tuple(a for a in self._wanted or () if a not in self.bound)

    def problems(self) -> list[str]:
        """For `status` errors; each one makes health `attention`."""
        return ([f"{self.service}: listen interface {i} has no address yet"
                 for i in self.waiting]
                + [f"{self.service}: cannot listen on {a}" for a in self.failed])

    def view(self) -> dict[str, list[str]]:
        return {"addresses": list(self.bound), "waiting": list(self.waiting)}
