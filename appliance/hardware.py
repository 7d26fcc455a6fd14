"""The hardware adapters the box runs with: the real ones where the machine has the
service and the library, a do-nothing one elsewhere (never a crash for a missing
library). The only module that chooses `hw` adapters; the core sees the interfaces of
`appliance.signals`, `appliance.health` and `appliance.listening`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass

from appliance.config import Config
from appliance.health import StatusLed
from appliance.listening import InterfaceAddresses
from appliance.logs import event
from appliance.signals import HotplugSource, LinkSource, ModemSource, PositionSource

log = logging.getLogger("fluxbox.hardware")

STATUS_LED_ENV = "FLUXBOX_STATUS_LED"  # "external": another process drives the LED


@dataclass(frozen=True)
class Hardware:
    position: PositionSource
    links: LinkSource
    modem: ModemSource
    hotplug: HotplugSource | None = None
    led: StatusLed | None = None
    addresses: InterfaceAddresses | None = None  # None: no interface has an address


def _drives_led(config: Config) -> bool:
    """The appliance drives the status LED itself unless another process does
    (FLUXBOX_STATUS_LED=external: `fluxbox led` as root on the firmware image)."""
    return bool(config.box.status_led) and os.environ.get(STATUS_LED_ENV) != "external"


# The hardware libraries each adapter needs: (import name, package, adapters that need it).
# gpsd-py3 and pyudev are core dependencies; dbus-python and python-networkmanager come
# with the `hw` extra (dbus-python compiles against libdbus). Whichever is missing or
# fails to import, the box runs: that adapter gives no vote, and one log line says so.
HW_LIBRARIES = (
    ("gpsd", "gpsd-py3", "gps"),
    ("pyudev", "pyudev", "hotplug"),
    ("dbus", "dbus-python", "network, modem"),
    ("NetworkManager", "python-networkmanager", "network"),
)
# python-networkmanager talks to the system bus as it is imported, so it is imported only
# once NetworkManager answers (hw.network), which reads and logs a failure there itself.
IMPORTED_LATER = frozenset({"NetworkManager"})


def missing_hw_libraries() -> set[str]:
    """The import names of HW_LIBRARIES that are not installed or fail to import (issue 7:
    a broken build, a missing shared library, any exception at import), each logged once."""
    missing = set()
    for module, package, adapters in HW_LIBRARIES:
        problem = _import_problem(module)
        if problem is None:
            continue
        missing.add(module)
        if problem == "not installed":
            event(log, "hardware library missing", logging.WARNING, library=package,
                  adapters=adapters)
        else:
            event(log, "hardware library unusable", logging.WARNING, library=package,
                  adapters=adapters, error=problem)
    return missing


def _import_problem(module: str) -> str | None:
    """None if `module` imports (or is found, for IMPORTED_LATER); else why not."""
    try:
        if importlib.util.find_spec(module) is None:
            return "not installed"
        if module not in IMPORTED_LATER:
            importlib.import_module(module)
    except Exception as exc:  # whatever a broken library raises at import
        return type(exc).__name__
    return None


def choose_hardware(config: Config) -> Hardware:
    """The real adapters where the machine has the service and the library, a do-nothing
    one elsewhere (never a crash for a missing library)."""
    from hw.gps import FixedPosition, GpsdPosition
    from hw.led import SysfsLed
    from hw.modem import ModemManagerModem, NoModem
    from hw.network import KernelAddresses, KernelLinks, best_link_source

    missing = missing_hw_libraries()
    hotplug: HotplugSource | None = None
    if "pyudev" not in missing:
        try:
            from hw.udev import UdevHotplug

            hotplug = UdevHotplug()
        except Exception:  # no netlink access: hotplug falls back to polling
            hotplug = None
    classes = dict(config.links.classes)
    if "gpsd" in missing:
        position: PositionSource = FixedPosition()
    else:
        gpsd_host, gpsd_port = config.detect.gpsd.split(":")
        position = GpsdPosition(gpsd_host, int(gpsd_port), max_age_s=config.detect.gps_max_age_s,
                                max_error_m=config.detect.gps_max_error_m)
    return Hardware(
        position=position,
        links=KernelLinks(classes) if {"dbus", "NetworkManager"} & missing
        else best_link_source(classes),
        modem=NoModem() if "dbus" in missing else ModemManagerModem(),
        hotplug=hotplug,
        led=SysfsLed(config.box.status_led) if _drives_led(config) else None,
        addresses=KernelAddresses(),
    )
