"""Timed transfers: storescu into the box, storescp and Orthanc; the box delivering a study;
two modalities sending to the box while it delivers.

Every box ingest also counts, for the time storescu runs, the box's sync calls
(fsync, fdatasync, msync, sync_file_range, syncfs), the bytes it wrote to the
storage layer (/proc/<pid>/io write_bytes) and its CPU time (/proc/<pid>/stat
utime + stime). Syncs are counted by the kernel's syscall tracepoints through
``perf stat -p`` (the box is not stopped); without perf, the box runs under
``strace -f --seccomp-bpf``, which stops it at each sync and slows it a little;
with neither, there is no count.

Every process started here is stopped on the way out, errors and Ctrl-C included;
every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.bench.data import Study
from tests.bench.profile import Profiler
from tests.boxproc import BoxProcess, box_toml, site_toml
from tests.peers import (
    LOOPBACK,
    Orthanc,
    StoreSCP,
    free_port,
    peer_env,
    store_responses,
    storescu_profile,
)

SEND_TIMEOUT_S = 300.0
PERF_ATTACH_S = 0.5  # perf stat -p gives no sign that it has attached
DELIVERY_TIMEOUT_S = 300.0
BOX_START_S = 30.0
POLL_S = 0.05
BOX_AET = "FLUXBOX"
_LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


class BenchError(RuntimeError):
    """A run did not do what it should (refused stores, missing files, a time-out)."""


@dataclass(frozen=True)
class Timing:
    """One timed transfer of one study."""

    study: str
    kind: str  # "ingest" | "delivery"
    target: str  # "box" | "storescp" | "orthanc" | "storescu"
    seconds: float
    files: int
    size_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_s(self) -> float:
        return self.size_bytes / 1e6 / self.seconds

    @property
    def images_s(self) -> float:
        return self.files / self.seconds


# --------------------------------------------------------------------------- sending


class Sender:
    """DCMTK storescu, each file proposed in its own transfer syntax (as tests.peers.storescu)."""

    def __init__(self, study: Study, workdir: Path) -> None:
        self.study = study
        self.profile = workdir / f"{study.name}-storescu.cfg"
        self.profile.write_text(storescu_profile(list(study.files)))

    def args(self, port: int, called_aet: str) -> list[str]:
        return ["storescu", "--verbose", "--aetitle", "MODALITY", "--call", called_aet,
                "--timeout", "15", "--acse-timeout", "30", "--dimse-timeout", "300",
                "--config-file", str(self.profile), "Default",
                LOOPBACK, str(port), *map(str, self.study.files)]

    def send(self, port: int, called_aet: str, nodelay: bool = True) -> float:
        """Send the study; the wall-clock seconds of the storescu run. ``nodelay``: with
        TCP_NODELAY=1 in storescu's environment, else DCMTK's default (Nagle on)."""
        env = peer_env() if nodelay else {k: v for k, v in peer_env().items()
                                           if k != "TCP_NODELAY"}
        start = time.perf_counter()
        cp = subprocess.run(self.args(port, called_aet), env=env, capture_output=True,
                            text=True, timeout=SEND_TIMEOUT_S, check=False,
                            stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        ok = sum(answer == "Success" for _, answer in store_responses(cp))
        if cp.returncode != 0 or ok != len(self.study.files):
            raise BenchError(f"storescu -> {called_aet}: exit {cp.returncode}, "
                             f"{ok}/{len(self.study.files)} stored\n{cp.stderr[-1500:]}")
        return seconds


def settle_disk() -> None:
    """Flush what earlier runs left dirty, so it is not written back during the next one."""
    os.sync()


def _timing(study: Study, kind: str, target: str, seconds: float, **extra: Any) -> Timing:
    return Timing(study.name, kind, target, seconds, len(study.files), study.size_bytes, extra)


# --------------------------------------------------------------------------- peers


def storescp_ingest(sender: Sender, kind: str = "ingest", target: str = "storescp",
                    nodelay: bool = True) -> Timing:
    """storescu -> DCMTK storescp writing to a temp dir."""
    with StoreSCP(aet="STORESCP") as scp:
        settle_disk()
        seconds = sender.send(scp.port, scp.aet, nodelay)
        received = len(scp.files())
    if received != len(sender.study.files):
        raise BenchError(f"storescp wrote {received} of {len(sender.study.files)} files")
    return _timing(sender.study, kind, target, seconds)


def storescu_delivery(sender: Sender) -> Timing:
    """The delivery baseline: DCMTK storescu -> storescp, the same files."""
    return storescp_ingest(sender, kind="delivery", target="storescu")


def orthanc_ingest(sender: Sender, kind: str = "ingest", nodelay: bool = True) -> Timing:
    """storescu -> Orthanc with a private temp storage."""
    with Orthanc(aet="ORTHANC") as pacs:
        settle_disk()
        seconds = sender.send(pacs.dicom_port, pacs.aet, nodelay)
        stored = pacs.count_instances()
    if stored != len(sender.study.files):
        raise BenchError(f"Orthanc stored {stored} of {len(sender.study.files)} instances")
    return _timing(sender.study, kind, "orthanc", seconds)


# --------------------------------------------------------------------------- the box


def box_config(data_dir: Path, port: int, dest_port: int, dest_aet: str,
               transmit: str = "") -> str:
    """The test harness's box: one fixed site whose one destination is dest_aet at dest_port;
    ``transmit`` adds or overrides [transmit] settings."""
    dest = {"name": "pacs", "ae_title": dest_aet, "host": LOOPBACK, "port": dest_port}
    return box_toml(data_dir, port, site_toml("a", [dest]),
                    transmit=f"study_quiet_s = 0.5\ndimse_timeout_s = 60\n{transmit}")


SYNC_CALLS = ("fsync", "fdatasync", "msync", "sync_file_range", "syncfs")
_STRACE_LINE = re.compile(r"^(?:\[pid\s+)?\d+\]?\s+(?P<t>\d+\.\d+)\s+(?P<call>\w+)\(")


def strace_binary() -> str | None:
    return shutil.which("strace")


@functools.cache
def perf_binary() -> str | None:
    """perf, if it can count syscall tracepoints here (it needs tracefs and the right)."""
    perf = shutil.which("perf")
    if perf is None:
        return None
    cp = subprocess.run([perf, "stat", "-x,", "-e", "syscalls:sys_enter_fsync", "true"],
                        capture_output=True, text=True, timeout=30, check=False)
    return perf if cp.returncode == 0 and "sys_enter_fsync" in cp.stderr else None


def syncs_counted_by() -> str:
    """How box ingest counts syncs, for the report."""
    if perf_binary():
        return "perf stat -p on the box (syscall tracepoints)"
    if strace_binary():
        return "strace -f --seccomp-bpf on the box (perf not usable; slows the box)"
    return "nowhere: neither perf nor strace is usable"


def parse_perf_stat(text: str) -> dict[str, int]:
    """Counts per syscall from ``perf stat -x,`` output on sys_enter_* tracepoints."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_"):
            name = fields[2].removeprefix("syscalls:sys_enter_")
            counts[name] = int(fields[0]) if fields[0].isdigit() else 0
    return counts


