"""Value checks for the config's spec tables: each converter takes a parsed TOML value
and returns it checked (and converted), or raises Bad saying what is wrong and how to fix it.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pydicom.uid
from pydicom.datadict import keyword_dict, tag_for_keyword

from appliance.signals import LINK_CLASSES

Convert = Callable[[Any], Any]
Spec = dict[str, tuple[Convert, str | None]]  # key -> (converter, example if required)


def join_key(*parts: str) -> str:
    return ".".join(part for part in parts if part)


class Bad(Exception):
    """Raised by a converter: (key suffix, message) for every problem in one value."""

    def __init__(self, *items: tuple[str, str]) -> None:
        super().__init__(*items)
        self.items = items


def bad(message: str) -> Bad:
    return Bad(("", message))


def show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value) if isinstance(value, str) else str(value)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_key(name: str, allowed: Iterable[str]) -> str:
    allowed = sorted(allowed)
    if hint := did_you_mean(name, allowed):
        return f"unknown key {name!r}{hint}"
    return f"unknown key {name!r}; expected one of: {', '.join(allowed)}"


def _unquote_hint(value: Any) -> str:
    """A hint for a number or boolean written in quotes."""
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"] if isinstance(value, str) else None
    except tomllib.TOMLDecodeError:
        return ""
    return "; write it without quotes" if isinstance(parsed, int | float) else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _within(value: float, low: float, high: float | None) -> bool:
    return low <= value and (high is None or value <= high)


def integer_in(low: int, high: int | None = None, *, zero: bool = False) -> Convert:
    wanted = f"an integer {low}-{high}" if high is not None else f"an integer >= {low}"
    wanted = f"0 or {wanted}" if zero else wanted

    def convert(value: Any) -> int:
        if _is_int(value) and ((zero and value == 0) or _within(value, low, high)):
            return int(value)
        raise bad(f"must be {wanted}, got {show(value)}{_unquote_hint(value)}")

    return convert


def number_in(low: float, high: float | None = None, *, above: bool = False) -> Convert:
    if high is not None:
        wanted = f"a number {low:g} to {high:g}"
    else:
        wanted = f"a number > {low:g}" if above else f"a number >= {low:g}"

    def convert(value: Any) -> float:
        if _is_number(value) and _within(value, low, high) and not (above and value == low):
            return float(value)
        raise bad(f"must be {wanted}, got {show(value)}{_unquote_hint(value)}")

    return convert


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise bad(f"must be true or false, got {show(value)}{_unquote_hint(value)}")


def choice(*options: str) -> Convert:
    def convert(value: Any) -> str:
        if isinstance(value, str) and value in options:
            return value
        wanted = "one of " + ", ".join(repr(option) for option in options)
        hint = did_you_mean(value, options) if isinstance(value, str) else ""
        raise bad(f"must be {wanted}, got {show(value)}{hint}")

    return convert


def text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise bad(f'must be a string in quotes, got {show(value)}; write it as "..."')


_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def ident(value: Any) -> str:
    if isinstance(value, str) and _IDENT.fullmatch(value):
        return value
    raise bad(
        "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
        f"got {show(value)}"
    )


def ae_title(value: Any) -> str:
    if (
        isinstance(value, str)
        and 1 <= len(value) <= 16
        and all(" " <= char <= "~" and char != "\\" for char in value)
        and value.strip()
    ):
        return value
    raise bad(
        "must be an AE title: 1-16 printable ASCII characters, no backslash, not all spaces; "
        f"got {show(value)}"
    )


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(?:\.[A-Za-z0-9_-]{1,63})*\.?")


def host_address(value: Any) -> str:
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            if _HOSTNAME.fullmatch(value) and not re.fullmatch(r"[0-9.]+", value):
                return value
    raise bad(f"must be an IP address or host name such as '10.20.1.5', got {show(value)}")


def host_port(value: Any) -> str:
    if isinstance(value, str) and value.count(":") == 1:
        host, port = value.split(":")
        try:
            host_address(host)
            PORT(int(port))
            return value
        except (Bad, ValueError):
            pass
    raise bad(f"must be 'host:port' such as '127.0.0.1:2947', got {show(value)}")


def path(value: Any) -> Path:
    if isinstance(value, str) and value:
        return Path(value)
    raise bad(f"must be a directory path in quotes, e.g. '/var/lib/fluxbox', got {show(value)}")


def optional_path(value: Any) -> Path | None:
    return None if value == "" else path(value)


def list_of(convert: Convert, example: str) -> Convert:
    def convert_all(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise bad(f"must be an array such as {example}, got {show(value)}")
        items: list[Any] = []
        problems: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            try:
                items.append(convert(item))
            except Bad as error:
                problems += [(f"[{index}]{suffix}", message) for suffix, message in error.items]
        if problems:
            raise Bad(*problems)
        return tuple(items)

    return convert_all


def network(value: Any) -> str:
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_network(value))
        except ValueError:
            try:
                fixed = ipaddress.ip_network(value, strict=False)
            except ValueError:
                pass
            else:
                raise bad(f"{value!r} has host bits set; did you mean '{fixed}'?") from None
    raise bad(f"must be a network in CIDR notation such as '10.20.0.0/16', got {show(value)}")


_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


def gateway(value: Any) -> str:
    if isinstance(value, str):
        if _MAC.fullmatch(value):
            return value.lower()
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
    raise bad(f"must be an IP address or a MAC address such as '00:1a:2b:3c:4d:5e', "
              f"got {show(value)}")


def ssid(value: Any) -> str:
    if isinstance(value, str) and 1 <= len(value.encode()) <= 32:
        return value
    raise bad(f"must be a Wi-Fi network name of 1-32 bytes, got {show(value)}")


_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAYS = r"(?:(?P<days>[A-Za-z]{3}(?:-[A-Za-z]{3})?(?:,[A-Za-z]{3}(?:-[A-Za-z]{3})?)*)\s+)?"
_WINDOW = re.compile(_DAYS + r"(\d\d):(\d\d)-(\d\d):(\d\d)")


def window(value: Any) -> str:
    match = _WINDOW.fullmatch(value.strip()) if isinstance(value, str) else None
    days_ok = match is not None and all(
        day.lower() in _DAY_NAMES
        for day in re.split(r"[,-]", match.group("days") or "mon"))
    if match and days_ok:
        start_h, start_m, end_h, end_m = (int(part) for part in match.groups()[1:])
        start, end = start_h * 60 + start_m, end_h * 60 + end_m
        if start_h < 24 and start_m < 60 and end_m < 60 and end <= 24 * 60 and start != end:
            return str(value)
    raise bad(
        'must be a time window "HH:MM-HH:MM" (24-hour clock, start and end differ; '
        "it may wrap past midnight), optionally after days such as 'Mon-Fri' or 'Sat,Sun', "
        f"e.g. '19:00-23:00' or 'Mon-Fri 19:00-23:00', got {show(value)}"
    )


def link_classes(value: Any) -> tuple[str, ...]:
    links = list_of(choice(*LINK_CLASSES), '["wired", "wifi"]')(value)
    if not links:
        raise bad('is empty, so no link may carry studies; list at least one, e.g. ["wired"]')
    return tuple(dict.fromkeys(links))


def _transfer_syntax_keywords() -> list[str]:
    return [
        name
        for name in dir(pydicom.uid)
        if isinstance(uid := getattr(pydicom.uid, name), pydicom.uid.UID) and uid.is_transfer_syntax
    ]


def transfer_syntax(value: Any) -> str:
    if isinstance(value, str) and value.isidentifier():
        uid = getattr(pydicom.uid, value, None)
        if isinstance(uid, pydicom.uid.UID) and uid.is_transfer_syntax:
            return value
    keywords = _transfer_syntax_keywords()
    if isinstance(value, str):
        by_uid = [name for name in keywords if getattr(pydicom.uid, name) == value]
        hint = f"; write its keyword {by_uid[0]!r}" if by_uid else did_you_mean(value, keywords)
    else:
        hint = ""
    raise bad(
        "must be a pydicom transfer syntax keyword such as 'JPEGLSLossless', "
        f"got {show(value)}{hint}"
    )


def keyword_patterns(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise bad(f'must be an inline table such as {{ Modality = "MG" }}, got {show(value)}')
    problems: list[tuple[str, str]] = []
    for keyword, pattern in value.items():
        if tag_for_keyword(keyword) is None:
            hint = (
                did_you_mean(keyword, keyword_dict) or "; use a DICOM keyword such as 'Modality'"
            )
            problems.append((f".{keyword}", f"{keyword!r} is not a DICOM keyword{hint}"))
        elif not isinstance(pattern, str):
            problems.append((f".{keyword}", f"must be a pattern in quotes, got {show(pattern)}"))
    if problems:
        raise Bad(*problems)
    return tuple(sorted(value.items()))


_INTERFACE = re.compile(r"[^\s/:]{1,15}")


def interface_classes(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise bad(f'must be an inline table such as {{ wwan0 = "cellular" }}, got {show(value)}')
    problems: list[tuple[str, str]] = []
    for interface, link in value.items():
        if not _INTERFACE.fullmatch(interface):
            message = "is not a network interface name (1-15 characters, no spaces, '/' or ':')"
            problems.append((f".{interface}", message))
        else:
            try:
                choice(*LINK_CLASSES)(link)
            except Bad as error:
                problems += [(f".{interface}", message) for _, message in error.items]
    if problems:
        raise Bad(*problems)
    return tuple(sorted(value.items()))


def listen_target(value: Any) -> str:
    """Where a service listens: an IP address, or a network interface name (its addresses,
    whatever they are at the time). "localhost" is 127.0.0.1."""
    if value == "localhost":
        return "127.0.0.1"
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            if _INTERFACE.fullmatch(value) and not re.fullmatch(r"[0-9.]+", value):
                return value
    raise bad("must be an IP address such as '192.168.50.1' or an interface name such as "
              f"'enp1s0', got {show(value)}")


def listen_port(value: Any) -> str:
    """`ADDRESS:PORT` or `INTERFACE:PORT` (IPv6 in brackets: `[::1]:9100`)."""
    if isinstance(value, str) and ":" in value:
        target, port = value.rsplit(":", 1)
        try:
            PORT(int(port))
            return f"{listen_target(target)}:{int(port)}"
        except (Bad, ValueError):
            pass
    raise bad("must be 'address:port' or 'interface:port' such as '127.0.0.1:9100' or "
              f"'enp1s0:9100', got {show(value)}")


def subtable(spec: Spec, cls: type, example: str) -> Convert:
    """A converter for a nested table: every key checked, every problem reported."""

    def convert(value: Any) -> Any:
        if not isinstance(value, dict):
            raise bad(f"must be a table such as {example}, got {show(value)}")
        problems = [(f".{name}", unknown_key(name, spec)) for name in value if name not in spec]
        values = {}
        for name, (convert_one, required) in spec.items():
            if name not in value:
                if required is not None:
                    problems.append((f".{name}", f"missing; add {name} = {required}"))
                continue
            try:
                values[name] = convert_one(value[name])
            except Bad as error:
                problems += [(f".{name}{suffix}", message) for suffix, message in error.items]
        if problems:
            raise Bad(*problems)
        return cls(**values)

    return convert


PORT = integer_in(1, 65535)
SECONDS = number_in(0, above=True)
