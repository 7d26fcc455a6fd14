"""The composition root: builds every part from the config and the hardware, wires them
together, starts and stops their threads. Nothing else: decisions live in the parts.

Data flows one way: receiving -> store -> studies (closing, routing) -> delivery. The
delivery workers ask `routing.Policy` (the current site, the snapshot, the traffic) and
never call back into the box. Threads: the DICOM listener (pynetdicom's), the supervisor
and its watchers, the closer, one delivery worker per destination, housekeeping, the
worklist sync, the precompressor, modality commitment reports, listening, the LED and
the control server. Workers wake on events, not on calls back upstream.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import TypeVarTuple
from wsgiref.simple_server import WSGIServer

from pynetdicom import evt

from appliance import dimse, metrics, status, systemd
from appliance.callers import Callers
from appliance.commands import PIN_SETTING, Actions, Commands, Handler
from appliance.commitment_scp import ModalityCommitment
from appliance.config import Config
from appliance.control import ControlError, ControlServer
from appliance.delivery import DestinationWorker
from appliance.hardware import Hardware, choose_hardware
from appliance.health import BOOTING, LED_PATTERNS
from appliance.inflight import InFlight
from appliance.keystore import FileKeystore
from appliance.led_follower import LedFollower
from appliance.listening import RETRY_S, Listening, NoInterfaces
from appliance.logs import event
from appliance.mpps import MppsService
from appliance.nodes import ECHO_TIMEOUT_S, NodeProber
from appliance.pacing import Pacing, Throttle
from appliance.precompress import Precompressor
from appliance.receiving import Receiver
from appliance.release import versions
from appliance.report import mpps_failures
from appliance.routing import Policy, destination_config, destination_id
from appliance.signals import CELLULAR, Link, Snapshot
from appliance.sites import (
    SiteDecision,
    SiteTracker,
    adoptable,
    candidate_site,
    decide_site,
    gather_evidence,
)
from appliance.status import View
from appliance.store import Store, StudyRecord
from appliance.studies import StudyCloser
from appliance.supervisor import Supervisor, Watcher
from appliance.worklist.cache import Worklist

__all__ = ["Box", "Hardware", "choose_hardware"]

log = logging.getLogger("fluxbox.app")

Args = TypeVarTuple("Args")

PACING_SETTING = "pacing"
HOUSEKEEPING_S = 60.0
FRONT_PANEL_S = 2.0


class Box:
    """The running appliance."""

    def __init__(self, config: Config, hardware: Hardware | None = None) -> None:
        dimse.configure()
        self.config = config
        box = config.box
        key = FileKeystore(box.key_path).load_or_create()
        self.store = Store(box.data_dir, key, reserve_bytes=box.reserve_mb * 1024 * 1024)
        self.repair = self.store.repair()
        # A C-STORE that keeps coming is cut once it has eaten half the reserve: below the
        # reserve new instances are refused (0xA700), and the index still has room.
        dimse.guard_disk(self.store.blob_dir, keep_free_bytes=self.store.reserve_bytes // 2)
        self.hardware = hardware or choose_hardware(config)
        self.stop_event = threading.Event()
        self.closer_wake = threading.Event()
        self.tracker = SiteTracker(config.detect.hold_s)
        self.snapshot = Snapshot(taken_at=0.0)
        self.evidence: dict[str, list[str]] = {}
        self.policy = Policy(config, current_site=lambda: self.current_site().id,
                             snapshot=lambda: self.snapshot,
                             cellular_used=lambda now: self.store.traffic(CELLULAR, now))
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
        self._metrics: dict[str, WSGIServer] = {}  # address -> the Prometheus endpoint's server
        if box.metrics_listen:
            target = box.metrics_listen.rsplit(":", 1)[0]
            self.listening.append(Listening("metrics", (target,), addresses, self._bind_metrics))
        # Sends in flight by study: assign waits for them (never the old site's PACS after).
        self.in_flight = InFlight()
        self.closer = StudyCloser(self.store, config, self.receiver.associations.studies,
                                  self.in_flight)
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

        def read_links() -> tuple[tuple[Link, ...], dict[str, str | None]]:
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

    def on_snapshot(self, snap: Snapshot) -> None:
        """Each supervisor tick: keep the snapshot, step the site decision. A change of
        site is logged, recorded and acted on here; the supervisor wants nothing back."""
        self.snapshot = snap
        self._observe_worklist(snap)
        if self.config.detect.mode != "auto":
            return
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
        take that site (`sites.adoptable`). A decision without a site adopts nothing."""
        if not decision.id:
            return 0
        detect = self.config.detect
        studies = adoptable(self.store.studies(), self.current_position(), now,
                            within_s=detect.adopt_within_s, radius_m=detect.adopt_radius_m)
        for study in studies:
            self._assign(study, decision.id, decision.source or "gps", now)
        return len(studies)

    def _assign(self, study: StudyRecord, site_id: str, source: str, now: float) -> None:
        self.closer.assign(study, site_id, source, now)
        self.wake_delivery()

    # -- workers ---------------------------------------------------------------

    def _build_workers(self) -> dict[str, tuple[DestinationWorker, threading.Event]]:
        workers: dict[str, tuple[DestinationWorker, threading.Event]] = {}
        for site in self.config.sites:
            ids = [destination_id(site, d) for d in site.destinations]
            ids += [f"{site.id}/ris"] if site.mpps is not None else []
            for dest_id in ids:
                dest = destination_config(self.config, dest_id)
                worker = DestinationWorker(
                    self.store, dest_id, dest, self.config.transmit,
                    calling_ae=self.config.box.ae_title,
                    gate=self._gate_for(dest_id), link_class=self._link_class_for(dest_id),
                    pacing=self.pacing, throttle=self.throttle, in_flight=self.in_flight,
                )
                workers[dest_id] = (worker, threading.Event())
        return workers

    def _gate_for(self, dest_id: str) -> Callable[[StudyRecord, float], str | None]:
        return lambda study, now: self.policy.gate(study, dest_id, now)

    def _link_class_for(self, dest_id: str) -> Callable[[], str | None]:
        return lambda: self.policy.link_class(dest_id)

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
        if not self.config.box.listen and not self.config.box.refuses_unknown:
            event(log, "open to any caller on every address", logging.WARNING,
                  settings="box.listen,box.unknown_callers")
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
        if self.hardware.led is not None:
            self._spawn("front-panel", self._front_panel_loop,
                        LedFollower(self._health, self.hardware.led))
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

    def _front_panel_loop(self, led: LedFollower) -> None:
        """The LED follows the health state (the console reads status itself), from
        FRONT_PANEL_S after start: booting until then."""
        if not self.stop_event.wait(FRONT_PANEL_S):
            led.run(self.stop_event, FRONT_PANEL_S)

    def _health(self) -> str:
        """For the LED: the health state, or no answer (ControlError) when it cannot be
        worked out; the LED then shows booting, and fault after a while."""
        try:
            health: str = self.status_view()["health"]  # a state of appliance.health
            return health
        except Exception as exc:
            log.exception("front panel error")
            raise ControlError("no health") from exc

    def _spawn(self, name: str, target: Callable[[*Args], object], *args: *Args) -> None:
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
        running = [thread.name for thread in self._threads if thread.is_alive()]
        if running:
            event(log, "threads still running at stop", logging.WARNING,
                  threads=",".join(running))
        self.control.stop()
        for server in self._metrics.values():
            server.shutdown()
        self._metrics = {}
        self._save_pacing()
        if drained and not running:  # never close the index under a thread still using it
            self.store.close()
        event(log, "stopped", index_closed=drained and not running)

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

    def studies_view(self) -> list[View]:
        return status.studies_view(self.store, self.store.studies(), self.policy.study_block,
                                   ttl_h=self.config.transmit.ttl_h, now=time.time())

    def status_view(self) -> View:
        now = time.time()
        return status.status_view(self.store, self.config, self.studies_view(),
                                  self._status_parts(), now)

    def _status_parts(self) -> status.Parts:
        errors = [e for e in (w.last_error for w, _ in self.workers.values()) if e]
        errors += [e for e in (self.receiver.last_error, self.commitment.last_error) if e]
        unbound = [problem for lst in self.listening for problem in lst.problems()]
        errors += unbound
        errors += mpps_failures(self.store)
        return status.Parts(
            site=self.current_site().as_json(),
            detect={"mode": self.config.detect.mode, "evidence": self.evidence,
                    "confirmed_at": self.tracker.confirmed_at},
            link=status.link_view(self._shown_link(), self.snapshot.modem),
            errors=errors,
            receiver_running=self.receiver.running,
            receiving={"associations": self.receiver.associations.count(),
                       **self.receiver.counters},
            listening={lst.service: lst.view() for lst in self.listening},
            listen_problems=len(unbound),
            destinations=[
                {"id": dest_id, "last_success_at": w.last_success_at, "last_error": w.last_error,
                 "retry_at": w.retry_at, "last_round_at": w.last_round_at}
                for dest_id, (w, _) in self.workers.items()
            ],
            signals=self.supervisor.health(),
            worklist=self.worklist.status(time.time()),
            commitment=self.commitment.status(),
            versions=self.versions,
        )

    def _shown_link(self) -> Link | None:
        """The link to the current site's first destination (else the first site's)."""
        site = self.config.site(self.current_site().id or "") or (
            self.config.sites[0] if self.config.sites else None)
        if site is None or not site.destinations:
            return None
        return self.policy.link_to(destination_id(site, site.destinations[0]))

    def _commands(self) -> dict[str, Handler]:
        actions = Actions(assign=self._assign, retry_now=self._retry_now,
                          site_changed=self._site_changed, current_site=self.current_site)
        views: dict[str, Handler] = {"status": lambda args: self.status_view(),
                 "studies": lambda args: self.studies_view(),
                 "worklist": lambda args: self.worklist.entries_view()}
        return Commands(self.store, self.config, actions, views).table()

    def _retry_now(self) -> None:
        for worker, _ in self.workers.values():
            worker.retry_now()
        self.wake_delivery()

    def _site_changed(self) -> None:
        self.wake_delivery()
        self.worklist.poke()