@contextlib.contextmanager
def perf_syncs(perf: str, pid: int, out: Path) -> Iterator[dict[str, int]]:
    """Count the sync calls of ``pid`` (all its threads, also new ones) while the body runs;
    the dict yielded is filled on the way out."""
    events = ",".join(f"syscalls:sys_enter_{name}" for name in SYNC_CALLS)
    proc = subprocess.Popen([perf, "stat", "-x,", "-o", str(out), "-e", events, "-p", str(pid)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    counts: dict[str, int] = {}
    try:
        time.sleep(PERF_ATTACH_S)
        if proc.poll() is not None:
            raise BenchError(f"perf stat -p {pid} ended at once (exit {proc.returncode})")
        yield counts
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    counts.update(parse_perf_stat(out.read_text(errors="replace")))


def count_calls(trace: str, start: float, end: float) -> dict[str, int]:
    """Calls per name in ``strace -f -ttt`` output that began between ``start`` and ``end``
    (epoch seconds). A call split by another thread (``<unfinished ...>`` then
    ``<... name resumed>``) counts once, at its start."""
    counts: dict[str, int] = {}
    for line in trace.splitlines():
        match = _STRACE_LINE.match(line)
        if match and start <= float(match.group("t")) <= end:
            counts[match.group("call")] = counts.get(match.group("call"), 0) + 1
    return counts


class TracedBox(BoxProcess):
    """The box run under ``strace -f --seccomp-bpf -ttt`` tracing only the sync calls; the
    trace goes to ``sync-trace.txt`` in its workdir. ``pid`` is the box's own process."""

    def __init__(self, config_text: str, workdir: Path, strace: str) -> None:
        super().__init__(config_text, workdir)
        self.trace_path = self.workdir / "sync-trace.txt"
        self.command = [strace, "-f", "--seccomp-bpf", "-ttt", "-qq",
                        "-e", "trace=" + ",".join(SYNC_CALLS), "-o", str(self.trace_path),
                        *self.command]
        self.pid: int | None = None

    def start(self, timeout_s: float = 20) -> BoxProcess:
        super().start(timeout_s)
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        self.pid = int(children.split()[0])
        return self

    def stop(self, timeout_s: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None or self.pid is None:
            return super().stop(timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError("box did not stop on SIGTERM") from None

    def kill9(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        super().kill9()

    def syncs(self, start: float, end: float) -> int:
        """Sync calls the box began between ``start`` and ``end`` (after it stopped)."""
        counts = count_calls(self.trace_path.read_text(errors="replace"), start, end)
        return sum(counts.get(name, 0) for name in SYNC_CALLS)


@contextlib.contextmanager
def running_box(workdir: Path, dest_port: int, dest_aet: str,
                transmit: str = "", trace_syncs: bool = False) -> Iterator[BoxProcess]:
    """A started box; SIGTERM on the way out (SIGKILL after an error or a slow stop).
    ``trace_syncs``: under strace (a TracedBox) when strace is installed."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = box_config(workdir / "data", free_port(), dest_port, dest_aet, transmit)
    strace = strace_binary() if trace_syncs else None
    box = TracedBox(config, workdir, strace) if strace else BoxProcess(config, workdir)
    try:
        box.start(timeout_s=BOX_START_S)
        yield box
    except BaseException:
        box.kill9()
        raise
    try:
        box.stop(timeout_s=30)
    except AssertionError as exc:
        raise BenchError(str(exc)) from None


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmHWM for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def io_bytes(pid: int) -> dict[str, int]:
    """/proc/<pid>/io of a live process: write_bytes (to the storage layer), wchar, ..."""
    pairs = (line.split(":") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return {key.strip(): int(value) for key, value in pairs}


def _box_pid(box: BoxProcess) -> int:
    if isinstance(box, TracedBox) and box.pid is not None:
        return box.pid
    assert box.proc is not None
    return box.proc.pid


def box_ingest(sender: Sender, workdir: Path, profiler: Profiler | None = None,
               transmit: str = "", kind: str = "ingest", nodelay: bool = True) -> Timing:
    """storescu -> the box, whose destination is a closed port (nothing leaves meanwhile);
    with the box's syncs, bytes written and CPU time while storescu ran."""
    perf = perf_binary()
    with running_box(workdir, free_port(), "NOWHERE", transmit,
                     trace_syncs=perf is None) as box:
        pid = _box_pid(box)
        settle_disk()
        with (perf_syncs(perf, pid, workdir / "perf-stat.txt") if perf
              else contextlib.nullcontext({})) as counted:
            cpu, io = cpu_seconds(pid), io_bytes(pid)
            began = time.time()
            with _maybe_profile(profiler, pid, f"{kind}-{sender.study.name}"):
                seconds = sender.send(box.port, BOX_AET, nodelay)
            ended = time.time()
            cpu, io_end = cpu_seconds(pid) - cpu, io_bytes(pid)
        stored = sum(row["instances"] for row in box.studies())
        rss = peak_rss_mb(pid)
    if stored != len(sender.study.files):
        raise BenchError(f"the box holds {stored} of {len(sender.study.files)} instances")
    size = sender.study.size_bytes
    syncs = (sum(counted.values()) if perf else
             box.syncs(began, ended) if isinstance(box, TracedBox) else None)
    return _timing(
        sender.study, kind, "box", seconds, peak_rss_mb=round(rss, 1), cpu_s=round(cpu, 2),
        cpu_s_per_gb=round(cpu / (size / 1e9), 1),
        syncs=syncs, syncs_per_instance=(round(syncs / len(sender.study.files), 2)
                                         if syncs is not None else None),
        write_bytes=io_end["write_bytes"] - io["write_bytes"],
        write_amp=round((io_end["write_bytes"] - io["write_bytes"]) / size, 2),
        wchar_amp=round((io_end["wchar"] - io["wchar"]) / size, 2),
    )


def box_delivery(sender: Sender, workdir: Path, profiler: Profiler | None = None,
                 transmit: str = "") -> Timing:
    """The box -> storescp, from the study closing until `studies` shows it complete."""
    with (StoreSCP(aet="PACS") as scp,
          running_box(workdir, scp.port, scp.aet, transmit) as box):
        settle_disk()
        ingest_s = sender.send(box.port, BOX_AET)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        seen_closed, _ = wait_state(box, CLOSED_STATES, deadline)
        cpu = cpu_seconds(_box_pid(box))
        with _maybe_profile(profiler, _box_pid(box), f"delivery-{sender.study.name}"):
            seen_complete, row = wait_state(box, {"complete"}, deadline)
        cpu = cpu_seconds(_box_pid(box)) - cpu
        rss = peak_rss_mb(_box_pid(box))
        logged_close = _logged_close(box.log())
        received = len(scp.files())
    if received != len(sender.study.files):
        raise BenchError(f"storescp got {received} of {len(sender.study.files)} from the box")
    start = min(seen_closed, logged_close) if logged_close else seen_closed
    box_clock = float(row["completed_at"]) - logged_close if logged_close else None
    return _timing(
        sender.study, "delivery", "box", seen_complete - start, peak_rss_mb=round(rss, 1),
        cpu_s=round(cpu, 2),
        ingest_live_dest_s=round(ingest_s, 3), poll_s=round(seen_complete - seen_closed, 3),
        box_clock_s=round(box_clock, 3) if box_clock is not None else None,
        start_from="log" if logged_close and logged_close < seen_closed else "poll",
    )


def box_delivery_many(sender: Sender, workdir: Path, profiler: Profiler | None = None,
                      transmit: str = "") -> Timing:
    """The box -> storescp for a set of many studies: all are received while nothing listens
    on the destination's port; then storescp starts there and ``retry`` sends them; timed
    from the retry until `studies` shows every study complete."""
    port, files = free_port(), len(sender.study.files)
    with running_box(workdir, port, "PACS", transmit) as box:
        pid = _box_pid(box)
        settle_disk()
        ingest_s = sender.send(box.port, BOX_AET)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        wait_all(box, lambda rows: _closed(rows, files), deadline, "every study closed")
        with StoreSCP(aet="PACS", port=port) as scp:
            settle_disk()
            cpu = cpu_seconds(pid)
            began = time.time()
            box.call("retry")
            deadline = time.monotonic() + DELIVERY_TIMEOUT_S
            with _maybe_profile(profiler, pid, f"delivery-{sender.study.name}"):
                ended, rows = wait_all(box, _all_complete, deadline, "every study complete",
                                       poll_s=0.1)
            cpu = cpu_seconds(pid) - cpu
            rss = peak_rss_mb(pid)
            received = len(scp.files())
    if received != files:
        raise BenchError(f"storescp got {received} of {files} from the box")
    return _timing(sender.study, "delivery", "box", ended - began, peak_rss_mb=round(rss, 1),
                   cpu_s=round(cpu, 2), ingest_dest_closed_s=round(ingest_s, 3),
                   studies=len(rows), start_from="retry")


def box_concurrent(sender: Sender, others: tuple[Sender, ...], workdir: Path,
                   transmit: str = "") -> Timing:
    """``sender``'s study into the box, then, once it is closed and its delivery to storescp
    has begun, ``others`` all at once (two modalities); timed from their start until the
    last storescu ends. Rates are of the bytes of ``others`` together."""
    first = len(sender.study.files)
    with (StoreSCP(aet="PACS") as scp,
          running_box(workdir, scp.port, scp.aet, transmit) as box):
        pid = _box_pid(box)
        settle_disk()
        sender.send(box.port, BOX_AET)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        _, rows = wait_all(box, lambda rows: _closed(rows, first), deadline,
                           "the first study closed")
        previous = {row["study_uid"] for row in rows}
        watch = _DeliveryWatch(box, previous)
        cpu = cpu_seconds(pid)
        began = time.monotonic()
        watch.start()
        seconds, errors = _send_together(others, box.port)
        watch.stop()
        cpu = cpu_seconds(pid) - cpu
        rows = box.studies()
        rss = peak_rss_mb(pid)
        delivered = sum(row["state"] == "complete" for row in rows
                        if row["study_uid"] in previous)
        stored = sum(row["instances"] for row in rows)
        received = len(scp.files())
        files = sum(len(o.study.files) for o in others)
        if not errors:  # let delivery finish (not timed): a clean stop, and every file checked
            wait_all(box, lambda rows: _closed(rows, first + files) and _all_complete(rows),
                     time.monotonic() + DELIVERY_TIMEOUT_S, "every study delivered", poll_s=0.2)
            if len(scp.files()) != first + files:
                raise BenchError(f"storescp got {len(scp.files())} of {first + files}")
    if errors:
        raise BenchError(errors[0])
    if stored != first + files:
        raise BenchError(f"the box holds {stored} of {first + files} instances")
    size = sum(o.study.size_bytes for o in others)
    return Timing(sender.study.name, "concurrent", "box", seconds, files, size, {
        "senders": len(others), "peak_rss_mb": round(rss, 1), "cpu_s": round(cpu, 2),
        "cpu_s_per_gb": round(cpu / (size / 1e9), 1),
        "previous_studies_complete_at_end": f"{delivered}/{len(previous)}",
        "delivery_share": round(min(seconds, watch.done_at - began) / seconds, 2),
        "storescp_files_at_end": received})


class _DeliveryWatch(threading.Thread):
    """Polls `studies` until every study in ``uids`` is complete; ``done_at`` is when
    (time.monotonic()), or when stopped."""

    def __init__(self, box: BoxProcess, uids: set[str]) -> None:
        super().__init__(daemon=True)
        self.box, self.uids = box, uids
        self.done_at = float("inf")
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.1):
            rows = [r for r in self.box.studies() if r["study_uid"] in self.uids]
            if rows and all(r["state"] == "complete" for r in rows):
                break
        self.done_at = time.monotonic()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)


def _send_together(senders: tuple[Sender, ...], port: int) -> tuple[float, list[str]]:
    """Every sender's storescu at once; the wall-clock seconds until the last ends."""
    errors: list[str] = []

    def send(s: Sender) -> None:
        try:
            s.send(port, BOX_AET)
        except (BenchError, subprocess.TimeoutExpired) as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=send, args=(s,), daemon=True) for s in senders]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(SEND_TIMEOUT_S + 10)
    return time.perf_counter() - began, errors


# --------------------------------------------------------------------------- watching


def _closed(rows: list[dict[str, Any]], instances: int) -> bool:
    return (sum(row["instances"] for row in rows) == instances
            and all(row["state"] != "receiving" for row in rows))


def _all_complete(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and all(row["state"] == "complete" for row in rows)


def wait_all(box: BoxProcess, done: Callable[[list[dict[str, Any]]], bool], deadline: float,
             what: str, poll_s: float = POLL_S) -> tuple[float, list[dict[str, Any]]]:
    """Poll `studies` until ``done(rows)``; the wall-clock time of that answer and the rows."""
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        tick = time.monotonic()
        rows = box.studies()
        now = time.time()
        if done(rows):
            return now, rows
        time.sleep(max(0.0, poll_s - (time.monotonic() - tick)))
    states = sorted({row["state"] for row in rows})
    raise BenchError(f"not {what} in time (states {states})\n{box.log()[-2000:]}")

CLOSED_STATES = frozenset({"queued", "sending", "complete"})


def wait_state(box: BoxProcess, states: frozenset[str] | set[str],
               deadline: float) -> tuple[float, dict[str, Any]]:
    """Poll `studies` every POLL_S until the one study is in one of ``states``;
    the wall-clock time of that answer and the study's row."""
    while time.monotonic() < deadline:
        tick = time.monotonic()
        rows = box.studies()
        now = time.time()
        row = rows[0] if len(rows) == 1 else None
        # "complete" from the counts may be read a moment before the study's own record
        # says so (two reads): the record's completion time is awaited too.
        if row is not None and row["state"] in states and (
                row["state"] != "complete" or row["completed_at"] is not None):
            return now, row
        if row is not None and row["state"] in ("failed", "held"):
            raise BenchError(f"delivery ended {row['state']}: {row}")
        time.sleep(max(0.0, POLL_S - (time.monotonic() - tick)))
    raise BenchError(f"no study in {sorted(states)} in time\n{box.log()[-2000:]}")


def _logged_close(log: str) -> float | None:
    """The wall-clock time of the box's 'study closed' log line, if there is one."""
    for line in log.splitlines():
        if " study closed " in line:
            with contextlib.suppress(ValueError):
                return datetime.strptime(line[:23], _LOG_TIME).timestamp()
    return None


@contextlib.contextmanager
def _maybe_profile(profiler: Profiler | None, pid: int, name: str) -> Iterator[None]:
    if profiler is None:
        yield
        return
    with profiler.record(pid, name):
        yield

