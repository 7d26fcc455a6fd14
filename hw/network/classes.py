"""Link classes of interfaces: names and kernel types that mean cellular, the operational
states that mean down, and `[links] classes` overriding both."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from appliance.signals import LINK_CLASSES

ClassMap = Mapping[str, str] | Iterable[tuple[str, str]]

CELLULAR_PREFIXES = ("wwan", "ppp", "cdc-wdm", "rmnet", "mhi")
ARPHRD_CELLULAR = {512, 519}  # PPP, RAWIP (qmi_wwan raw-ip, mhi)
OPER_DOWN = {"down", "lowerlayerdown", "notpresent", "dormant"}


def class_map(classes: ClassMap | None) -> dict[str, str]:
    """`[links] classes` as a dict; pairs naming no known link class are dropped."""
    pairs = classes.items() if isinstance(classes, Mapping) else (classes or ())
    return {str(name): str(cls) for name, cls in pairs if cls in LINK_CLASSES}
