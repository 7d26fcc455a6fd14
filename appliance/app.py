"""Wiring: builds everything from the config, starts and stops the workers.

Threads: the DICOM listener (pynetdicom's), one closer loop, one delivery
worker per destination, one housekeeping loop and the control server. Workers
wake on signals (events), not on calls back upstream.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
import time
from datetime import datetime

from appliance import dimse  # noqa: F401  (applies pynetdicom settings)
from appliance.config import Config
from appliance.control import CommandError, ControlServer
from appliance.delivery import DestinationWorker
from appliance.health import HealthFacts, health_state
from appliance.keystore import FileKeystore
from appliance.logs import event
from appliance.receiving import Receiver
from appliance.report import study_view
from appliance.routing import block_reason, destination_id
from appliance.sites import SiteDecision, decide_site
from appliance.store import Store, StudyRecord
from appliance.studies import StudyCloser

log = logging.getLogger("fluxbox.app")

PIN_SETTING = "site_pin"
HOUSEKEEPING_S = 60.0


class Box:
    """The running appliance."""

    def __init__(self, config: Config) -> None:
        self.config = config
        box = config.box
        key = FileKeystore(box.key_path).load_or_create()
        self.store = Store(box.data_dir, key, reserve_bytes=box.reserve_mb * 1024 * 1024)
        self.repair = self.store.repair()
        # pynetdicom spools received datasets through tempfile: keep them on the data
        # partition, where start-up scrubs what a crash left behind.
        tempfile.tempdir = str(self.store.spool_dir)
        self.stop_event = threading.Event()
        self.closer_wake = threading.Event()
        self.receiver = Receiver(box, self.store, self.current_site, on_stored=self.closer_wake.set)
        self.closer = StudyCloser(self.store, config, self.receiver.associations.studies)
        self.workers = self._build_workers()
        self.control = ControlServer(box.data_dir, self._commands())
        self._threads: list[threading.Thread] = []

    # -- site and policy -------------------------------------------------------

    def current_site(self) -> SiteDecision:
        return decide_site(self.config, self.store.get_setting(PIN_SETTING))

    def link_class(self) -> str:
        return "wired"

    def gate(self, study: StudyRecord, now: float) -> str | None:
        """Why a study may not move now; None when it may."""
        if study.phase != "closed" and self.config.transmit.forward != "streaming":
            return "receiving"
        return block_reason(study, self.config, current_site=self.current_site().id,
                            link_class=self.link_class(), now=datetime.fromtimestamp(now))

    # -- workers ---------------------------------------------------------------

    def _build_workers(self) -> dict[str, tuple[DestinationWorker, threading.Event]]:
        workers = {}
        for site in self.config.sites:
            for dest in site.destinations:
                dest_id = destination_id(site, dest)
                worker = DestinationWorker(
                    self.store, dest_id, dest, self.config.transmit,
                    calling_ae=self.config.box.ae_title, gate=self.gate,
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
                purged = self.store.purge(time.time(), retention_s,
                                          below_bytes=2 * self.store.reserve_bytes)
                if purged:
                    event(log, "studies purged", count=purged)
            except Exception:
                log.exception("housekeeping error")

    def start(self) -> None:
        event(log, "starting", data_dir=self.config.box.data_dir, repaired=str(self.repair))
        self.receiver.start()
        self.control.start()
        self._spawn("closer", self._closer_loop)
        self._spawn("housekeeping", self._housekeeping_loop)
        for dest_id, (worker, wake) in self.workers.items():
            self._spawn(f"deliver-{dest_id}", worker.run, self.stop_event, wake)

    def _spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop accepting, let in-flight C-STOREs finish, stop workers, close the index."""
        event(log, "stopping")
        self.receiver.stop()
        self.stop_event.set()
        self.closer_wake.set()
        self.wake_delivery()
        for thread in self._threads:
            thread.join(timeout=30)
        self.control.stop()
        self.store.close()

    def run_forever(self) -> None:
        """`fluxbox run`: until SIGTERM or SIGINT."""
        done = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: done.set())
        self.start()
        try:
            while not done.wait(1.0):
                pass
        finally:
            self.stop()

    # -- views and commands ------------------------------------------------------

    def studies_view(self) -> list[dict]:
        now = time.time()
        return [study_view(self.store, s, self.gate(s, now)) for s in self.store.studies()]

    def status_view(self) -> dict:
        rows = self.studies_view()
        waiting = [r for r in rows if r["state"] != "complete"]
        pending = sum(d["pending"] for r in rows for d in r["destinations"])
        free = self.store.free_bytes()
        errors = [e for e in (w.last_error for w, _ in self.workers.values()) if e]
        if self.receiver.last_error:
            errors.append(self.receiver.last_error)
        if free < self.store.reserve_bytes:
            errors.append("disk below reserve: new studies are refused")
        facts = HealthFacts(
            disk_below_reserve=free < self.store.reserve_bytes,
            receiver_running=self.receiver.running,
            failed_studies=sum(r["state"] == "failed" for r in rows),
            held_studies=sum(r["state"] == "held" for r in rows),
            pending_instances=pending,
        )
        return {
            "site": self.current_site().as_json(),
            "link": {"class": self.link_class(), "rate_kbps": None},
            "queue": {
                "studies": len(waiting), "instances": pending,
                "bytes": sum(r["bytes"] for r in waiting),
            },
            "disk": {"free_bytes": free, "reserve_bytes": self.store.reserve_bytes},
            "health": health_state(facts),
            "errors": errors,
            "receiving": {"associations": self.receiver.associations.count(),
                          **self.receiver.counters},
            "destinations": [
                {"id": dest_id, "last_success_at": w.last_success_at, "last_error": w.last_error,
                 "retry_at": w.backoff.next_at or None}
                for dest_id, (w, _) in self.workers.items()
            ],
        }

    def _commands(self) -> dict:
        return {
            "status": lambda args: self.status_view(),
            "studies": lambda args: self.studies_view(),
            "site": self._cmd_site,
            "retry": self._cmd_retry,
            "worklist": lambda args: [],
        }

    def _cmd_site(self, args: dict) -> dict:
        action = args.get("action", "show")
        if action == "set":
            site_id = args.get("id", "")
            if self.config.site(site_id) is None:
                known = ", ".join(s.id for s in self.config.sites) or "none"
                raise CommandError(f"unknown site {site_id!r}; configured sites: {known}")
            self.store.set_setting(PIN_SETTING, site_id)
            event(log, "site pinned", site=site_id)
        elif action == "auto":
            self.store.set_setting(PIN_SETTING, None)
            event(log, "site released to detection")
        self.wake_delivery()
        return self.current_site().as_json()

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
