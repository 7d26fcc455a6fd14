"""Sampling profiles of the box with py-spy, and a per-thread summary of where time goes.

Recording is wall-clock (``--idle``): a thread waiting in a socket read or an
fsync counts, which is what bounds one association's rate.
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
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

    def __init__(self, out_dir: Path, rate_hz: int = 200) -> None:
        self.out_dir = out_dir
        self.rate_hz = rate_hz
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
                 str(path), "--threads", "--idle", "--rate", str(self.rate_hz)],
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


@dataclass(frozen=True)
class ThreadProfile:
    """One thread role (threads of the same name merged): shares of its samples."""

    role: str
    samples: int
    self_share: list[tuple[str, float]]
    inclusive_share: list[tuple[str, float]]


def _role(thread_field: str) -> str:
    """A thread's name with per-instance suffixes (ids, numbers) dropped."""
    match = _THREAD.match(thread_field)
    name = match.group("name") if match else thread_field
    return re.sub(r"[@(].*$|[-_ ]?\d+$", "", name).strip() or "thread"


def _label(frame: str) -> str:
    match = _FRAME.match(frame)
    return f"{match.group('func')} ({match.group('file')})" if match else frame


def _parse(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    """role -> [(frames root first, count)]."""
    stacks: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        stacks[_role(thread)].append(([_label(f) for f in frames], int(count)))
    return stacks


def _shares(counter: collections.Counter[str], total: int, top: int) -> list[tuple[str, float]]:
    return [(name, n / total) for name, n in counter.most_common(top)]


def summarise(path: Path, top: int = 15) -> list[ThreadProfile]:
    """Per thread role, busiest first: the top self (leaf) and inclusive functions."""
    out = []
    for role, stacks in _parse(path).items():
        total = sum(n for _, n in stacks)
        leaf: collections.Counter[str] = collections.Counter()
        incl: collections.Counter[str] = collections.Counter()
        for frames, n in stacks:
            if frames:
                leaf[frames[-1]] += n
            for name in set(frames):
                incl[name] += n
        out.append(ThreadProfile(role, total, _shares(leaf, total, top),
                                 _shares(incl, total, top)))
    return sorted(out, key=lambda t: t.samples, reverse=True)


def render(name: str, threads: list[ThreadProfile], rate_hz: int, min_samples: int = 0) -> str:
    """A text summary of one profile."""
    lines = [f"== {name}"]
    for t in threads:
        if t.samples < min_samples:
            continue
        lines.append(f"-- thread {t.role}: {t.samples} samples ({t.samples / rate_hz:.1f} s)")
        lines.append("   self:")
        lines += [f"     {share:6.1%}  {func}" for func, share in t.self_share]
        lines.append("   inclusive:")
        lines += [f"     {share:6.1%}  {func}" for func, share in t.inclusive_share]
    return "\n".join(lines)
