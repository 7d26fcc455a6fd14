"""The TOML config as frozen dataclasses.

Field names are the TOML keys of PRODUCT.md, spelled the same. Every error
names the file, line and key, and says how to fix it.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import pydicom.uid
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, keyword_dict, tag_for_keyword


@dataclass(frozen=True)
class BoxConfig:
    ae_title: str = "FLUXBOX"
    port: int = 11112
    data_dir: Path = Path("./var/fluxbox")
    key_dir: Path | None = None  # None: "<data_dir>-key", beside the data directory
    allowed_calling_aets: tuple[str, ...] = ()
    reserve_mb: int = 512  # below this much free space, new C-STOREs get 0xA700
    retention_days: float = 7.0  # complete studies are purged after this long
    max_pdu: int = 0  # 0: unlimited
    tls_cert: Path | None = None  # DICOM TLS on the box's own port: its certificate and key
    tls_key: Path | None = None
    tls_ca: Path | None = None  # if set, modalities must present a certificate it signed
    status_led: str = ""  # the front-panel LED's name under /sys/class/leds; "": none
    metrics_listen: str = ""  # "host:port" of the Prometheus endpoint; "": off

    @property
    def key_path(self) -> Path:
        return self.key_dir if self.key_dir is not None else Path(f"{self.data_dir}-key")


@dataclass(frozen=True)
class DetectConfig:
    mode: str = "auto"  # "auto" | "fixed"
    fixed_site: str = ""
    isolate: bool = True
    hold_s: float = 60.0  # a newly detected site must hold this long before it takes over
    adopt_within_s: float = 0.0  # held studies adopt a site confirmed this soon; 0: never
    adopt_radius_m: float = 300.0  # ... if the vehicle stayed within this distance
    node_interval_s: float = 60.0  # C-ECHO probes of each site's PACS, at most this often
    gps_max_age_s: float = 10.0  # an older fix gives no vote
    gps_max_error_m: float = 100.0  # a fix less precise than this gives no vote
    gpsd: str = "127.0.0.1:2947"  # where gpsd listens


@dataclass(frozen=True)
class TransmitConfig:
    batch: str = "study"  # "count" | "size" | "study"
    batch_count: int = 50
    batch_mb: int = 200
    associations: int = 1
    adaptive: bool = True
    max_kbps: int = 0
    study_quiet_s: float = 30.0
    forward: str = "on-study-complete"  # or "streaming"
    retry_initial_s: float = 5.0
    retry_max_s: float = 300.0
    connect_timeout_s: float = 10.0
    dimse_timeout_s: float = 60.0  # the least time allowed for an answer; adaptive may allow more
    max_kbps_wired: int = 0  # per link class caps, on top of max_kbps; 0: none
    max_kbps_wifi: int = 0
    max_kbps_cellular: int = 0
    stall_s: float = 20.0  # no bytes moving for this long: the association is dropped
    ttl_h: float = 24.0  # a study waiting longer needs attention (it keeps trying)
    mpps_wait_s: float = 600.0  # after MPPS COMPLETED, wait this long for listed instances


@dataclass(frozen=True)
class Geofence:
    lat: float
    lon: float
    radius_m: float


@dataclass(frozen=True)
class PolicyConfig:
    links: tuple[str, ...] = ("wired", "wifi", "cellular")
    windows: tuple[str, ...] = ()  # "HH:MM-HH:MM", optionally after days: "Mon-Fri 19:00-23:00"
    docked_ssids: tuple[str, ...] = ()  # if set, Wi-Fi carries studies only on these SSIDs
    cellular_mb_per_day: int = 0  # cellular budget; 0: unlimited
    cellular_mb_per_month: int = 0
    urgent_match: tuple[tuple[str, str], ...] = ()  # e.g. { StudyDescription = "*STAT*" }
    urgent_links: tuple[str, ...] = ("wired", "wifi", "cellular")  # urgent studies may use these


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    ae_title: str
    host: str
    port: int
    transfer_syntaxes: tuple[str, ...] = ()
    match: tuple[tuple[str, str], ...] = ()  # (DICOM keyword, pattern) pairs
    commitment: bool = False  # ask for Storage Commitment after delivery
    tls_ca: Path | None = None  # DICOM TLS: the CA that signs the destination's certificate
    tls_cert: Path | None = None  # the box's client certificate and key, where asked for
    tls_key: Path | None = None


# -- worklist (begin) -------------------------------------------------------------------


@dataclass(frozen=True)
class CodeMapping:
    """One row of the procedure code table: (code, scheme) -> the code to answer."""

    code: str
    scheme: str
    to_code: str
    to_scheme: str
    to_meaning: str


@dataclass(frozen=True)
class CorrectionsConfig:
    """Rules applied to every worklist entry at sync (see appliance/mwl_corrections.py)."""

    clean_characters: bool = True  # remove control and disallowed characters
    person_names: str = "keep"  # "keep" | "normalize" | "upper"
    truncate: bool = True  # cut values to their VR's maximum length
    procedure_codes: tuple[CodeMapping, ...] = ()
    unknown_codes: str = "keep"  # "keep" | "remove": codes procedure_codes does not list
    defaults: tuple[tuple[str, str], ...] = ()  # (attribute, value): where missing or empty
    copy: tuple[tuple[str, str], ...] = ()  # (target, source): where the target is empty
    move: tuple[tuple[str, str], ...] = ()  # (target, source): the source's value replaces
    # the target's, and the source goes


@dataclass(frozen=True)
class WorklistConfig:
    ae_title: str
    host: str
    port: int
    sync_interval_s: float = 300.0
    days_ahead: int = 2
    retry_interval_s: float = 30.0  # after a failed sync, try again this soon
    modality: str = ""  # sync only orders for this modality; "": any
    station_ae_title: str = ""  # sync only orders for this station; "": any
    name_matching: str = "case-insensitive"  # or "case-sensitive": PN keys of queries
    answer_character_set: str = ""  # "": the query's Specific Character Set, else ISO_IR 100
    server_character_set: str = ""  # for server answers that name none; "": ISO_IR 100
    unrepresentable: str = "transliterate"  # or "replace" ("?")
    corrections: CorrectionsConfig = field(default_factory=CorrectionsConfig)


# -- worklist (end) ---------------------------------------------------------------------


@dataclass(frozen=True)
class MppsConfig:
    """The site's RIS that takes Modality Performed Procedure Step messages."""

    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class SiteConfig:
    id: str
    name: str = ""
    geofence: Geofence | None = None
    networks: tuple[str, ...] = ()
    ssids: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()  # default gateway IP or MAC addresses seen only here
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    destinations: tuple[DestinationConfig, ...] = ()
    worklist: WorklistConfig | None = None
    mpps: MppsConfig | None = None


