"""The TOML config as frozen dataclasses.

Field names are the TOML keys of PRODUCT.md, spelled the same. Every error
names the file, line and key, and says how to fix it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from appliance.config_tls import tls_client_problems, tls_server_problems
from appliance.config_values import (
    LINK_CLASSES,
    PORT,
    SECONDS,
    Bad,
    Spec,
    ae_title,
    bad,
    boolean,
    choice,
    did_you_mean,
    gateway,
    host_address,
    host_port,
    ident,
    integer_in,
    interface_classes,
    join_key,
    keyword_patterns,
    link_classes,
    list_of,
    listen_port,
    listen_target,
    network,
    number_in,
    optional_path,
    path,
    show,
    ssid,
    subtable,
    text,
    transfer_syntax,
    unknown_key,
    window,
)
from appliance.upper_layer import DEFAULT_MAX_PDU, MAX_MAX_PDU, MIN_MAX_PDU
from appliance.worklist.config import WORKLIST, CodeMapping, CorrectionsConfig, WorklistConfig

__all__ = [
    "DEFAULT_SOURCE",
    "ENV_VAR",
    "LINK_CLASSES",
    "SYSTEM_CONFIG",
    "BoxConfig",
    "CodeMapping",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "CorrectionsConfig",
    "DestinationConfig",
    "DetectConfig",
    "Geofence",
    "LinksConfig",
    "ModalityConfig",
    "MppsConfig",
    "PolicyConfig",
    "SiteConfig",
    "TransmitConfig",
    "WorklistConfig",
    "default_config",
    "load_config",
    "parse_config",
    "resolve_config",
]


@dataclass(frozen=True)
class ModalityConfig:
    """A modality that asks for Storage Commitment: where a report goes when the
    association that asked for it has closed (`[box.modalities.AE_TITLE]`)."""

    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class BoxConfig:
    ae_title: str = "FLUXBOX"
    port: int = 11112
    data_dir: Path = Path("./var/fluxbox")
    key_dir: Path | None = None  # None: "<data_dir>-key", beside the data directory
    allowed_calling_aets: tuple[str, ...] = ()
    # "accept" | "refuse" a calling AE title nobody configured; "": refuse only when
    # allowed_calling_aets names some (PRODUCT.md: an empty list lets any modality in)
    unknown_callers: str = ""
    listen: tuple[str, ...] = ()  # addresses and interface names of the DICOM port; (): all
    reserve_mb: int = 512  # below this much free space, new C-STOREs get 0xA700
    retention_days: float = 7.0  # complete studies are purged after this long
    max_pdu: int = DEFAULT_MAX_PDU  # the maximum PDU length announced to modalities
    tls_cert: Path | None = None  # DICOM TLS on the box's own port: its certificate and key
    tls_key: Path | None = None
    tls_ca: Path | None = None  # if set, modalities must present a certificate it signed
    status_led: str = ""  # the front-panel LED's name under /sys/class/leds; "": none
    metrics_listen: str = ""  # "address:port" or "interface:port" of Prometheus; "": off
    commitment_mode: str = "box"  # Storage Commitment for modalities: "box" | "pacs"
    modalities: tuple[ModalityConfig, ...] = ()  # where commitment reports go, by calling AE

    @property
    def refuses_unknown(self) -> bool:
        """Whether a calling AE title the config does not name is refused."""
        if self.unknown_callers:
            return self.unknown_callers == "refuse"
        return bool(self.allowed_calling_aets)

    def modality(self, ae_title: str) -> ModalityConfig | None:
        return next((m for m in self.modalities if m.ae_title == ae_title), None)

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
                path = join_key(path, part)
                self.lines.setdefault(path, number)
            self._value(number, line, assign.end(), path)

    def _header(self, number: int, is_array: bool, parts: list[str]) -> None:
        path = ""
        for index, part in enumerate(parts):
            path = join_key(path, part)
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
                    pending = join_key(parent, *_key_parts(assign[1])) if parent else None
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


# --------------------------------------------------------------------------- specs


def max_pdu(value: Any) -> int:
    """A bounded maximum PDU: 0 (unlimited) would let a modality make the box hold a
    whole instance in memory (PRODUCT.md, Guarantees: memory is bounded)."""
    if value == 0 and isinstance(value, int) and not isinstance(value, bool):
        raise bad(f"0 (unlimited) is not allowed: the box bounds its memory; use "
                  f"{MIN_MAX_PDU}-{MAX_MAX_PDU}, or leave it out for {DEFAULT_MAX_PDU}")
    return integer_in(MIN_MAX_PDU, MAX_MAX_PDU)(value)


_BOX: Spec = {
    "ae_title": (ae_title, None),
    "port": (PORT, None),
    "data_dir": (path, None),
    "key_dir": (optional_path, None),
    "allowed_calling_aets": (list_of(ae_title, '["MODALITY1"]'), None),
    "unknown_callers": (choice("accept", "refuse"), None),
    "listen": (list_of(listen_target, '["enp1s0"] or ["192.168.50.1"]'), None),
    "reserve_mb": (integer_in(0), None),
    "retention_days": (number_in(0), None),
    "max_pdu": (max_pdu, None),
    "tls_cert": (optional_path, None),
    "tls_key": (optional_path, None),
    "tls_ca": (optional_path, None),
    "status_led": (text, None),
    "metrics_listen": (lambda v: "" if v == "" else listen_port(v), None),
    "commitment_mode": (choice("box", "pacs"), None),
    "modalities": (lambda v: _modalities(v), None),
}
_MODALITY: Spec = {
    "host": (host_address, '"10.0.0.21"'),
    "port": (PORT, "104"),
}
_MODALITY_HINT = '[box.modalities.CT1] with host = "10.0.0.21" and port = 104'


def _modalities(value: Any) -> tuple[ModalityConfig, ...]:
    """`[box.modalities.AE_TITLE]` tables: the key is the modality's AE title."""
    if not isinstance(value, dict):
        raise Bad(("", f"must be a table of modalities keyed by AE title, such as "
                       f"{_MODALITY_HINT}; got {show(value)}"))
    read = subtable(_MODALITY, dict, _MODALITY_HINT)
    problems: list[tuple[str, str]] = []
    found = []
    for title, table in value.items():
        try:
            ae_title(title)
            found.append(ModalityConfig(title, **read(table)))
        except Bad as error:
            problems += [(f".{title}{suffix}", message) for suffix, message in error.items]
    if problems:
        raise Bad(*problems)
    return tuple(found)


