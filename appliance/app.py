"""Wiring: builds everything from the config, picks the hardware adapters, starts and
stops the workers.

Threads: the DICOM listener (pynetdicom's), the supervisor and its watchers, one
closer loop, one delivery worker per destination, housekeeping and the control
server. Workers wake on signals (events), not on calls back upstream. This is
the only module that chooses `hw` adapters.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from pynetdicom import evt

from appliance import (
    dimse,  # noqa: F401  (applies pynetdicom settings)
    metrics,
    systemd,
)
from appliance.callers import Callers
from appliance.commitment_scp import ModalityCommitment
from appliance.config import Config, DestinationConfig
from appliance.control import CommandError, ControlServer
from appliance.delivery import DestinationWorker
from appliance.health import BOOTING, LED_PATTERNS, HealthFacts, StatusLed, health_state
from appliance.keystore import FileKeystore
from appliance.listening import RETRY_S, InterfaceAddresses, Listening, NoInterfaces
from appliance.logs import event
from appliance.mpps import MppsService
from appliance.nodes import ECHO_TIMEOUT_S, NodeProber
from appliance.pacing import Pacing, Throttle
from appliance.precompress import Precompressor
from appliance.receiving import Receiver
from appliance.release import versions
from appliance.report import study_view
from appliance.routing import (
    ANOTHER_SITE,
    POLICY_WINDOW,
    SITE_UNKNOWN,
    delivery_block,
    destination_id,
    link_for,
    next_window_start,
)
from appliance.signals import (
    CELLULAR,
    LINK_CLASSES,
    OFFLINE,
    HotplugSource,
    LinkSource,
    ModemSource,
    PositionSource,
    Snapshot,
)
from appliance.sites import (
    SiteChange,
    SiteDecision,
    SiteTracker,
    candidate_site,
    decide_site,
    distance_m,
    gather_evidence,
)
from appliance.store import Store, StudyRecord, destination_site
from appliance.studies import StudyCloser, assign_refusal
from appliance.supervisor import Supervisor, Watcher
from appliance.worklist import Worklist

log = logging.getLogger("fluxbox.app")

PIN_SETTING = "site_pin"
PACING_SETTING = "pacing"
HOUSEKEEPING_S = 60.0
FRONT_PANEL_S = 2.0
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


def _median_latency(rows: list[dict], recent: int = 50) -> float | None:
    """Median seconds from arrival to complete over the most recent complete studies."""
    done = sorted((r["completed_at"], r["completed_at"] - r["received_at"]) for r in rows
                  if r["completed_at"])[-recent:]
    if not done:
        return None
    spans = sorted(span for _, span in done)
    return spans[len(spans) // 2]


class Box:
    """The running appliance."""

    def __init__(self, config: Config, hardware: Hardware | None = None) -> None:
        self.config = config
        box = config.box
        key = FileKeystore(box.key_path).load_or_create()
        self.store = Store(box.data_dir, key, reserve_bytes=box.reserve_mb * 1024 * 1024)
        self.repair = self.store.repair()
        # pynetdicom spools received datasets through tempfile: keep them on the data
        # partition, where start-up scrubs what a crash left behind.
        tempfile.tempdir = str(self.store.spool_dir)
        self.hardware = hardware or choose_hardware(config)
        self.stop_event = threading.Event()
        self.closer_wake = threading.Event()
        self.tracker = SiteTracker(config.detect.hold_s)
        self.snapshot = Snapshot(taken_at=0.0)
        self.evidence: dict[str, list[str]] = {}
        self.nodes = NodeProber(config)
        self.supervisor = Supervisor(self._watchers(), on_snapshot=self.on_snapshot)
        self.worklist = Worklist(self.store, config, lambda: self.current_site().id,
                                 calling_ae=box.ae_title)
        self.mpps = MppsService(self.store, config, self.current_site,
                                on_completed=self._mpps_completed,
                                on_queued=lambda: self.wake_delivery())
        self.commitment = ModalityCommitment(self.store, box, config.transmit)
        self.receiver = Receiver(box, self.store, self.current_site, on_stored=self.closer_wake.set,
                                 position=self.current_position,
                                 extra_handlers=[(evt.EVT_C_FIND, self.worklist.on_c_find),
                                                 (evt.EVT_N_CREATE, self.mpps.on_n_create),
                                                 (evt.EVT_N_SET, self.mpps.on_n_set),
                                                 (evt.EVT_N_ACTION, self.commitment.on_n_action)],
                                 callers=Callers.from_config(config))
        addresses = self.hardware.addresses or NoInterfaces()
        self.listening = [Listening("dicom", box.listen, addresses, self.receiver.bind)]
        self._metrics: dict[str, object] = {}  # address -> the Prometheus endpoint's server
        if box.metrics_listen:
            target = box.metrics_listen.rsplit(":", 1)[0]
            self.listening.append(Listening("metrics", (target,), addresses, self._bind_metrics))
        self.closer = StudyCloser(self.store, config, self.receiver.associations.studies)
        saved = self.store.get_setting(PACING_SETTING)
        self.pacing = Pacing(config.transmit, json.loads(saved) if saved else None)
        self.throttle = Throttle(config.transmit)  # one for all destinations: caps are global
        self.workers = self._build_workers()
        self.precompressor = Precompressor(self.store, config,
                                           lambda: self.receiver.associations.count() > 0)
        self.control = ControlServer(box.data_dir, self._commands())
        self._threads: list[threading.Thread] = []
        self.versions = versions()

    # -- signals and site ------------------------------------------------------------

    def _mpps_completed(self, study_uid: str, instance_uids: list[str]) -> None:
        self.closer.expect(study_uid, instance_uids, time.time())
        self.closer_wake.set()

    def _destination_hosts(self) -> list[str]:
        worklists = {s.worklist.host for s in self.config.sites if s.worklist is not None}
        ris = {s.mpps.host for s in self.config.sites if s.mpps is not None}
        return sorted({d.host for s in self.config.sites for d in s.destinations} | worklists
                      | ris)

    def _watchers(self) -> list[Watcher]:
        hw, hosts = self.hardware, self._destination_hosts()

        def read_links():
            return (hw.links.links().links, {h: hw.links.route_interface(h) for h in hosts})

        watchers = [
            Watcher("position", hw.position.position, interval_s=1.0, timeout_s=10.0),
            Watcher("links", read_links, interval_s=5.0, timeout_s=15.0),
            Watcher("modem", hw.modem.modem, interval_s=10.0, timeout_s=15.0),
        ]
        if self.config.detect.mode == "auto":
            timeout = 2 * ECHO_TIMEOUT_S * max(1, len(self.config.sites)) + 10
            # The prober keeps its own per-site pace; polling it as often as a site may be
            # probed keeps an answering site's evidence fresh.
            watchers.append(Watcher("nodes", self.nodes.probe_once,
                                    interval_s=self.config.detect.node_interval_s,
                                    timeout_s=timeout))
        return watchers

    def on_snapshot(self, snap: Snapshot) -> SiteChange | None:
        """Each supervisor tick: keep the snapshot, step the site decision."""
        self.snapshot = snap
        self._observe_worklist(snap)
        if self.config.detect.mode != "auto":
            return None
        self.evidence = gather_evidence(self.config, snap)
        change = self.tracker.step(candidate_site(self.evidence), self.evidence, snap.taken_at)
        if change is not None:
            event(log, "site changed", before=change.before.id or "unknown",
                  after=change.after.id or "unknown", source=change.after.source or "-",
                  evidence="; ".join(f"{k}: {', '.join(v)}" for k, v in self.evidence.items())
                  or "none")
            self.store.add_event("site changed", snap.taken_at, before=change.before.id,
                                 after=change.after.id, evidence=self.evidence)
            if change.after.id:
                self.adopt_held(change.after, snap.taken_at)
            self.wake_delivery()
        return change

    def _observe_worklist(self, snap: Snapshot) -> None:
        """A new site, or a route to its worklist server again: the worklist syncs now."""
        site = self.config.site(self.current_site().id or "")
        host = site.worklist.host if site is not None and site.worklist is not None else None
        self.worklist.observe(site.id if site else None, bool(host and snap.routes.get(host)))

    def current_site(self) -> SiteDecision:
        return decide_site(self.config, self.store.get_setting(PIN_SETTING),
                           self.tracker.current)

    def current_position(self) -> tuple[float, float] | None:
        fix = self.snapshot.position
        return (round(fix.lat, 6), round(fix.lon, 6)) if fix is not None else None

    def adopt_held(self, decision: SiteDecision, now: float) -> int:
        """Held studies acquired shortly before a site was confirmed, at the same place,
        take that site, if `adopt_within_s` allows it. Never by guess: both time and
        position must agree."""
        window_s, radius_m = self.config.detect.adopt_within_s, self.config.detect.adopt_radius_m
        here = self.current_position()
        if not window_s or here is None:
            return 0
        adopted = 0
        for study in self.store.studies():
            if study.site is not None or study.position is None:
                continue
            if now - study.first_at > window_s or distance_m(*study.position, *here) > radius_m:
                continue
            self._assign(study, decision.id, decision.source or "gps", now)
            adopted += 1
        return adopted

    def _assign(self, study: StudyRecord, site_id: str, source: str, now: float) -> None:
        self.closer.assign(study, site_id, source, now)
        self.wake_delivery()

    # -- policy ------------------------------------------------------------------------

    def _destination(self, dest_id: str) -> DestinationConfig:
        """A site's destination by id; "SITE/ris" is its MPPS relay to the RIS."""
        site_id, name = dest_id.split("/", 1)
        site = self.config.site(site_id)
        if name == "ris" and site.mpps is not None:
            return DestinationConfig("ris", site.mpps.ae_title, site.mpps.host, site.mpps.port)
        return next(d for d in site.destinations if d.name == name)

    def link_to(self, dest_id: str):
        return link_for(self._destination(dest_id).host, self.snapshot,
                        self.config.links.classes)

    def gate(self, study: StudyRecord, dest_id: str, now: float) -> str | None:
        """Why a study may not move to `dest_id` now; None when it may."""
        if destination_site(dest_id) != study.site:
            return ANOTHER_SITE  # before any look-up: a destination of no configured site
        return delivery_block(
            study, dest_id, self.config, current_site=self.current_site().id,
            link=self.link_to(dest_id), now=datetime.fromtimestamp(now),
            cellular_used_bytes=self.store.traffic(CELLULAR, now),
        )

    def _link_class(self, dest_id: str) -> str | None:
        link = self.link_to(dest_id)
        return link.link_class if link is not None else None

    def _study_block(self, study: StudyRecord, now: float) -> str | None:
        """A study's block for display: the first of its destinations' blocks, if all block."""
        if not study.destinations:
            return study.held_reason or (None if study.site else SITE_UNKNOWN)
        blocks = [self.gate(study, d, now) for d in study.destinations]
        return blocks[0] if all(blocks) else None

    # -- workers ---------------------------------------------------------------

    def _build_workers(self) -> dict[str, tuple[DestinationWorker, threading.Event]]:
        workers = {}
        for site in self.config.sites:
            ids = [destination_id(site, d) for d in site.destinations]
            ids += [f"{site.id}/ris"] if site.mpps is not None else []
            for dest_id in ids:
                dest = self._destination(dest_id)
                worker = DestinationWorker(
                    self.store, dest_id, dest, self.config.transmit,
                    calling_ae=self.config.box.ae_title,
                    gate=lambda study, now, d=dest_id: self.gate(study, d, now),
                    link_class=lambda d=dest_id: self._link_class(d),
                    pacing=self.pacing, throttle=self.throttle,
                )
                workers[dest_id] = (worker, threading.Event())
        return workers

    def wake_delivery(self) -> None:
        for _, wake in self.workers.values():
            wake.set()

    def close_once(self, now: float | None = None) -> None:
        closed = self.closer.close_once(time.time() if now is None else now)
        if closed or self.config.transmit.forward == "streaming":
            self.wake_delivery()

    def _closer_loop(self) -> None:
        tick_s = min(1.0, max(0.1, self.config.transmit.study_quiet_s / 4))
        while not self.stop_event.is_set():
            try:
                self.close_once()
            except Exception:
                log.exception("closer error")
            self.closer_wake.wait(tick_s)
            self.closer_wake.clear()

    def _housekeeping_loop(self) -> None:
        retention_s = self.config.box.retention_days * 86400
        while not self.stop_event.wait(HOUSEKEEPING_S):
            try:
                self._save_pacing()
                purged = self.store.purge(time.time(), retention_s,
                                          below_bytes=2 * self.store.reserve_bytes)
                if purged:
                    event(log, "studies purged", count=purged)
            except Exception:
                log.exception("housekeeping error")

    def alive(self) -> bool:
        """For the watchdog: the supervisor ticks and every delivery worker runs."""
        workers_alive = all(t.is_alive() for t in self._threads if t.name.startswith("deliver-"))
        return self.supervisor.alive() and workers_alive

    def start(self) -> None:
        event(log, "starting", data_dir=self.config.box.data_dir, repaired=str(self.repair))
        self._show_led(BOOTING)
        self.supervisor.start()  # a first snapshot before the first study arrives
        self.receiver.start(())
        self._listen_once()
        self.control.start()
        if self.hardware.hotplug is not None:
            try:
                self.hardware.hotplug.watch(self.supervisor.poke)
            except Exception as exc:
                event(log, "hotplug unavailable", logging.WARNING, error=type(exc).__name__)
        self._spawn("closer", self._closer_loop)
        self._spawn("housekeeping", self._housekeeping_loop)
        self._spawn("worklist", self.worklist.run, self.stop_event)
        self._spawn("front-panel", self._front_panel_loop)
        self._spawn("precompress", self.precompressor.run, self.stop_event)
        self._spawn("commitment", self.commitment.run, self.stop_event)
        self._spawn("listen", self._listen_loop)
        for dest_id, (worker, wake) in self.workers.items():
            self._spawn(f"deliver-{dest_id}", worker.run, self.stop_event, wake)

    def _listen_once(self) -> None:
        for listening in self.listening:
            listening.step()

    def _listen_loop(self) -> None:
        """Interfaces without an address yet, or whose addresses changed, looked at again."""
        while not self.stop_event.wait(RETRY_S):
            try:
                self._listen_once()
            except Exception:
                log.exception("listen error")

    def _bind_metrics(self, addresses: tuple[str, ...]) -> tuple[str, ...]:
        """The Prometheus endpoint on exactly `addresses` (see `Listening`)."""
        port = int(self.config.box.metrics_listen.rsplit(":", 1)[1])
        for address in [a for a in self._metrics if a not in addresses]:
            self._metrics.pop(address).shutdown()
        for address in [a for a in addresses if a not in self._metrics]:
            try:
                self._metrics[address] = metrics.serve(self.status_view, address, port)
            except OSError as exc:
                event(log, "listen failed", logging.ERROR, service="metrics", address=address,
                      port=port, error=exc.strerror or type(exc).__name__)
        return tuple(self._metrics)

    def _show_led(self, state: str) -> None:
        if self.hardware.led is not None:
            self.hardware.led.show(LED_PATTERNS[state])

    def _front_panel_loop(self) -> None:
        """The LED follows the health state (the console reads status itself)."""
        while not self.stop_event.wait(FRONT_PANEL_S):
            try:
                self._show_led(self.status_view()["health"])
            except Exception:
                log.exception("front panel error")

    def _spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop accepting, let in-flight C-STOREs finish, stop workers, close the index."""
        event(log, "stopping")
        systemd.notify("STOPPING=1")
        drained = self.receiver.stop()
        self.stop_event.set()
        self.closer_wake.set()
        self.worklist.poke()
        self.commitment.wake.set()
        self.wake_delivery()
        if self.hardware.hotplug is not None:
            self.hardware.hotplug.stop()
        self.supervisor.stop()
        for thread in self._threads:
            thread.join(timeout=30)
        self.control.stop()
        for server in self._metrics.values():
            server.shutdown()
        self._metrics = {}
        self._save_pacing()
        if drained:  # never close the index under a handler that is still storing
            self.store.close()

    def _save_pacing(self) -> None:
        """Link figures survive restarts: the next start knows the link it had."""
        self.store.set_setting(PACING_SETTING, json.dumps(self.pacing.snapshot()))

    def run_forever(self) -> None:
        """`fluxbox run`: until SIGTERM or SIGINT. Feeds the systemd watchdog while alive."""
        done = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: done.set())
        self.start()
        systemd.notify("READY=1")
        try:
            while not done.wait(1.0):
                if self.alive():
                    systemd.notify("WATCHDOG=1")
        finally:
            self.stop()

    # -- views and commands ------------------------------------------------------

    def studies_view(self) -> list[dict]:
        """Every study; `overdue` marks one waiting past `transmit.ttl_h`. Nothing is ever
        deleted for being old and undelivered: it keeps trying, and health asks for a look."""
        now = time.time()
        ttl_s = self.config.transmit.ttl_h * 3600
        rows = []
        for study in self.store.studies():
            if study.kind != "study":
                continue
            row = study_view(self.store, study, self._study_block(study, now))
            row["overdue"] = row["state"] != "complete" and now - study.first_at > ttl_s
            rows.append(row)
        return rows

    def link_view(self) -> dict:
        site = self.config.site(self.current_site().id or "") or (
            self.config.sites[0] if self.config.sites else None)
        link = (self.link_to(destination_id(site, site.destinations[0]))
                if site and site.destinations else None)
        modem = self.snapshot.modem
        return {
            "class": link.link_class if link else OFFLINE,
            "interface": link.interface if link else None,
            "ssid": link.ssid if link else None, "vpn": bool(link and link.vpn),
            "metered": bool(link and link.metered),
            "rate_kbps": link.expected_kbps if link else None,
            "modem": None if modem is None else {
                "signal_percent": modem.signal_percent, "technology": modem.technology,
                "registration": modem.registration, "operator": modem.operator},
        }

    def status_view(self) -> dict:
        now = time.time()
        rows = self.studies_view()
        waiting = [r for r in rows if r["state"] != "complete"]
        pending = sum(d["pending"] for r in rows for d in r["destinations"])
        free = self.store.free_bytes()
        errors = [e for e in (w.last_error for w, _ in self.workers.values()) if e]
        if self.receiver.last_error:
            errors.append(self.receiver.last_error)
        if self.commitment.last_error:
            errors.append(self.commitment.last_error)
        if free < self.store.reserve_bytes:
            errors.append("disk below reserve: new studies are refused")
        unbound = [problem for lst in self.listening for problem in lst.problems()]
        errors += unbound
        facts = HealthFacts(
            disk_below_reserve=free < self.store.reserve_bytes,
            receiver_running=self.receiver.running,
            failed_studies=sum(r["state"] == "failed" for r in rows),
            held_studies=sum(r["state"] == "held" for r in rows),
            pending_instances=pending,
            overdue_studies=sum(r["overdue"] for r in rows),
            listen_waiting=len(unbound),
        )
        if facts.overdue_studies:
            errors.append(f"{facts.overdue_studies} studies waiting longer than "
                          f"{self.config.transmit.ttl_h:g} h")
        return {
            "site": self.current_site().as_json(),
            "detect": {"mode": self.config.detect.mode, "evidence": self.evidence,
                       "confirmed_at": self.tracker.confirmed_at},
            "link": self.link_view(),
            "queue": {
                "studies": len(waiting), "instances": pending,
                "bytes": sum(r["bytes"] for r in waiting),
            },
            "disk": {"free_bytes": free, "reserve_bytes": self.store.reserve_bytes},
            "health": health_state(facts),
            "errors": errors,
            "held": self._held_view(rows, now),
            "receiving": {"associations": self.receiver.associations.count(),
                          **self.receiver.counters},
            "listening": {lst.service: lst.view() for lst in self.listening},
            "destinations": [
                {"id": dest_id, "last_success_at": w.last_success_at, "last_error": w.last_error,
                 "retry_at": w.backoff.next_at or None}
                for dest_id, (w, _) in self.workers.items()
            ],
            "signals": self.supervisor.health(),
            "cellular_bytes": dict(zip(("today", "month"), self.store.traffic(CELLULAR, now),
                                       strict=True)),
            "worklist": self.worklist.status(now),
            "commitment": self.commitment.status(),
            "sent_bytes_month": {c: self.store.traffic(c, now)[1] for c in LINK_CLASSES},
            "delivery_latency_s": _median_latency(rows),
            "version": self.versions,
        }

    def _held_view(self, rows: list[dict], now: float) -> dict:
        """Held studies by reason, and when a window-held study may next move."""
        reasons: dict[str, int] = {}
        for row in rows:
            if row["state"] == "held":
                reasons[row["held_reason"]] = reasons.get(row["held_reason"], 0) + 1
        next_at = None
        if POLICY_WINDOW in reasons:
            starts = [next_window_start(s.policy.windows, datetime.fromtimestamp(now))
                      for s in self.config.sites if s.policy.windows]
            starts = [s for s in starts if s is not None]
            next_at = min(starts).isoformat() if starts else None
        return {"reasons": reasons, "next_window": next_at}

    def _commands(self) -> dict:
        return {
            "status": lambda args: self.status_view(),
            "studies": lambda args: self.studies_view(),
            "site": self._cmd_site,
            "retry": self._cmd_retry,
            "assign": self._cmd_assign,
            "worklist": lambda args: self.worklist.entries_view(),
        }

    def _cmd_site(self, args: dict) -> dict:
        action = args.get("action", "show")
        if action == "set":
            site_id = args.get("id", "")
            self._known_site(site_id)
            self.store.set_setting(PIN_SETTING, site_id)
            event(log, "site pinned", site=site_id)
        elif action == "auto":
            self.store.set_setting(PIN_SETTING, None)
            event(log, "site released to detection")
        self.wake_delivery()
        self.worklist.poke()
        return self.current_site().as_json()

    def _known_site(self, site_id: str) -> None:
        if self.config.site(site_id) is None:
            known = ", ".join(s.id for s in self.config.sites) or "none"
            raise CommandError(f"unknown site {site_id!r}; configured sites: {known}")

    def _cmd_assign(self, args: dict) -> dict:
        study = self.store.study_by_uid(args.get("study_uid") or "")
        if study is None:
            raise CommandError("no such study on this box")
        site_id = args.get("site_id") or ""
        self._known_site(site_id)
        refusal = assign_refusal(self.store, study, site_id)
        if refusal:
            raise CommandError(refusal)
        self._assign(study, site_id, "manual", time.time())
        return {"study_uid": study.study_uid, "site": site_id}

    def _cmd_retry(self, args: dict) -> dict:
        study_uid = args.get("study_uid")
        study_key = None
        if study_uid:
            study = self.store.study_by_uid(study_uid)
            if study is None:
                raise CommandError("no such study on this box")
            study_key = study.key
        moved = self.store.retry_failed(study_key, time.time())
        for worker, _ in self.workers.values():
            worker.backoff.clear()
        self.wake_delivery()
        return {"requeued": moved}
