"""The link emulator (tests/bench/linkemu.py) delivers the rate, delay, loss and drops it
is configured with, measured with real TCP between its two network namespaces."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.bench import linkemu
from tests.bench.linkemu import REPO, Link

PORT = 5201
PROBE = [sys.executable, "-m", "tests.bench.linkemu"]
WIRE_OVERHEAD = 1500 / 1448  # IPv4 + TCP with timestamps, per full-size segment


@pytest.fixture(scope="module", autouse=True)
def _need_namespaces() -> None:
    reason = linkemu.unavailable()
    if reason:
        pytest.skip(f"the link emulator cannot run here: {reason}")


def _link(rate_mbit: float, delay_ms: float, **kwargs: Any) -> dict[str, Any]:
    return {"rate_mbit": rate_mbit, "delay_ms": delay_ms, **kwargs}


@pytest.fixture
def sink_link(request: pytest.FixtureRequest) -> Iterator[Link]:
    """A started Link (keyword arguments from indirect parametrisation) with a TCP sink in B."""
    with Link(**request.param) as link:
        link.popen_in(link.ns_b, [*PROBE, "sink", str(PORT)], cwd=REPO)
        linkemu.wait_listening(link, link.ns_b, PORT)
        yield link


def _probe(link: Link, *args: str, timeout: float) -> dict[str, Any]:
    cp = link.run_in(link.ns_a, [*PROBE, *args], cwd=REPO, timeout=timeout, check=True)
    return json.loads(cp.stdout)


def _bulk(link: Link, megabytes: float) -> subprocess.Popen[str]:
    return link.popen_in(link.ns_a, [*PROBE, "bulk", link.addr_b, str(PORT), str(megabytes)],
                         cwd=REPO, stdout=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return json.loads(out)


@pytest.mark.parametrize("rate_mbit,delay_ms", [(20, 50), (3, 150), (100, 2)])
def test_rate_and_round_trip(rate_mbit: float, delay_ms: float) -> None:
    with Link(rate_mbit, delay_ms) as link:
        link.popen_in(link.ns_b, [*PROBE, "sink", str(PORT)], cwd=REPO)
        linkemu.wait_listening(link, link.ns_b, PORT)
        rtt = _probe(link, "connect", link.addr_b, str(PORT), "5", timeout=30)
        # a connect is one round trip: twice the one-way delay, plus microseconds
        assert 2 * delay_ms * 0.97 <= rtt["median_ms"] <= 2 * delay_ms * 1.1 + 1.5, rtt
        steady_s = 3.0
        megabytes = rate_mbit / 8 * (steady_s + 4)  # slow start, steady window, tail
        proc = _bulk(link, megabytes)
        time.sleep(2.0)
        before = link.stats()
        time.sleep(steady_s)
        after = link.stats()
        result = _finish(proc, timeout=megabytes * 8 / rate_mbit * 3 + 30)
    wire = (after["a_to_b"]["fwd_bytes"] - before["a_to_b"]["fwd_bytes"]) * 8 / (
        after["uptime_s"] - before["uptime_s"]) / 1e6
    assert 0.9 * rate_mbit <= wire <= 1.03 * rate_mbit, f"wire {wire:.2f} Mbit/s"
    assert result["bytes"] == int(megabytes * 1e6)
    # the whole transfer can not beat the link; slow start and the connect and answer
    # round trips cost it a few round trips more than the rate alone
    ideal_s = megabytes * 8 * WIRE_OVERHEAD / rate_mbit
    assert 0.98 * ideal_s <= result["seconds"] <= 1.1 * ideal_s + 10 * 2 * delay_ms / 1000, (
        result, ideal_s)
    assert after["a_to_b"]["max_queue"] <= link.queue_packets


@pytest.mark.parametrize("sink_link", [_link(50, 5, loss_pct=5)], indirect=True)
def test_random_loss_is_recovered_by_tcp(sink_link: Link) -> None:
    result = _finish(_bulk(sink_link, 5), timeout=120)
    stats = sink_link.stats()["a_to_b"]
    assert result["bytes"] == 5_000_000
    share = stats["lost_pkts"] / stats["offered_pkts"]
    assert 0.035 <= share <= 0.065, stats
    assert stats["resent_bytes"] >= 0.5 * stats["lost_pkts"] * 1000, stats


@pytest.mark.parametrize("sink_link", [_link(20, 10)], indirect=True)
def test_down_refuses_connects_and_open_transfers_resume(sink_link: Link) -> None:
    proc = _bulk(sink_link, 8)
    time.sleep(1.0)
    sink_link.down()
    started = time.monotonic()
    refused = sink_link.run_in(sink_link.ns_a, [*PROBE, "connect", sink_link.addr_b,
                                                str(PORT), "1"], cwd=REPO, timeout=30)
    assert refused.returncode != 0 and "unreachable" in refused.stderr.lower(), refused
    assert time.monotonic() - started < 5
    time.sleep(2.0)
    sink_link.up()
    result = _finish(proc, timeout=90)
    assert result["bytes"] == 8_000_000
    assert _probe(sink_link, "connect", sink_link.addr_b, str(PORT), "1", timeout=30)


@pytest.mark.parametrize("sink_link", [_link(20, 10, drop_every_s=1.5, drop_for_s=1.0,
                                             drop_mode="blackhole")], indirect=True)
def test_scheduled_drops(sink_link: Link) -> None:
    result = _finish(_bulk(sink_link, 6), timeout=120)
    stats = sink_link.stats()
    assert result["bytes"] == 6_000_000
    assert stats["outages"] >= 1 and stats["a_to_b"]["outage_drops"] > 0, stats
    # 6 MB take 2.4 s at 20 Mbit/s; outages stretch it
    assert result["seconds"] > 2.4 + 0.8, result


def test_everything_is_removed_on_exit() -> None:
    with Link(10, 1) as link:
        sink = link.popen_in(link.ns_b, [*PROBE, "sink", str(PORT)], cwd=REPO)
        linkemu.wait_listening(link, link.ns_b, PORT)
        forwarder = link._forwarder
        assert forwarder is not None
    assert sink.poll() is not None and forwarder.poll() is not None
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           timeout=10).stdout
    assert link.ns_a not in names and link.ns_b not in names

