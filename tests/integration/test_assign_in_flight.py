"""`assign` against sends in flight, with a real delivery worker and a pynetdicom PACS
(issue 8: never to the wrong hospital).

The box's own parts run in this process (store, closer, worker), so that the test can stop
the worker at the exact point where the race was: after the gate let an instance go, before
its C-STORE. Every wait has a deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from appliance.inflight import StudyBusy
from appliance.studies import AssignRefused
from tests.peers import CountingSCP
from tests.support.parts import Parts
from tests.support.waiting import wait_for

DEADLINE_S = 20.0


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
    box: Parts | None = None

    def at_arrival(ds) -> None:
        arrivals.append((str(ds.SOPInstanceUID), box.site()))

    with CountingSCP(ae_title="PACS", status_override=at_arrival) as pacs:
        box = Parts(tmp_path, ct_study[:3], pacs.port)
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
            wait_for(lambda: not assign.is_alive() or box.in_flight.is_moving(box.study.key),
                     DEADLINE_S, "the assign to start")
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
        box = Parts(tmp_path, ct_study[:2], pacs.port, wait_s=0.5)
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