@dataclass(frozen=True)
class LinksConfig:
    # (interface name, link class) pairs, sorted: overrides the kernel's view of an interface
    classes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Config:
    box: BoxConfig = field(default_factory=BoxConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    transmit: TransmitConfig = field(default_factory=TransmitConfig)
    sites: tuple[SiteConfig, ...] = ()
    source: str = "<embedded default>"
    links: LinksConfig = field(default_factory=LinksConfig)

    def site(self, site_id: str) -> SiteConfig | None:
        return next((s for s in self.sites if s.id == site_id), None)


# --------------------------------------------------------------------------- loading

SYSTEM_CONFIG = Path("/etc/fluxbox/fluxbox.toml")
ENV_VAR = "FLUXBOX_CONFIG"
DEFAULT_SOURCE = "<embedded default>"
LINK_CLASSES = ("wired", "wifi", "cellular")


class ConfigProblem(NamedTuple):
    """One problem in a config: where it is, which key, and how to fix it."""

    source: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds every problem found."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate TOML text; raise ConfigError listing every problem."""
    try:
        data = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(exc, text, source)]) from None
    checker = _Checker(source, _LineScanner().scan(text))
    config = checker.config(data)
    if checker.problems:
        raise ConfigError(sorted(checker.problems, key=lambda p: (p.line is None, p.line or 0)))
    return config


