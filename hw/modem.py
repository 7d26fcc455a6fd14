"""The cellular modem: ModemManager over D-Bus, and fakes.

`ModemManagerModem` reads ModemManager's object tree in one call (ObjectManager
GetManagedObjects, bounded by a time-out) and turns the best modem into a ModemState:

- `signal_percent`: Modem.SignalQuality (0-100);
- `technology`: the most capable of Modem.AccessTechnologies, one of TECHNOLOGIES;
- `registration`: Modem3gpp.RegistrationState ("home", "roaming", "searching", "idle",
  "denied", "unknown", "emergency-only"), else the CDMA registration, else a word from
  Modem.State ("registered", "searching", "disabled", "locked", "failed", ...);
- `operator`: Modem3gpp.OperatorName.

It never starts ModemManager (no D-Bus activation: it asks whether the name is owned
first) and never raises: no ModemManager, no modem or a D-Bus failure is None.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from appliance.signals import ModemState
from hw.network import ensure_dbus_mainloop

log = logging.getLogger("fluxbox.hw.modem")

MM_BUS_NAME = "org.freedesktop.ModemManager1"
MM_PATH = "/org/freedesktop/ModemManager1"
MODEM = "org.freedesktop.ModemManager1.Modem"
MODEM_3GPP = "org.freedesktop.ModemManager1.Modem.Modem3gpp"
MODEM_CDMA = "org.freedesktop.ModemManager1.Modem.ModemCdma"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
CALL_TIMEOUT_S = 3.0

# MMModemAccessTechnology bits, most capable first
_TECHNOLOGY_BITS = (
    ("5g", 1 << 15),
    ("lte", (1 << 14) | (1 << 16) | (1 << 17)),  # LTE, LTE Cat-M, NB-IoT
    ("hspa", (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9)),  # HSDPA, HSUPA, HSPA, HSPA+
    ("umts", 1 << 5),
    ("evdo", (1 << 11) | (1 << 12) | (1 << 13)),
    ("cdma", 1 << 10),  # 1xRTT
    ("edge", 1 << 4),
    ("gprs", 1 << 3),
    ("gsm", (1 << 1) | (1 << 2)),  # GSM, GSM Compact
    ("pots", 1 << 0),
)
TECHNOLOGIES = tuple(name for name, _ in _TECHNOLOGY_BITS)

# MMModem3gppRegistrationState
_REGISTRATION_3GPP = {
    0: "idle", 1: "home", 2: "searching", 3: "denied", 4: "unknown", 5: "roaming",
    6: "home", 7: "roaming", 8: "emergency-only", 9: "home", 10: "roaming", 11: "attached-rlos",
}
# MMModemCdmaRegistrationState
_REGISTRATION_CDMA = {1: "registered", 2: "home", 3: "roaming"}
# MMModemState
_MODEM_STATE = {
    -1: "failed", 0: "unknown", 1: "initializing", 2: "locked", 3: "disabled", 4: "disabling",
    5: "enabling", 6: "enabled", 7: "searching", 8: "registered", 9: "registered",
    10: "registered", 11: "registered",
}


def technology(bits: int) -> str | None:
    """The most capable technology in an MMModemAccessTechnology bit mask, or None."""
    return next((name for name, mask in _TECHNOLOGY_BITS if bits & mask), None)


def registration(interfaces: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The modem's registration, from the 3GPP, then CDMA, then the generic state."""
    state_3gpp = interfaces.get(MODEM_3GPP, {}).get("RegistrationState")
    if state_3gpp is not None:
        return _REGISTRATION_3GPP.get(int(state_3gpp), "unknown")
    cdma = interfaces.get(MODEM_CDMA, {})
    for key in ("EvdoRegistrationState", "Cdma1xRegistrationState"):
        if int(cdma.get(key, 0)) in _REGISTRATION_CDMA:
            return _REGISTRATION_CDMA[int(cdma[key])]
    state = interfaces.get(MODEM, {}).get("State")
    return _MODEM_STATE.get(int(state)) if state is not None else None


def modem_state(interfaces: Mapping[str, Mapping[str, Any]], observed_at: float) -> ModemState:
    """A ModemState from one modem's interfaces -> properties map (GetManagedObjects)."""
    modem = interfaces.get(MODEM, {})
    quality = modem.get("SignalQuality")
    signal = max(0, min(100, int(quality[0]))) if quality else None
    operator = str(interfaces.get(MODEM_3GPP, {}).get("OperatorName") or "") or None
    return ModemState(signal_percent=signal,
                      technology=technology(int(modem.get("AccessTechnologies", 0))),
                      registration=registration(interfaces), operator=operator,
                      observed_at=observed_at)


def _best_modem(objects: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The modem furthest along (connected > registered > ... ), lowest path first."""
    modems = sorted((str(path), ifaces) for path, ifaces in objects.items() if MODEM in ifaces)
    if not modems:
        return None
    return max(modems, key=lambda m: int(m[1][MODEM].get("State", 0)))[1]


class ModemManagerModem:
    """ModemSource over ModemManager's D-Bus API (dbus-python, the system bus).

    `bus` is a dbus-python bus connection; the default is the shared system bus.
    `last_error` holds the latest D-Bus failure, or None.
    """

    def __init__(self, bus: Any = None, clock: Callable[[], float] = time.time,
                 timeout_s: float = CALL_TIMEOUT_S):
        self._bus = bus
        self._clock = clock
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def modem(self) -> ModemState | None:
        try:
            with self._lock:
                objects = self._managed_objects()
        except Exception as exc:  # no dbus-python, no bus, ModemManager gone mid-call
            self._note_error(exc)
            return None
        self._note_error(None)
        best = _best_modem(objects) if objects else None
        return modem_state(best, self._clock()) if best is not None else None

    def _managed_objects(self) -> Mapping[str, Mapping[str, Any]] | None:
        bus = self._connection()
        if not bus.name_has_owner(MM_BUS_NAME):
            return None
        root = bus.get_object(MM_BUS_NAME, MM_PATH, introspect=False)
        return root.GetManagedObjects(dbus_interface=OBJECT_MANAGER, timeout=self._timeout_s)

    def _connection(self) -> Any:
        if self._bus is None:
            ensure_dbus_mainloop()
            import dbus

            self._bus = dbus.SystemBus()
        return self._bus

    def _note_error(self, exc: Exception | None) -> None:
        error = None if exc is None else f"{type(exc).__name__}: {exc}"
        if error and error != self.last_error:
            log.warning("ModemManager unreadable: %s", error)
        self.last_error = error


class NoModem:
    """ModemSource for a box without a modem: always None."""

    def modem(self) -> ModemState | None:
        return None


class StaticModem:
    """ModemSource that reports the state it is given (None: no modem); `set()` changes it.

    `observed_at` is the time of each reading.
    """

    def __init__(self, state: ModemState | None = None, clock: Callable[[], float] = time.time):
        self._state = state
        self._clock = clock
        self._lock = threading.Lock()

    def set(self, state: ModemState | None) -> None:
        with self._lock:
            self._state = state

    def update(self, **fields: Any) -> None:
        """Change some fields of the current state (a modem appears if there was none)."""
        with self._lock:
            base = self._state or ModemState(None, None, None, None)
            self._state = replace(base, **fields)

    def modem(self) -> ModemState | None:
        with self._lock:
            state = self._state
        return replace(state, observed_at=self._clock()) if state is not None else None
