"""What the core reads from hardware: plain values, and the small interfaces that give them.

`hw/` implements these Protocols (gpsd, NetworkManager or the kernel, ModemManager,
udev); `hardware.py` picks the adapters. The core never imports D-Bus, gpsd or sysfs.
Every reading carries the time it was observed, so a decision can tell stale from fresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

WIRED, WIFI, CELLULAR, OFFLINE = "wired", "wifi", "cellular", "offline"
LINK_CLASSES = (WIRED, WIFI, CELLULAR)


@dataclass(frozen=True)
class Position:
    """A GPS fix. `mode` is gpsd's: 0/1 no fix, 2 = 2D, 3 = 3D."""

    lat: float
    lon: float
    mode: int
    error_m: float | None  # horizontal error estimate, where the receiver gives one
    fix_time: float  # when the receiver took the fix (epoch seconds)
    observed_at: float  # when the box read it


@dataclass(frozen=True)
class Link:
    """One network interface that is up, as the box sees it."""

    interface: str
    link_class: str  # wired | wifi | cellular
    addresses: tuple[str, ...] = ()  # "10.20.3.4/16"
    gateway: str | None = None
    gateway_mac: str | None = None
    ssid: str | None = None
    vpn: bool = False
    metered: bool = False
    primary: bool = False
    expected_kbps: int | None = None  # from the modem or the link speed, before measuring


@dataclass(frozen=True)
class ModemState:
    signal_percent: int | None
    technology: str | None  # "lte", "umts", ...
    registration: str | None  # "home", "roaming", "searching", ...
    operator: str | None
    observed_at: float = 0.0


@dataclass(frozen=True)
class Links:
    links: tuple[Link, ...]
    observed_at: float


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of the signals, each part with the time it was observed."""

    taken_at: float
    position: Position | None = None
    links: tuple[Link, ...] = ()
    links_at: float = 0.0
    routes: dict[str, str | None] = field(default_factory=dict)  # host -> interface
    modem: ModemState | None = None
    nodes: dict[str, float] = field(default_factory=dict)  # site id -> last C-ECHO answer


class PositionSource(Protocol):
    def position(self) -> Position | None:
        """The latest fix, or None (no receiver, no fix). Never blocks for long, never raises."""
        ...


class LinkSource(Protocol):
    def links(self) -> Links:
        """The interfaces that are up now. Never raises: no information is no links."""
        ...

    def route_interface(self, address: str) -> str | None:
        """The interface the kernel would use to reach `address`; "lo" for loopback."""
        ...


class ModemSource(Protocol):
    def modem(self) -> ModemState | None:
        """The cellular modem's state, or None when there is none."""
        ...


class HotplugSource(Protocol):
    def watch(self, on_change: Callable[[str], None]) -> None:
        """Call `on_change(reason)` from a thread of its own whenever a network device or
        modem appears or leaves; returns at once."""
        ...

    def stop(self) -> None:
        ...
