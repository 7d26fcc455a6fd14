"""The supervisor restarts watchers that fail or hang, and never stops the box for them."""

import threading
import time

from appliance.supervisor import Supervisor, Watcher
from tests.support.waiting import wait_for


def test_a_failing_source_is_retried_with_back_off_and_recovers():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("device gone")
        return "fix"

    watcher = Watcher("position", flaky, interval_s=0.01, timeout_s=5)
    sup = Supervisor([watcher], on_snapshot=lambda snap: None)
    sup.start(first_reading_s=0)
    try:
        wait_for(lambda: watcher.value == "fix", 5.0, "the fix")
        assert watcher.failures == 0 and len(calls) >= 3
        assert sup.snapshot().position == "fix"
    finally:
        sup.stop()


def test_a_hung_source_is_abandoned_and_a_fresh_thread_started():
    release = threading.Event()
    first = [True]

    def hangs_once():
        if first[0]:
            first[0] = False
            release.wait(10)  # a D-Bus call that never returns
        return ((), {"10.0.0.1": "eth0"})

    watcher = Watcher("links", hangs_once, interval_s=0.01, timeout_s=0.05)
    sup = Supervisor([watcher], on_snapshot=lambda snap: None, clock=time.time)
    sup.check_watchers(time.time())
    try:
        wait_for(lambda: watcher._started_poll_at is not None, 5.0, "a poll started")
        time.sleep(0.1)
        sup.check_watchers(time.time())
        assert watcher.restarts == 1
        wait_for(lambda: sup.snapshot().routes == {"10.0.0.1": "eth0"}, 5.0, "the route")
    finally:
        release.set()
        sup.stop()


def test_poke_polls_links_at_once():
    polls = []
    watcher = Watcher("links", lambda: polls.append(1) or ((), {}), interval_s=3600,
                      timeout_s=5)
    sup = Supervisor([watcher], on_snapshot=lambda snap: None)
    sup.start(first_reading_s=1)
    try:
        wait_for(lambda: len(polls) == 1, 5.0, "one poll")
        sup.poke("add net wwan0")
        wait_for(lambda: len(polls) == 2, 5.0, "two polls")
        assert sup.alive()
    finally:
        sup.stop()
