"""Timed transfers: storescu into the box, storescp and Orthanc; the box delivering a study.

Every process started here is stopped on the way out, errors and Ctrl-C included;
every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
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

    def send(self, port: int, called_aet: str) -> float:
        """Send the study; the wall-clock seconds of the storescu run."""
        start = time.perf_counter()
        cp = subprocess.run(self.args(port, called_aet), env=peer_env(), capture_output=True,
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


def storescp_ingest(sender: Sender, kind: str = "ingest", target: str = "storescp") -> Timing:
    """storescu -> DCMTK storescp writing to a temp dir."""
    with StoreSCP(aet="STORESCP") as scp:
        settle_disk()
        seconds = sender.send(scp.port, scp.aet)
        received = len(scp.files())
    if received != len(sender.study.files):
        raise BenchError(f"storescp wrote {received} of {len(sender.study.files)} files")
    return _timing(sender.study, kind, target, seconds)


def storescu_delivery(sender: Sender) -> Timing:
    """The delivery baseline: DCMTK storescu -> storescp, the same files."""
    return storescp_ingest(sender, kind="delivery", target="storescu")


def orthanc_ingest(sender: Sender) -> Timing:
    """storescu -> Orthanc with a private temp storage."""
    with Orthanc(aet="ORTHANC") as pacs:
        settle_disk()
        seconds = sender.send(pacs.dicom_port, pacs.aet)
        stored = pacs.count_instances()
    if stored != len(sender.study.files):
        raise BenchError(f"Orthanc stored {stored} of {len(sender.study.files)} instances")
    return _timing(sender.study, "ingest", "orthanc", seconds)


# --------------------------------------------------------------------------- the box


def box_config(data_dir: Path, port: int, dest_port: int, dest_aet: str,
               transmit: str = "") -> str:
    """The test harness's box: one fixed site whose one destination is dest_aet at dest_port;
    ``transmit`` adds or overrides [transmit] settings."""
    dest = {"name": "pacs", "ae_title": dest_aet, "host": LOOPBACK, "port": dest_port}
    return box_toml(data_dir, port, site_toml("a", [dest]),
                    transmit=f"study_quiet_s = 0.5\ndimse_timeout_s = 60\n{transmit}")


@contextlib.contextmanager
def running_box(workdir: Path, dest_port: int, dest_aet: str,
                transmit: str = "") -> Iterator[BoxProcess]:
    """A started box; SIGTERM on the way out (SIGKILL after an error or a slow stop)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = box_config(workdir / "data", free_port(), dest_port, dest_aet, transmit)
    box = BoxProcess(config, workdir)
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


def _box_pid(box: BoxProcess) -> int:
    assert box.proc is not None
    return box.proc.pid


def box_ingest(sender: Sender, workdir: Path, profiler: Profiler | None = None,
               transmit: str = "") -> Timing:
    """storescu -> the box, whose destination is a closed port (nothing leaves meanwhile)."""
    with running_box(workdir, free_port(), "NOWHERE", transmit) as box:
        settle_disk()
        cpu = cpu_seconds(_box_pid(box))
        with _maybe_profile(profiler, _box_pid(box), f"ingest-{sender.study.name}"):
            seconds = sender.send(box.port, BOX_AET)
        cpu = cpu_seconds(_box_pid(box)) - cpu
        stored = sum(row["instances"] for row in box.studies())
        rss = peak_rss_mb(_box_pid(box))
    if stored != len(sender.study.files):
        raise BenchError(f"the box holds {stored} of {len(sender.study.files)} instances")
    return _timing(sender.study, "ingest", "box", seconds, peak_rss_mb=round(rss, 1),
                   cpu_s=round(cpu, 2))


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


# --------------------------------------------------------------------------- watching

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

