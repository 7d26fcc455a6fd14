"""Checks of parsed TOML against the specs of each table: builds the Config, collecting
every problem with its line, key and fix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from appliance.config.model import (
    BoxConfig,
    Config,
    DestinationConfig,
    DetectConfig,
    Geofence,
    LinksConfig,
    ModalityConfig,
    MppsConfig,
    PolicyConfig,
    SiteConfig,
    TransmitConfig,
)
from appliance.config.problems import ConfigProblem
from appliance.config.scanner import line_of
from appliance.config.tls import tls_client_problems, tls_server_problems
from appliance.config.values import (
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
from appliance.worklist.config import WORKLIST, WorklistConfig


def max_pdu(value: Any) -> int:
    """A bounded maximum PDU: 0 (unlimited) would let a modality make the box hold a
    whole instance in memory (PRODUCT.md, Guarantees: memory is bounded)."""
    if value == 0 and isinstance(value, int) and not isinstance(value, bool):
        raise bad(f"0 (unlimited) is not allowed: the box bounds its memory; use "
                  f"{MIN_MAX_PDU}-{MAX_MAX_PDU}, or leave it out for {DEFAULT_MAX_PDU}")
    return int(integer_in(MIN_MAX_PDU, MAX_MAX_PDU)(value))


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


class Checker:
    """Builds a Config from parsed TOML, collecting every problem on the way."""

    def __init__(self, source: str, lines: Mapping[str, int]) -> None:
        self.source = source
        self.lines = lines
        self.problems: list[ConfigProblem] = []

    def report(self, key: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.source, line_of(self.lines, key), key, message))

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

    def table(self, value: Any, key: str, allowed: Iterable[str],
              hint: str) -> dict[str, Any] | None:
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