def load_config(path: str | Path) -> Config:
    """Read, parse and validate the config file at ``path``."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        problem = ConfigProblem(source, None, "", f"cannot read the config file: {reason}")
        raise ConfigError([problem]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        raise ConfigError([ConfigProblem(source, line, "", message)]) from None
    return parse_config(text, source)


def default_config() -> Config:
    """The embedded default config (appliance/default.toml)."""
    text = resources.files("appliance").joinpath("default.toml").read_text(encoding="utf-8")
    return parse_config(text, DEFAULT_SOURCE)


def resolve_config(explicit: str | Path | None = None) -> Config:
    """The explicit file, else $FLUXBOX_CONFIG, else the system file, else the default."""
    if explicit:
        return load_config(explicit)
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return load_config(from_env)
    if SYSTEM_CONFIG.exists():
        return load_config(SYSTEM_CONFIG)
    return default_config()


_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


def _syntax_problem(exc: tomllib.TOMLDecodeError, text: str, source: str) -> ConfigProblem:
    """A TOML syntax error as a problem with the line tomllib names."""
    message = str(exc)
    line: int | None = None
    if at := _AT_LINE.search(message):
        line = int(at[1])
        message = f"{message[: at.start()]} at column {at[2]}"
    elif at := _AT_END.search(message):
        line = max(1, len(text.splitlines()))
        message = f"{message[: at.start()]} at end of file"
    return ConfigProblem(source, line, "", f"TOML syntax error: {message}")


# --------------------------------------------------------------------------- line numbers

_KEY = r"""[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*'"""
_DOTTED = rf"(?:{_KEY})(?:[ \t]*\.[ \t]*(?:{_KEY}))*"
_KEY_RE = re.compile(_KEY)
_HEADER_RE = re.compile(rf"[ \t]*(\[\[?)[ \t]*({_DOTTED})[ \t]*\]")
_ASSIGN_RE = re.compile(rf"[ \t]*({_DOTTED})[ \t]*=")
_LAST_PART = re.compile(r"(?:\.[^.\[\]]+|\[\d+\])$")


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def _key_parts(dotted: str) -> list[str]:
    return [key[1:-1] if key[0] in "\"'" else key for key in _KEY_RE.findall(dotted)]


def _line_of(lines: Mapping[str, int], key: str) -> int | None:
    """The line that sets ``key``, else that of the nearest enclosing key or table."""
    while key:
        if key in lines:
            return lines[key]
        parent = _LAST_PART.sub("", key, count=1)
        if parent == key:
            return None
        key = parent
    return None


class _LineScanner:
    """Maps key paths such as ``site[1].destination[0].port`` to the line that sets them."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}
        self._arrays: dict[str, int] = {}  # array-of-tables path -> blocks seen so far
        self._table = ""
        self._open: list[tuple[str, str | None]] = []  # open '[' / '{' and the inline table path
        self._string: str | None = None  # closing delimiter of an open multi-line string
        self._expect_key = False

    def scan(self, text: str) -> dict[str, int]:
        for number, line in enumerate(text.splitlines(), 1):
            self._line(number, line)
        return self.lines

    def _line(self, number: int, line: str) -> None:
        pos = 0
        if self._string:
            end = line.find(self._string)
            if end < 0:
                return
            self._string, pos = None, end + 3
        elif not self._open:
            self._statement(number, line)
            return
        self._value(number, line, pos, None)

    def _statement(self, number: int, line: str) -> None:
        if header := _HEADER_RE.match(line):
            self._header(number, header[1] == "[[", _key_parts(header[2]))
        elif assign := _ASSIGN_RE.match(line):
            path = self._table
            for part in _key_parts(assign[1]):  # a.b = 1 also sets table a
                path = _join(path, part)
                self.lines.setdefault(path, number)
            self._value(number, line, assign.end(), path)

    def _header(self, number: int, is_array: bool, parts: list[str]) -> None:
        path = ""
        for index, part in enumerate(parts):
            path = _join(path, part)
            if is_array and index == len(parts) - 1:
                count = self._arrays.get(path, 0)
                self._arrays[path] = count + 1
                self.lines.setdefault(path, number)
                path = f"{path}[{count}]"
            elif path in self._arrays:
                path = f"{path}[{self._arrays[path] - 1}]"
        self._table = path
        self.lines.setdefault(path, number)

    def _value(self, number: int, line: str, pos: int, path: str | None) -> None:
        """Scan a value from ``pos``, noting keys of inline tables."""
        pending = path  # the key path of a table opened next
        while pos < len(line):
            char = line[pos]
            if char in " \t":
                pos += 1
                continue
            if self._expect_key:
                self._expect_key = False
                if assign := _ASSIGN_RE.match(line, pos):
                    parent = self._open[-1][1]
                    pending = _join(parent, *_key_parts(assign[1])) if parent else None
                    if pending:
                        self.lines.setdefault(pending, number)
                    pos = assign.end()
                    continue
            if char == "#":
                return
            if char in "\"'":
                pos = self._skip_string(line, pos)
                if pos < 0:
                    return
            else:
                self._punctuation(char, pending)
                pos += 1
            pending = None

    def _punctuation(self, char: str, pending: str | None) -> None:
        if char == "{":
            self._open.append((char, pending))
            self._expect_key = True
        elif char == "[":
            self._open.append((char, None))
        elif char in "]}" and self._open:
            self._open.pop()
        elif char == "," and self._open and self._open[-1][0] == "{":
            self._expect_key = True

    def _skip_string(self, line: str, pos: int) -> int:
        """The position after the string starting at ``pos``; -1 if it runs past the line."""
        quote = line[pos]
        if line.startswith(quote * 3, pos):
            end = line.find(quote * 3, pos + 3)
            if end < 0:
                self._string = quote * 3
                return -1
            return end + 3
        pos += 1
        while pos < len(line):
            if line[pos] == "\\" and quote == '"':
                pos += 2
            elif line[pos] == quote:
                return pos + 1
            else:
                pos += 1
        return pos


# --------------------------------------------------------------------------- values

Convert = Callable[[Any], Any]
Spec = dict[str, tuple[Convert, str | None]]  # key -> (converter, example if required)


class _Bad(Exception):
    """Raised by a converter: (key suffix, message) for every problem in one value."""

    def __init__(self, *items: tuple[str, str]) -> None:
        super().__init__(*items)
        self.items = items


def _bad(message: str) -> _Bad:
    return _Bad(("", message))


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value) if isinstance(value, str) else str(value)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown(name: str, allowed: Iterable[str]) -> str:
    allowed = sorted(allowed)
    if hint := _did_you_mean(name, allowed):
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


def _integer(low: int, high: int | None = None, *, zero: bool = False) -> Convert:
    wanted = f"an integer {low}-{high}" if high is not None else f"an integer >= {low}"
    wanted = f"0 or {wanted}" if zero else wanted

    def convert(value: Any) -> int:
        if _is_int(value) and ((zero and value == 0) or _within(value, low, high)):
            return value
        raise _bad(f"must be {wanted}, got {_show(value)}{_unquote_hint(value)}")

    return convert


def _number(low: float, high: float | None = None, *, above: bool = False) -> Convert:
    if high is not None:
        wanted = f"a number {low:g} to {high:g}"
    else:
        wanted = f"a number > {low:g}" if above else f"a number >= {low:g}"

    def convert(value: Any) -> float:
        if _is_number(value) and _within(value, low, high) and not (above and value == low):
            return float(value)
        raise _bad(f"must be {wanted}, got {_show(value)}{_unquote_hint(value)}")

    return convert


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _bad(f"must be true or false, got {_show(value)}{_unquote_hint(value)}")


def _choice(*options: str) -> Convert:
    def convert(value: Any) -> str:
        if isinstance(value, str) and value in options:
            return value
        wanted = "one of " + ", ".join(repr(option) for option in options)
        hint = _did_you_mean(value, options) if isinstance(value, str) else ""
        raise _bad(f"must be {wanted}, got {_show(value)}{hint}")

    return convert


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _bad(f'must be a string in quotes, got {_show(value)}; write it as "..."')


_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _ident(value: Any) -> str:
    if isinstance(value, str) and _IDENT.fullmatch(value):
        return value
    raise _bad(
        "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
        f"got {_show(value)}"
    )


def _ae_title(value: Any) -> str:
    if (
        isinstance(value, str)
        and 1 <= len(value) <= 16
        and all(" " <= char <= "~" and char != "\\" for char in value)
        and value.strip()
    ):
        return value
    raise _bad(
        "must be an AE title: 1-16 printable ASCII characters, no backslash, not all spaces; "
        f"got {_show(value)}"
    )


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(?:\.[A-Za-z0-9_-]{1,63})*\.?")


def _host(value: Any) -> str:
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            if _HOSTNAME.fullmatch(value) and not re.fullmatch(r"[0-9.]+", value):
                return value
    raise _bad(f"must be an IP address or host name such as '10.20.1.5', got {_show(value)}")


def _host_port(value: Any) -> str:
    if isinstance(value, str) and value.count(":") == 1:
        host, port = value.split(":")
        try:
            _host(host)
            _PORT(int(port))
            return value
        except (_Bad, ValueError):
            pass
    raise _bad(f"must be 'host:port' such as '127.0.0.1:2947', got {_show(value)}")


def _path(value: Any) -> Path:
    if isinstance(value, str) and value:
        return Path(value)
    raise _bad(f"must be a directory path in quotes, e.g. '/var/lib/fluxbox', got {_show(value)}")


def _optional_path(value: Any) -> Path | None:
    return None if value == "" else _path(value)


def _list(convert: Convert, example: str) -> Convert:
    def convert_all(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _bad(f"must be an array such as {example}, got {_show(value)}")
        items: list[Any] = []
        problems: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            try:
                items.append(convert(item))
            except _Bad as bad:
                problems += [(f"[{index}]{suffix}", message) for suffix, message in bad.items]
        if problems:
            raise _Bad(*problems)
        return tuple(items)

    return convert_all


def _network(value: Any) -> str:
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_network(value))
        except ValueError:
            try:
                fixed = ipaddress.ip_network(value, strict=False)
            except ValueError:
                pass
            else:
                raise _bad(f"{value!r} has host bits set; did you mean '{fixed}'?") from None
    raise _bad(f"must be a network in CIDR notation such as '10.20.0.0/16', got {_show(value)}")


_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


def _gateway(value: Any) -> str:
    if isinstance(value, str):
        if _MAC.fullmatch(value):
            return value.lower()
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
    raise _bad(f"must be an IP address or a MAC address such as '00:1a:2b:3c:4d:5e', "
               f"got {_show(value)}")


def _ssid(value: Any) -> str:
    if isinstance(value, str) and 1 <= len(value.encode()) <= 32:
        return value
    raise _bad(f"must be a Wi-Fi network name of 1-32 bytes, got {_show(value)}")


_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAYS = r"(?:(?P<days>[A-Za-z]{3}(?:-[A-Za-z]{3})?(?:,[A-Za-z]{3}(?:-[A-Za-z]{3})?)*)\s+)?"
_WINDOW = re.compile(_DAYS + r"(\d\d):(\d\d)-(\d\d):(\d\d)")


def _window(value: Any) -> str:
    match = _WINDOW.fullmatch(value.strip()) if isinstance(value, str) else None
    days_ok = match is not None and all(
        day.lower() in _DAY_NAMES
        for day in re.split(r"[,-]", match.group("days") or "mon"))
    if match and days_ok:
        start_h, start_m, end_h, end_m = (int(part) for part in match.groups()[1:])
        start, end = start_h * 60 + start_m, end_h * 60 + end_m
        if start_h < 24 and start_m < 60 and end_m < 60 and end <= 24 * 60 and start != end:
            return value
    raise _bad(
        'must be a time window "HH:MM-HH:MM" (24-hour clock, start and end differ; '
        "it may wrap past midnight), optionally after days such as 'Mon-Fri' or 'Sat,Sun', "
        f"e.g. '19:00-23:00' or 'Mon-Fri 19:00-23:00', got {_show(value)}"
    )


def _link_classes(value: Any) -> tuple[str, ...]:
    links = _list(_choice(*LINK_CLASSES), '["wired", "wifi"]')(value)
    if not links:
        raise _bad('is empty, so no link may carry studies; list at least one, e.g. ["wired"]')
    return tuple(dict.fromkeys(links))


def _transfer_syntax_keywords() -> list[str]:
    return [
        name
        for name in dir(pydicom.uid)
        if isinstance(uid := getattr(pydicom.uid, name), pydicom.uid.UID) and uid.is_transfer_syntax
    ]


def _transfer_syntax(value: Any) -> str:
    if isinstance(value, str) and value.isidentifier():
        uid = getattr(pydicom.uid, value, None)
        if isinstance(uid, pydicom.uid.UID) and uid.is_transfer_syntax:
            return value
    keywords = _transfer_syntax_keywords()
    if isinstance(value, str):
        by_uid = [name for name in keywords if getattr(pydicom.uid, name) == value]
        hint = f"; write its keyword {by_uid[0]!r}" if by_uid else _did_you_mean(value, keywords)
    else:
        hint = ""
    raise _bad(
        "must be a pydicom transfer syntax keyword such as 'JPEGLSLossless', "
        f"got {_show(value)}{hint}"
    )


def _match(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _bad(f'must be an inline table such as {{ Modality = "MG" }}, got {_show(value)}')
    problems: list[tuple[str, str]] = []
    for keyword, pattern in value.items():
        if tag_for_keyword(keyword) is None:
            hint = (
                _did_you_mean(keyword, keyword_dict) or "; use a DICOM keyword such as 'Modality'"
            )
            problems.append((f".{keyword}", f"{keyword!r} is not a DICOM keyword{hint}"))
        elif not isinstance(pattern, str):
            problems.append((f".{keyword}", f"must be a pattern in quotes, got {_show(pattern)}"))
    if problems:
        raise _Bad(*problems)
    return tuple(sorted(value.items()))


_INTERFACE = re.compile(r"[^\s/:]{1,15}")


def _interface_classes(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _bad(f'must be an inline table such as {{ wwan0 = "cellular" }}, got {_show(value)}')
    problems: list[tuple[str, str]] = []
    for interface, link in value.items():
        if not _INTERFACE.fullmatch(interface):
            message = "is not a network interface name (1-15 characters, no spaces, '/' or ':')"
            problems.append((f".{interface}", message))
        else:
            try:
                _choice(*LINK_CLASSES)(link)
            except _Bad as bad:
                problems += [(f".{interface}", message) for _, message in bad.items]
    if problems:
        raise _Bad(*problems)
    return tuple(sorted(value.items()))


_PORT = _integer(1, 65535)
_SECONDS = _number(0, above=True)

_BOX: Spec = {
    "ae_title": (_ae_title, None),
    "port": (_PORT, None),
    "data_dir": (_path, None),
    "key_dir": (_optional_path, None),
    "allowed_calling_aets": (_list(_ae_title, '["MODALITY1"]'), None),
    "reserve_mb": (_integer(0), None),
    "retention_days": (_number(0), None),
    "max_pdu": (_integer(1024, 2**32 - 1, zero=True), None),
    "tls_cert": (_optional_path, None),
    "tls_key": (_optional_path, None),
    "tls_ca": (_optional_path, None),
    "status_led": (_text, None),
    "metrics_listen": (lambda v: "" if v == "" else _host_port(v), None),
}
_DETECT: Spec = {
    "mode": (_choice("auto", "fixed"), None),
    "fixed_site": (_text, None),
    "isolate": (_boolean, None),
    "hold_s": (_number(0), None),
    "adopt_within_s": (_number(0), None),
    "adopt_radius_m": (_number(0, above=True), None),
    "node_interval_s": (_SECONDS, None),
    "gps_max_age_s": (_SECONDS, None),
    "gps_max_error_m": (_SECONDS, None),
    "gpsd": (_host_port, None),
}
_TRANSMIT: Spec = {
    "batch": (_choice("count", "size", "study"), None),
    "batch_count": (_integer(1), None),
    "batch_mb": (_integer(1), None),
    "associations": (_integer(1, 16), None),
    "adaptive": (_boolean, None),
    "max_kbps": (_integer(0), None),
    "study_quiet_s": (_SECONDS, None),
    "forward": (_choice("on-study-complete", "streaming"), None),
    "retry_initial_s": (_SECONDS, None),
    "retry_max_s": (_SECONDS, None),
    "connect_timeout_s": (_SECONDS, None),
    "dimse_timeout_s": (_SECONDS, None),
    "max_kbps_wired": (_integer(0), None),
    "max_kbps_wifi": (_integer(0), None),
    "max_kbps_cellular": (_integer(0), None),
    "stall_s": (_SECONDS, None),
    "ttl_h": (_SECONDS, None),
    "mpps_wait_s": (_number(0), None),
}
_LINKS: Spec = {"classes": (_interface_classes, None)}
_SITE: Spec = {
    "id": (_ident, '"st-marys"'),
    "name": (_text, None),
    "networks": (_list(_network, '["10.20.0.0/16"]'), None),
    "ssids": (_list(_ssid, '["STMARYS-IMAGING"]'), None),
    "gateways": (_list(_gateway, '["10.20.0.1", "00:1a:2b:3c:4d:5e"]'), None),
}
_SITE_TABLES = ("geofence", "policy", "destination", "worklist", "mpps")
_SITE_HINTS = {
    "geofence": "{ lat = 51.5171, lon = -0.1742, radius_m = 400 }",
    "policy": "[site.policy]",
    "worklist": "[site.worklist]",
    "mpps": "[site.mpps]",
}
_MPPS: Spec = {
    "ae_title": (_ae_title, '"RIS"'),
    "host": (_host, '"10.20.1.6"'),
    "port": (_PORT, "104"),
}
_FAILED = object()  # a sub-table that has a problem
_GEOFENCE: Spec = {
    "lat": (_number(-90, 90), "51.5171"),
    "lon": (_number(-180, 180), "-0.1742"),
    "radius_m": (_number(0, above=True), "400"),
}
_POLICY: Spec = {
    "links": (_link_classes, None),
    "windows": (_list(_window, '["19:00-23:00"]'), None),
    "docked_ssids": (_list(_ssid, '["DEPOT-WIFI"]'), None),
    "cellular_mb_per_day": (_integer(0), None),
    "cellular_mb_per_month": (_integer(0), None),
    "urgent_match": (_match, None),
    "urgent_links": (_link_classes, None),
}
_DESTINATION: Spec = {
    "name": (_ident, '"pacs"'),
    "ae_title": (_ae_title, '"PACS"'),
    "host": (_host, '"10.20.1.5"'),
    "port": (_PORT, "104"),
    "transfer_syntaxes": (_list(_transfer_syntax, '["JPEGLSLossless"]'), None),
    "match": (_match, None),
    "commitment": (_boolean, None),
    "tls_ca": (_optional_path, None),
    "tls_cert": (_optional_path, None),
    "tls_key": (_optional_path, None),
}
# -- worklist (begin) -------------------------------------------------------------------


def _charset(value: Any) -> str:
    terms = value.split("\\") if isinstance(value, str) else None
    if terms is not None and (value == "" or all(t.strip() in python_encoding for t in terms)):
        return value
    hint = _did_you_mean(value, python_encoding) if isinstance(value, str) else ""
    raise _bad(f"must be a Specific Character Set defined term such as 'ISO_IR 100' or "
               f"'ISO_IR 192', or \"\" for the default, got {_show(value)}{hint}")


def _attribute_path(value: Any) -> str:
    """'Keyword' or 'SequenceKeyword.Keyword': DICOM keywords, sequences before the dot,
    not a sequence at the end."""
    parts = value.split(".") if isinstance(value, str) else []
    unknown = next((p for p in parts if tag_for_keyword(p) is None), None)
    if parts and unknown is None:
        kinds = [dictionary_VR(tag_for_keyword(part)) == "SQ" for part in parts]
        if all(kinds[:-1]) and not kinds[-1]:
            return value
    hint = _did_you_mean(unknown, keyword_dict) if unknown else ""
    raise _bad("must be a DICOM keyword such as 'Modality', or a sequence keyword and a "
               "keyword such as 'ScheduledProcedureStepSequence.Modality', got "
               f"{_show(value)}{hint}")


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{a = {b = 1}} (TOML's dotted keys) as {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        path = _join(prefix, key)
        flat.update(_flatten(value, path) if isinstance(value, dict) else {path: value})
    return flat


def _attribute_map(value_of: Convert, example: str) -> Convert:
    def convert(value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict):
            raise _bad(f"must be an inline table such as {example}, got {_show(value)}")
        problems: list[tuple[str, str]] = []
        pairs = []
        for path, item in _flatten(value).items():
            try:
                pairs.append((_attribute_path(path), value_of(item)))
            except _Bad as bad:
                problems += [(f".{path}", message) for _, message in bad.items]
        if problems:
            raise _Bad(*problems)
        return tuple(pairs)

    return convert


def _subtable(spec: Spec, cls: type, example: str) -> Convert:
    """A converter for a nested table: every key checked, every problem reported."""

    def convert(value: Any) -> Any:
        if not isinstance(value, dict):
            raise _bad(f"must be a table such as {example}, got {_show(value)}")
        problems = [(f".{name}", _unknown(name, spec)) for name in value if name not in spec]
        values = {}
        for name, (convert_one, required) in spec.items():
            if name not in value:
                if required is not None:
                    problems.append((f".{name}", f"missing; add {name} = {required}"))
                continue
            try:
                values[name] = convert_one(value[name])
            except _Bad as bad:
                problems += [(f".{name}{suffix}", message) for suffix, message in bad.items]
        if problems:
            raise _Bad(*problems)
        return cls(**values)

    return convert


_CODE_MAPPING: Spec = {
    "code": (_text, '"CTHD"'),
    "scheme": (_text, '"LOCAL"'),
    "to_code": (_text, '"CT-HEAD"'),
    "to_scheme": (_text, '"99FLX"'),
    "to_meaning": (_text, '"CT head"'),
}
_CODE_EXAMPLE = ('{ code = "CTHD", scheme = "LOCAL", to_code = "CT-HEAD", to_scheme = "99FLX", '
                 'to_meaning = "CT head" }')
_CORRECTIONS: Spec = {
    "clean_characters": (_boolean, None),
    "person_names": (_choice("keep", "normalize", "upper"), None),
    "truncate": (_boolean, None),
    "procedure_codes": (_list(_subtable(_CODE_MAPPING, CodeMapping, _CODE_EXAMPLE),
                              f"[{_CODE_EXAMPLE}]"), None),
    "unknown_codes": (_choice("keep", "remove"), None),
    "defaults": (_attribute_map(_text, '{ Modality = "CT" }'), None),
    "copy": (_attribute_map(_attribute_path, '{ RequestedProcedureDescription = '
                                             '"ScheduledProcedureStepDescription" }'), None),
    "move": (_attribute_map(_attribute_path, '{ PatientComments = "MedicalAlerts" }'), None),
}
_WORKLIST: Spec = {
    "ae_title": (_ae_title, '"RIS"'),
    "host": (_host, '"10.20.1.6"'),
    "port": (_PORT, "104"),
    "sync_interval_s": (_SECONDS, None),
    "days_ahead": (_integer(0, 365), None),
    "retry_interval_s": (_SECONDS, None),
    "modality": (_text, None),
    "station_ae_title": (lambda v: v if v == "" else _ae_title(v), None),
    "name_matching": (_choice("case-insensitive", "case-sensitive"), None),
    "answer_character_set": (_charset, None),
    "server_character_set": (_charset, None),
    "unrepresentable": (_choice("transliterate", "replace"), None),
    "corrections": (_subtable(_CORRECTIONS, CorrectionsConfig, "[site.worklist.corrections]"),
                    None),
}
# -- worklist (end) ---------------------------------------------------------------------
_TOP = ("box", "detect", "transmit", "links", "site")


# --------------------------------------------------------------------------- tables


class _Checker:
    """Builds a Config from parsed TOML, collecting every problem on the way."""

    def __init__(self, source: str, lines: Mapping[str, int]) -> None:
        self.source = source
        self.lines = lines
        self.problems: list[ConfigProblem] = []

    def report(self, key: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.source, _line_of(self.lines, key), key, message))

    def config(self, data: dict[str, Any]) -> Config:
        for name in data:
            if name not in _TOP:
                self.report(name, _unknown(name, _TOP))
        box = self.section(data, "box", _BOX, BoxConfig)
        detect = self.section(data, "detect", _DETECT, DetectConfig)
        transmit = self.section(data, "transmit", _TRANSMIT, TransmitConfig)
        links = self.section(data, "links", _LINKS, LinksConfig)
        raw_sites = data.get("site", [])
        sites = self.sites(raw_sites)
        self.check_retry(transmit)
        self.check_fixed_site(detect, raw_sites)
        return Config(box, detect, transmit, sites, self.source, links)

    def table(self, value: Any, key: str, allowed: Iterable[str], hint: str) -> dict | None:
        """``value`` if it is a table (reporting unknown keys in it), else None."""
        if not isinstance(value, dict):
            self.report(key, f"must be a table such as {hint}, got {_show(value)}")
            return None
        allowed = list(allowed)
        for name in value:
            if name not in allowed:
                self.report(_join(key, name), _unknown(name, allowed))
        return value

    def fields(self, table: dict[str, Any], key: str, spec: Spec) -> tuple[dict[str, Any], bool]:
        """The converted values of ``spec``'s keys, and whether all were present and good."""
        values: dict[str, Any] = {}
        good = True
        for name, (convert, example) in spec.items():
            if name not in table:
                if example is not None:
                    self.report(_join(key, name), f"missing; add {name} = {example}")
                    good = False
                continue
            try:
                values[name] = convert(table[name])
            except _Bad as bad:
                good = False
                for suffix, message in bad.items:
                    self.report(_join(key, name) + suffix, message)
        return values, good

    def section(self, data: dict[str, Any], name: str, spec: Spec, cls: type) -> Any:
        """A top-level table with only optional keys; defaults where absent or bad."""
        if name not in data:
            return cls()
        table = self.table(data[name], name, spec, f"[{name}]")
        return cls(**self.fields(table, name, spec)[0]) if table is not None else cls()

    def record(self, value: Any, key: str, spec: Spec, cls: type, hint: str) -> Any:
        """``cls`` built from the table at ``key``; None if it has a problem."""
        table = self.table(value, key, spec, hint)
        if table is None:
            return None
        values, good = self.fields(table, key, spec)
        return cls(**values) if good else None

    def tables(self, value: Any, key: str, header: str) -> list[dict[str, Any]] | None:
        """``value`` if it is an array of tables, else None."""
        if isinstance(value, dict):
            self.report(key, f"must be an array of tables: write [{header}], not {header}")
        elif not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.report(key, f"must be an array of tables, one [{header}] block each")
        else:
            return value
        return None

    def sites(self, value: Any) -> tuple[SiteConfig, ...]:
        raw = self.tables(value, "site", "[site]")
        if raw is None:
            return ()
        sites = [self.site(item, f"site[{index}]") for index, item in enumerate(raw)]
        self.check_unique(raw, "site", "id", "site id", "give each site its own id")
        return tuple(site for site in sites if site is not None)

    def site(self, raw: dict[str, Any], key: str) -> SiteConfig | None:
        self.table(raw, key, [*_SITE, *_SITE_TABLES], "[[site]]")
        values, good = self.fields(raw, key, _SITE)
        parts = {
            "geofence": self.part(raw, key, "geofence", _GEOFENCE, Geofence, None),
            "policy": self.part(raw, key, "policy", _POLICY, PolicyConfig, PolicyConfig()),
            "worklist": self.part(raw, key, "worklist", _WORKLIST, WorklistConfig, None),
            "mpps": self.part(raw, key, "mpps", _MPPS, MppsConfig, None),
        }
        destinations = self.destinations(raw, key)
        if not good or destinations is None or any(part is _FAILED for part in parts.values()):
            return None
        return SiteConfig(**values, **parts, destinations=destinations)

    def part(
        self, site: dict[str, Any], key: str, name: str, spec: Spec, cls: type, default: Any
    ) -> Any:
        """The site's sub-table ``name``: ``default`` if absent, _FAILED if it has a problem."""
        if name not in site:
            return default
        built = self.record(site[name], f"{key}.{name}", spec, cls, _SITE_HINTS[name])
        return _FAILED if built is None else built

    def destinations(self, site: dict[str, Any], key: str) -> tuple[DestinationConfig, ...] | None:
        key = f"{key}.destination"
        raw = self.tables(site.get("destination", []), key, "[site.destination]")
        if raw is None:
            return None
        if not raw:
            name = f"site {site['id']!r}" if isinstance(site.get("id"), str) else "this site"
            self.report(
                key,
                f"{name} has no destination; add a [[site.destination]] block "
                "with name, ae_title, host and port",
            )
            return None
        hint = "[[site.destination]]"
        found = [
            self.record(item, f"{key}[{index}]", _DESTINATION, DestinationConfig, hint)
            for index, item in enumerate(raw)
        ]
        self.check_unique(
            raw, key, "name", "destination name", "give each destination its own name"
        )
        return tuple(found) if all(found) else None

    def check_unique(
        self, items: list[dict[str, Any]], key: str, name: str, what: str, fix: str
    ) -> None:
        """Report each item whose ``name`` repeats that of an earlier item."""
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            value = item.get(name)
            if not isinstance(value, str):
                continue
            if value in seen:
                self.report(
                    f"{key}[{index}].{name}",
                    f"duplicate {what} {value!r}, also used by {key}[{seen[value]}]; {fix}",
                )
            else:
                seen[value] = index

    def check_retry(self, transmit: TransmitConfig) -> None:
        if transmit.retry_max_s < transmit.retry_initial_s:
            self.report(
                "transmit.retry_max_s",
                f"must be at least retry_initial_s ({transmit.retry_initial_s:g}); "
                "raise retry_max_s or lower retry_initial_s",
            )

    def check_fixed_site(self, detect: DetectConfig, raw_sites: Any) -> None:
        if any(problem.key.startswith("detect.") for problem in self.problems):
            return  # detect already has a problem; its values are not the ones written
        ids = [
            site["id"]
            for site in (raw_sites if isinstance(raw_sites, list) else [])
            if isinstance(site, dict) and isinstance(site.get("id"), str)
        ]
        choices = ", ".join(repr(site_id) for site_id in ids) or "none yet: add a [[site]]"
        if detect.mode == "fixed" and not detect.fixed_site:
            self.report(
                "detect.fixed_site",
                f'must name a site when mode = "fixed"; set it to a site id ({choices})',
            )
        elif detect.fixed_site and detect.fixed_site not in ids:
            hint = _did_you_mean(detect.fixed_site, ids) or f"; site ids: {choices}"
            self.report(
                "detect.fixed_site", f"{detect.fixed_site!r} is not the id of any [[site]]{hint}"
            )
