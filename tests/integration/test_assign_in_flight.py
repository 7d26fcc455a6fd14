"""`assign` against sends in flight, with a real delivery worker and a pynetdicom PACS
(issue 8: never to the wrong hospital).

The box's own parts run in this process (store, closer, worker), so that the test can stop
the worker at the exact point where the race was: after the gate let an instance go, before
its C-STORE. Every wait has a deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pydicom
import pytest

from appliance.config import (
    Config,
    DestinationConfig,
    DetectConfig,
    SiteConfig,
    TransmitConfig,
)
from appliance.delivery import DestinationWorker
from appliance.inflight import InFlight, StudyBusy
from appliance.routing import delivery_block
from appliance.store import Store, StudyRecord
from appliance.studies import AssignRefused, StudyCloser
from appliance.validation import read_header
from tests.peers import CountingSCP

KEY = bytes(range(32))
QUIET_S = 10.0
DEADLINE_S = 20.0


def _config(pacs_port: int) -> Config:
    transmit = TransmitConfig(batch="count", batch_count=10, associations=1, adaptive=False,
                              study_quiet_s=QUIET_S, connect_timeout_s=5, dimse_timeout_s=30)
    a = SiteConfig(id="a", destinations=(
        DestinationConfig("pacs", "PACS", "127.0.0.1", pacs_port),))
    b = SiteConfig(id="b", destinations=(
        DestinationConfig("pacs", "B_PACS", "127.0.0.1", 9),))  # never reached here
    return Config(detect=DetectConfig(mode="auto"), transmit=transmit, sites=(a, b))


def _wait(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Box:
    """The box's store, closer and site a's PACS worker, wired as app.Box wires them, with
    one shared `InFlight`. The vehicle is at site a."""

    def __init__(self, tmp_path: Path, files: list[Path], pacs_port: int,
                 wait_s: float = 10.0) -> None:
        self.config = _config(pacs_port)
        self.store = Store(tmp_path / "data", KEY)
        self.in_flight = InFlight(wait_s=wait_s)
        self.closer = StudyCloser(self.store, self.config, lambda: set(), self.in_flight)
        self.pause: Callable[[], None] = lambda: None  # called after each gate verdict
        self.worker = DestinationWorker(
            self.store, "a/pacs", self.config.sites[0].destinations[0], self.config.transmit,
            calling_ae="FLUXBOX", gate=self.gate, in_flight=self.in_flight)
        now = time.time()
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            header = read_header(path, command_sop_class=ds.SOPClassUID,
                                 command_sop_instance=ds.SOPInstanceUID)
            self.store.put_instance(path, header, calling_aet="CT1", site="a",
                                    site_source="manual", now=now)
        self.closer.close_once(now + QUIET_S + 1)
        (self.study,) = self.store.studies()

    def gate(self, study: StudyRecord, now: float) -> str | None:
        """app.Box.gate for site a's PACS; `pause` runs between the verdict and its use."""
        verdict = delivery_block(study, "a/pacs", self.config, current_site="a", link=None,
                                 now=datetime.fromtimestamp(now))
        self.pause()
        return verdict

    def site(self) -> str | None:
        return self.store.study(self.study.key).site

    def close(self) -> None:
        self.store.close()


def _thread(target: Callable[[], object], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_an_instance_let_go_by_the_gate_never_reaches_the_old_site_after_assign(
        tmp_path, ct_study):
    """Issue 8: the gate let the first instance go, then `fluxbox assign` moved the study to
    site b before its C-STORE. The old site's PACS must receive nothing once the study is
    b's: assign waits for the send it let go, and then, the study being partly delivered
    to site a, refuses (a study is never split between two hospitals)."""
    arrivals: list[tuple[str, str | None]] = []  # (SOP Instance UID, study's site then)
    box: Box | None = None

    def at_arrival(ds) -> None:
        arrivals.append((str(ds.SOPInstanceUID), box.site()))

    with CountingSCP(ae_title="PACS", status_override=at_arrival) as pacs:
        box = Box(tmp_path, ct_study[:3], pacs.port)
        try:
            checked, go = threading.Event(), threading.Event()

            def pause_after_the_first_verdict() -> None:
                if not checked.is_set() and box.in_flight.is_sending(box.study.key):
                    checked.set()  # the verdict just before the first C-STORE is taken
                    assert go.wait(DEADLINE_S), "the test never let the worker go on"

            box.pause = pause_after_the_first_verdict
            errors: list[BaseException] = []
            worker = _thread(box.worker.deliver_once, errors)
            assert checked.wait(DEADLINE_S), "the worker never asked about an instance"
            refused: list[BaseException] = []
            assign = _thread(lambda: box.closer.assign(box.study, "b", "manual", time.time()),
                             refused)
            # the assign is either done (nothing held it) or waits for the send let go
            _wait(lambda: not assign.is_alive() or box.in_flight.is_moving(box.study.key),
                  "the assign to start")
            go.set()
            worker.join(DEADLINE_S)
            assign.join(DEADLINE_S)
            assert not worker.is_alive() and not assign.is_alive() and not errors, errors
            late = sum(1 for _, site in arrivals if site != "a")
            assert late == 0, f"{late} instance(s) reached site a's PACS once the study was b's"
            assert arrivals, "the instance let go before the assign was delivered"
            assert [type(e) for e in refused] == [AssignRefused], refused
            assert box.site() == "a"
        finally:
            box.close()


def test_assign_waits_for_an_instance_in_flight_then_refuses_when_it_takes_too_long(
        tmp_path, ct_study):
    """Issue 8: a C-STORE to the old site is in flight (the PACS holds its answer). assign
    waits for it, at most the guard's wait, then refuses and changes nothing."""
    arrived, release = threading.Event(), threading.Event()

    def hold_the_first(ds) -> None:
        if not arrived.is_set():
            arrived.set()
            release.wait(DEADLINE_S)

    with CountingSCP(ae_title="PACS", status_override=hold_the_first) as pacs:
        box = Box(tmp_path, ct_study[:2], pacs.port, wait_s=0.5)
        try:
            errors: list[BaseException] = []
            worker = _thread(box.worker.deliver_once, errors)
            assert arrived.wait(DEADLINE_S), "the first instance never reached the PACS"
            with pytest.raises(StudyBusy):
                box.closer.assign(box.study, "b", "manual", time.time())
            assert box.site() == "a"
            release.set()
            worker.join(DEADLINE_S)
            assert not worker.is_alive() and not errors, errors
            assert pacs.wait_for(2, DEADLINE_S), "the study's delivery did not go on"
        finally:
            release.set()
            box.close()
