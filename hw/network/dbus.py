"""D-Bus plumbing shared by the NetworkManager and ModemManager adapters: the GLib main
loop, whether NetworkManager answers, importing python-networkmanager safely."""

from __future__ import annotations

import contextlib
import logging
from types import ModuleType

log = logging.getLogger("fluxbox.hw.network")

NM_BUS_NAME = "org.freedesktop.NetworkManager"


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


def import_networkmanager() -> ModuleType:
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
