"""Sampling profiles of the box with py-spy, and a per-thread summary of where time goes.

Recording is wall-clock (``--idle``): a thread waiting in a socket read or an
fsync counts, which is what bounds one association's rate.
"""

from __future__ import annotations

import collections
import contextlib
import linecache
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>\d+)\): (?P<name>.*)$")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 30.0


def pyspy_binary() -> str:
    """py-spy from the running venv, else from PATH."""
    local = Path(sys.executable).parent / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


class Profiler:
    """Records py-spy raw (collapsed-stack) profiles of a process into ``out_dir``."""

    def __init__(self, out_dir: Path, rate_hz: int = 100, nonblocking: bool = False) -> None:
        self.out_dir = out_dir
        self.rate_hz = rate_hz
        self.nonblocking = nonblocking
        self.binary = pyspy_binary()
        self.outputs: dict[str, Path] = {}
        out_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def record(self, pid: int, name: str) -> Iterator[None]:
        """Sample ``pid`` while the body runs; the profile is kept under ``name``."""
        path = self.out_dir / f"{name}.txt"
        log = self.out_dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [self.binary, "record", "--pid", str(pid), "--format", "raw", "--output",
                 str(path), "--threads", "--idle", "--rate", str(self.rate_hz),
                 *(["--nonblocking"] if self.nonblocking else [])],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            _wait_sampling(proc, log)
            yield
        finally:
            _stop(proc)
        self.outputs[name] = path


def _wait_sampling(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while "Sampling process" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"py-spy did not start: {log.read_text(errors='replace')}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT makes py-spy write its output; SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------- summary

# A thread waits for work when its stack is a loop calling only these (see _is_idle).
_WAITS = ("Condition.wait (", "Event.wait (", "_PollLikeSelector.select (",
          "EpollSelector.select (", "socket.accept (")
_LOOP = re.compile(r"(serve_forever|run_forever|_loop|\.run)$")
ROLES = {  # what pynetdicom's threads do
    "AcceptorThread": "the box's side of an incoming association: DIMSE and C-STORE handler",
    "RequestorThread": "an outgoing association's reactor (the sender runs in the worker)",
    "Thread (run_reactor)": "pynetdicom DUL: socket reads and writes, PDU coding, spooling",
}
_SCAFFOLD = ("Thread._bootstrap (", "Thread._bootstrap_inner (", "Thread.run (", "_run_code (",
             "_run_module_as_main (", "<module> (")


@dataclass(frozen=True)
class Frame:
    func: str
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.func} ({self.file}:{self.line})"

    @property
    def function(self) -> str:
        return f"{self.func} ({self.file})"


@dataclass(frozen=True)
class ThreadProfile:
    """One thread role (threads of the same name merged): shares of its samples."""

    role: str
    samples: int
    idle_share: float  # samples waiting for work
    hot_lines: list[tuple[str, float, str]]  # leaf line, share, its source text
    inclusive: list[tuple[str, float]]  # function, share of samples it is on the stack


def _role(thread_field: str) -> str:
    """A thread's name with per-instance parts (numbers, start times) dropped."""
    match = _THREAD.match(thread_field)
    name = match.group("name") if match else thread_field
    return re.sub(r"-\d+|@\S*", "", name).strip() or "thread"


def _is_idle(frames: list[Frame]) -> bool:
    """Waiting for work: the stack is a loop (by its name) or nothing, then wait calls."""
    work = [f for f in frames if not f.function.startswith(_SCAFFOLD)]
    waits = 0
    while work and work[-1].function.startswith(_WAITS):
        work.pop()
        waits += 1
    return waits > 0 and (len(work) <= 1 or bool(_LOOP.search(work[-1].func)))


def _frame(text: str) -> Frame:
    match = _FRAME.match(text)
    if not match:
        return Frame(text, "?", 0)
    return Frame(match.group("func"), match.group("file"), int(match.group("line") or 0))


def _parse(path: Path) -> dict[str, list[tuple[list[Frame], int]]]:
    """role -> [(frames root first, count)]."""
    stacks: dict[str, list[tuple[list[Frame], int]]] = collections.defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        stacks[_role(thread)].append(([_frame(f) for f in frames], int(count)))
    return stacks


def source_line(frame: Frame) -> str:
    """The source text of a frame's line, found on sys.path (py-spy shortens file names)."""
    for root in [Path.cwd(), *map(Path, sys.path)]:
        candidate = root / frame.file
        if frame.line and candidate.is_file():
            return linecache.getline(str(candidate), frame.line).strip()
    return ""


def _thread_profile(role: str, stacks: list[tuple[list[Frame], int]], top: int) -> ThreadProfile:
    total = sum(n for _, n in stacks)
    lines: collections.Counter[Frame] = collections.Counter()
    funcs: collections.Counter[str] = collections.Counter()
    idle = 0
    for frames, n in stacks:
        if frames:
            lines[frames[-1]] += n
            idle += n if _is_idle(frames) else 0
        for name in {f.function for f in frames}:
            if not name.startswith(_SCAFFOLD):
                funcs[name] += n
    hot = [(f.where, n / total, source_line(f)) for f, n in lines.most_common(top)]
    return ThreadProfile(role, total, idle / total, hot,
                         [(name, n / total) for name, n in funcs.most_common(top)])


def summarise(path: Path, top: int = 15) -> list[ThreadProfile]:
    """Per thread role, busiest first: hot lines (self time) and inclusive functions."""
    threads = [_thread_profile(role, stacks, top) for role, stacks in _parse(path).items()]
    return sorted(threads, key=lambda t: t.samples * (1 - t.idle_share), reverse=True)


def render(name: str, threads: list[ThreadProfile], rate_hz: int,
           max_idle: float = 0.97, min_part: float = 0.05) -> str:
    """A text summary of one profile. Threads idle more than ``max_idle`` of the time, or
    with fewer than ``min_part`` of the busiest thread's samples, get one line."""
    lines = [f"== {name} (wall-clock samples at {rate_hz} Hz, idle waits included)"]
    most = max((t.samples for t in threads), default=0)
    quiet = [t for t in threads if t.idle_share > max_idle or t.samples < min_part * most]
    for t in threads:
        if t not in quiet:
            lines += _render_thread(t, rate_hz)
    if quiet:
        lines.append("-- idle or short-lived: " + ", ".join(
            sorted({t.role if t.samples >= min_part * most else "short-lived" for t in quiet})))
    return "\n".join(lines)


def _render_thread(t: ThreadProfile, rate_hz: int) -> list[str]:
    role = f"{t.role}: {ROLES[t.role]}" if t.role in ROLES else t.role
    lines = [f"-- thread {role}",
             f"   {t.samples} samples ({t.samples / rate_hz:.1f} s), "
             f"{t.idle_share:.0%} waiting for work",
             "   hot lines (self):"]
    lines += [f"     {share:6.1%}  {where:<58} {text[:60]}" for where, share, text in
              t.hot_lines if share >= 0.005]
    lines.append("   functions (inclusive):")
    lines += [f"     {share:6.1%}  {func}" for func, share in t.inclusive if share >= 0.005]
    return lines
