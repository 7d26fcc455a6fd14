"""A bounded-time fuzz campaign against a running box process over loopback.

Hypothesis draws cases (tests/fuzz/cases.py) in batches until the time budget is
spent; each case runs on a fresh connection. After every case the box must still
run, answer a C-ECHO, and stay under the memory limit; otherwise the case is a
crasher: hypothesis shrinks it, the smallest one is appended to `crashers.jsonl`
(replayed by tests/integration/test_fuzz.py) and the box is restarted.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed

from tests import rawpdu
from tests.boxproc import BoxProcess
from tests.fuzz.cases import CONTEXTS, Case, cases

CRASHERS = Path(__file__).with_name("crashers.jsonl")
RSS_LIMIT = 200 * 1024**2
# The box answers a complete PDU in milliseconds (a C-STORE once durable); after this much
# silence it is waiting for bytes the case does not send.
FIRST_REPLY_S = 0.75
NEXT_REPLY_S = 0.5
MAX_REPLIES = 8
ECHO_TIMEOUT_S = 10.0
# Once the fuzzer has closed its end, the box closes its own at once (end of stream).
LINGER_S = 3.0
BATCH = 25
STATUS_NAMES = {rawpdu.ASSOCIATE_AC: "A-ASSOCIATE-AC", rawpdu.ASSOCIATE_RJ: "A-ASSOCIATE-RJ",
                rawpdu.RELEASE_RP: "A-RELEASE-RP", rawpdu.ABORT: "A-ABORT",
                rawpdu.RELEASE_RQ: "A-RELEASE-RQ", rawpdu.P_DATA_TF: "P-DATA"}


class CaseFailed(Exception):
    """The box died, stopped answering or grew past the memory limit after a case."""


@dataclass
class Outcome:
    """What the box answered to one case: `answer` names the last PDU (or "no answer")."""

    answer: str
    acknowledged: bool = False
    client_port: int | None = None


def _is_ok(status: int) -> bool:
    return status == 0 or (status & 0xF000) == 0xB000


def play(port: int, case: Case) -> Outcome:
    """Send `case` on a fresh connection and read the box's answers (bounded in count
    and time); never raises for what the box does."""
    try:
        sock = rawpdu.connect(port)
    except OSError:
        return Outcome("connection refused")
    client_port = sock.getsockname()[1]
    with sock:
        outcome = _exchange(sock, case)
    outcome.client_port = client_port
    return outcome


def _exchange(sock, case: Case) -> Outcome:
    """The case's bytes, then the box's answers until it ends or goes quiet."""
    if case.associate:
        if not rawpdu.send_quietly(sock, rawpdu.associate_rq(contexts=CONTEXTS)):
            return Outcome("closed before association")
        accept = rawpdu.read_reply(sock, ECHO_TIMEOUT_S)
        if accept is None or accept.pdu_type != rawpdu.ASSOCIATE_AC:
            return Outcome("association refused")
    for chunk in case.chunks:
        if not rawpdu.send_quietly(sock, chunk):
            break
    last, status, wait_s = "no answer", None, FIRST_REPLY_S
    for _ in range(MAX_REPLIES):
        reply = rawpdu.read_reply(sock, wait_s)
        if reply is None:
            break
        last = STATUS_NAMES.get(reply.pdu_type, f"PDU 0x{reply.pdu_type:02X}")
        if reply.pdu_type == rawpdu.P_DATA_TF and status is None:
            status = rawpdu.store_status(reply)
        if reply.pdu_type in (rawpdu.ABORT, rawpdu.ASSOCIATE_RJ, rawpdu.RELEASE_RP):
            break
        wait_s = NEXT_REPLY_S
    if status is None:
        return Outcome(last)
    return Outcome(f"status 0x{status:04X}",
                   acknowledged=_is_ok(status) and case.sop_instance is not None)


def echo_ok(port: int, timeout_s: float = ECHO_TIMEOUT_S) -> bool:
    """A well-behaved C-ECHO association succeeds."""
    try:
        with rawpdu.connect(port, timeout_s) as sock:
            sock.sendall(rawpdu.associate_rq(contexts=CONTEXTS))
            accept = rawpdu.read_reply(sock, timeout_s)
            if accept is None or accept.pdu_type != rawpdu.ASSOCIATE_AC:
                return False
            sock.sendall(rawpdu.c_echo(1))
            reply = rawpdu.read_reply(sock, timeout_s)
            ok = reply is not None and rawpdu.store_status(reply) == 0
            sock.sendall(rawpdu.release_rq())
            rawpdu.read_reply(sock, timeout_s)
            return ok
    except OSError:
        return False


@dataclass
class Campaign:
    """Runs cases against `box` and keeps the score."""

    box: BoxProcess
    crashers: Path | None = CRASHERS
    log: Callable[[str], None] = print
    cases: int = 0
    answers: collections.Counter = field(default_factory=collections.Counter)
    acknowledged: set[str] = field(default_factory=set)
    crashes: list[dict] = field(default_factory=list)
    _log_seen: int = 0

    def _new_exception(self) -> str | None:
        """The last line of a traceback the box printed since the last look: an exception
        nothing caught (a dead association thread) is a crash even if the box serves on.
        This is the fuzzer's crash oracle, as a sanitizer's report would be."""
        text = self.box.log()
        new, self._log_seen = text[self._log_seen:], len(text)
        lines = new.splitlines()
        starts = [n for n, line in enumerate(lines) if line.startswith("Traceback (most recent")]
        if not starts:
            return None
        # The exception is the first unindented line after the last traceback's frames.
        after = (line for line in lines[starts[-1] + 1:] if line and not line[0].isspace())
        return next(after, "traceback")[:200]

    def problem(self) -> str | None:
        """Why the box is not fine after a case, or None."""
        assert self.box.proc is not None
        if self.box.proc.poll() is not None:
            return f"box exited with {self.box.proc.returncode}"
        if (exception := self._new_exception()) is not None:
            return f"uncaught exception in the box: {exception}"
        if not echo_ok(self.box.port):
            return "box does not answer a C-ECHO"
        if self.box.rss_bytes() > RSS_LIMIT:
            return f"box resident set {self.box.rss_bytes() >> 20} MB"
        return None

    def holds_connection(self, client_port: int | None) -> bool:
        """The box still has a connection to `client_port` open after `LINGER_S`: a
        finished case whose association the box never ended (a leaked thread)."""
        if client_port is None:
            return False
        deadline = time.monotonic() + LINGER_S
        while True:
            open_now = any(c.raddr and c.raddr.port == client_port
                           for c in psutil.Process(self.box.proc.pid).net_connections("tcp"))
            if not open_now or time.monotonic() > deadline:
                return open_now
            time.sleep(0.05)

    def recover(self) -> None:
        """A box that died or hangs is restarted on the same data."""
        self.box.kill9()
        self.box.start()
        self._log_seen = len(self.box.log())

    def one(self, case: Case) -> None:
        """Play one case; raise CaseFailed if the box is not fine afterwards."""
        self.cases += 1
        outcome = play(self.box.port, case)
        self.answers[outcome.answer] += 1
        if outcome.acknowledged:
            self.acknowledged.add(case.sop_instance)
        problem = self.problem()
        if problem is None and self.holds_connection(outcome.client_port):
            problem = "box keeps the connection of a finished case open"
        if problem is not None:
            self.recover()
            raise CaseFailed(problem)

    def _batch(self, seed: int, examples: int) -> None:
        failure: dict = {}

        @settings(max_examples=examples, deadline=None, database=None,
                  phases=[Phase.generate, Phase.shrink], verbosity=Verbosity.quiet,
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @hypothesis_seed(seed)
        @given(case=cases())
        def run_case(case: Case) -> None:
            try:
                self.one(case)
            except CaseFailed as exc:
                failure.update(case=case, problem=str(exc))
                raise

        try:
            run_case()
        except Exception:  # the shrunk failure, or hypothesis's report that it is flaky
            if "case" not in failure:
                raise
            self._record(failure["case"], failure["problem"], seed)

    def _record(self, case: Case, problem: str, seed: int) -> None:
        entry = {"problem": problem, "seed": seed, **case.to_json()}
        self.crashes.append(entry)
        self.log(f"CRASH {case.kind}: {problem}")
        if self.crashers is not None:
            with self.crashers.open("a") as f:
                f.write(json.dumps(entry) + "\n")

    def run(self, budget_s: float, seed: int = 0) -> None:
        """Batches of cases until `budget_s` is spent (a batch started is finished)."""
        deadline = time.monotonic() + budget_s
        batch = 0
        while time.monotonic() < deadline:
            self._batch(seed * 1_000_003 + batch, BATCH)
            batch += 1

    def summary(self) -> str:
        peak = self.box.peak_rss_bytes() / 1024**2
        answers = ", ".join(f"{n} {a}" for a, n in self.answers.most_common())
        return (f"cases run: {self.cases}; crashes: {len(self.crashes)}; "
                f"box peak RSS: {peak:.0f} MB\nanswers: {answers}")


def load_crashers(path: Path = CRASHERS) -> list[tuple[str, Case]]:
    """Every kept crasher: (what went wrong, the case)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            out.append((entry["problem"], Case.from_json(entry)))
    return out