_DETECT: Spec = {
    "mode": (choice("auto", "fixed"), None),
    "fixed_site": (text, None),
    "isolate": (boolean, None),
    "hold_s": (number_in(0), None),
    "adopt_within_s": (number_in(0), None),
    "adopt_radius_m": (number_in(0, above=True), None),
    "node_interval_s": (SECONDS, None),
    "gps_max_age_s": (SECONDS, None),
    "gps_max_error_m": (SECONDS, None),
    "gpsd": (host_port, None),
}
_TRANSMIT: Spec = {
    "batch": (choice("count", "size", "study"), None),
    "batch_count": (integer_in(1), None),
    "batch_mb": (integer_in(1), None),
    "associations": (integer_in(1, 16), None),
    "adaptive": (boolean, None),
    "max_kbps": (integer_in(0), None),
    "study_quiet_s": (SECONDS, None),
    "forward": (choice("on-study-complete", "streaming"), None),
    "retry_initial_s": (SECONDS, None),
    "retry_max_s": (SECONDS, None),
    "connect_timeout_s": (SECONDS, None),
    "dimse_timeout_s": (SECONDS, None),
    "max_kbps_wired": (integer_in(0), None),
    "max_kbps_wifi": (integer_in(0), None),
    "max_kbps_cellular": (integer_in(0), None),
    "stall_s": (SECONDS, None),
    "ttl_h": (SECONDS, None),
    "mpps_wait_s": (number_in(0), None),
}
_LINKS: Spec = {"classes": (interface_classes, None)}
_SITE: Spec = {
    "id": (ident, '"st-marys"'),
    "name": (text, None),
    "networks": (list_of(network, '["10.20.0.0/16"]'), None),
    "ssids": (list_of(ssid, '["STMARYS-IMAGING"]'), None),
    "gateways": (list_of(gateway, '["10.20.0.1", "00:1a:2b:3c:4d:5e"]'), None),
}
_SITE_TABLES = ("geofence", "policy", "destination", "worklist", "mpps")
_SITE_HINTS = {
    "geofence": "{ lat = 51.5171, lon = -0.1742, radius_m = 400 }",
    "policy": "[site.policy]",
    "worklist": "[site.worklist]",
    "mpps": "[site.mpps]",
}
_MPPS: Spec = {
    "ae_title": (ae_title, '"RIS"'),
    "host": (host_address, '"10.20.1.6"'),
    "port": (PORT, "104"),
}
_FAILED = object()  # a sub-table that has a problem
_GEOFENCE: Spec = {
    "lat": (number_in(-90, 90), "51.5171"),
    "lon": (number_in(-180, 180), "-0.1742"),
    "radius_m": (number_in(0, above=True), "400"),
}
_POLICY: Spec = {
    "links": (link_classes, None),
    "windows": (list_of(window, '["19:00-23:00"]'), None),
    "docked_ssids": (list_of(ssid, '["DEPOT-WIFI"]'), None),
    "cellular_mb_per_day": (integer_in(0), None),
    "cellular_mb_per_month": (integer_in(0), None),
    "urgent_match": (keyword_patterns, None),
    "urgent_links": (link_classes, None),
}
_DESTINATION: Spec = {
    "name": (ident, '"pacs"'),
    "ae_title": (ae_title, '"PACS"'),
    "host": (host_address, '"10.20.1.5"'),
    "port": (PORT, "104"),
    "transfer_syntaxes": (list_of(transfer_syntax, '["JPEGLSLossless"]'), None),
    "match": (keyword_patterns, None),
    "commitment": (boolean, None),
    "tls_ca": (optional_path, None),
    "tls_cert": (optional_path, None),
    "tls_key": (optional_path, None),
}
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
                self.report(name, unknown_key(name, _TOP))
        box = self.section(data, "box", _BOX, BoxConfig)
        detect = self.section(data, "detect", _DETECT, DetectConfig)
        transmit = self.section(data, "transmit", _TRANSMIT, TransmitConfig)
        links = self.section(data, "links", _LINKS, LinksConfig)
        raw_sites = data.get("site", [])
        sites = self.sites(raw_sites)
        self.check_retry(transmit)
        self.check_fixed_site(detect, raw_sites)
        self.check_tls("box", box, tls_server_problems)
        self.check_callers(box)
        return Config(box, detect, transmit, sites, self.source, links)

    def table(self, value: Any, key: str, allowed: Iterable[str], hint: str) -> dict | None:
        """``value`` if it is a table (reporting unknown keys in it), else None."""
        if not isinstance(value, dict):
            self.report(key, f"must be a table such as {hint}, got {show(value)}")
            return None
        allowed = list(allowed)
        for name in value:
            if name not in allowed:
                self.report(join_key(key, name), unknown_key(name, allowed))
        return value

    def fields(self, table: dict[str, Any], key: str, spec: Spec) -> tuple[dict[str, Any], bool]:
        """The converted values of ``spec``'s keys, and whether all were present and good."""
        values: dict[str, Any] = {}
        good = True
        for name, (convert, example) in spec.items():
            if name not in table:
                if example is not None:
                    self.report(join_key(key, name), f"missing; add {name} = {example}")
                    good = False
                continue
            try:
                values[name] = convert(table[name])
            except Bad as error:
                good = False
                for suffix, message in error.items:
                    self.report(join_key(key, name) + suffix, message)
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
            "worklist": self.part(raw, key, "worklist", WORKLIST, WorklistConfig, None),
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
        for index, destination in enumerate(found):
            if destination is not None:
                self.check_tls(f"{key}[{index}]", destination, tls_client_problems)
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

    def check_tls(self, key: str, settings: Any, problems: Any) -> None:
        """A TLS setting is complete or refused: never a half that silently means clear text."""
        for name, message in problems(settings.tls_cert, settings.tls_key, settings.tls_ca):
            self.report(f"{key}.{name}", message)

    def check_callers(self, box: BoxConfig) -> None:
        if box.unknown_callers == "accept" and box.allowed_calling_aets:
            self.report(
                "box.unknown_callers",
                '"accept" lets any caller in, so allowed_calling_aets would mean nothing; '
                'use "refuse", or empty allowed_calling_aets',
            )

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
            hint = did_you_mean(detect.fixed_site, ids) or f"; site ids: {choices}"
            self.report(
                "detect.fixed_site", f"{detect.fixed_site!r} is not the id of any [[site]]{hint}"
            )
