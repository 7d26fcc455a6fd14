"""`python -m tests.bench.run --air`: the box and storescu over emulated radio links.

Each profile builds a link with tests/bench/linkemu.py: namespace A is the vehicle
(the box, and the modality sending to it over A's loopback), namespace B the
hospital (``storescp --fork`` as the PACS). Over the link go, in order: a
raw TCP bulk transfer (the ceiling), storescu straight to the PACS, the box
with ``associations = 4`` and ``adaptive = true``, and the same box with
``transfer_syntaxes = ["JPEGLSLossless"]`` on its destination. Each box sends the
CT study and then the mammography study (its adaptive figures carry over from
the first to the second, as they do in service).

Per transfer: time to complete (storescu: its run; box: from the study closing to
its last acknowledgment, on the box's clock), study bytes per second as a share
of the link rate, bytes the link forwarded A->B per study byte, TCP payload sent
again, TCP connections opened, the share of the link's capacity used and the lag
from start to the first TCP payload on the wire. One round per profile.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread

from appliance.control import ControlError
from appliance.demo.synthetic import write_ct_study, write_mg_study
from tests.bench import data, linkemu
from tests.bench.data import Study
from tests.bench.linkemu import REPO, Link
from tests.boxproc import BoxProcess, box_toml, site_toml
from tests.peers import peer_env, store_responses, storescu_profile

DATA_DIR = Path("build") / "bench-data" / "air"
RESULTS = Path("build") / "bench-air-results.json"
BOX_AET, PACS_AET = "FLUXBOX", "PACS"
BOX_PORT, TCP_PORT = 11112, 5201
BOX_START_S = 30.0
POLL_S = 0.05
_LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"
_STUDY_DATE = "20240101"

Say = Callable[[str], None]


@dataclass(frozen=True)
class Profile:
    """A link and the studies sent over it."""

    key: str
    name: str
    rate_mbit: float
    delay_ms: float
    link_class: str  # what the box is told its interface is
    loss_pct: float = 0.0
    drop_every_s: float | None = None
    drop_for_s: float = 2.0
    ct_slices: int = 60
    mg_views: int = 4

    def describe(self) -> str:
        extra = f", {self.loss_pct:g} % loss" if self.loss_pct else ""
        if self.drop_every_s:
            extra += f", down {self.drop_for_s:g} s every {self.drop_every_s:g} s"
        return (f"{self.name}: {self.rate_mbit:g} Mbit/s, {self.delay_ms:g} ms each way{extra}; "
                f"CT {self.ct_slices} x 512x512, MG {self.mg_views} view(s)")


PROFILES = (
    Profile("lte-good", "LTE good", 20, 50, "cellular"),
    Profile("lte-poor", "LTE poor", 3, 150, "cellular", loss_pct=1, drop_every_s=30,
            ct_slices=20, mg_views=1),
    Profile("wifi", "docked Wi-Fi", 100, 2, "wifi"),
)

BOX_TRANSMIT = "associations = 4\nadaptive = true"
VARIANTS: dict[str, tuple[str, ...]] = {"box": (), "box JPEG-LS": ("JPEGLSLossless",)}


@dataclass
class Run:
    """One transfer of one study over one profile's link."""

    profile: str
    study: str
    path: str  # "tcp" | "storescu" | "box" | "box JPEG-LS"
    size_bytes: int
    files: int
    rate_mbit: float
    completed: bool
    seconds: float | None = None
    wire_bytes: int = 0  # IP bytes the link forwarded A->B
    resent_bytes: int = 0  # TCP payload A->B sent again
    connections: int = 0
    first_byte_s: float | None = None  # from the start to the first TCP payload on the wire
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def goodput(self) -> float | None:
        """Study bytes per second over the link rate."""
        if not self.completed or not self.seconds:
            return None
        return self.size_bytes * 8 / self.seconds / (self.rate_mbit * 1e6)

    @property
    def wire_per_byte(self) -> float:
        return self.wire_bytes / self.size_bytes if self.size_bytes else 0.0

    @property
    def link_use(self) -> float | None:
        """Bits on the wire over what the link could carry in that time."""
        if not self.completed or not self.seconds:
            return None
        return self.wire_bytes * 8 / self.seconds / (self.rate_mbit * 1e6)


# --------------------------------------------------------------------------- studies


def studies(profile: Profile, log: Say) -> list[Study]:
    """The profile's CT and MG studies, and a second CT (other UIDs, same size) that the
    box sends last, with its adaptive figures warm; generated once into DATA_DIR."""
    n, views = profile.ct_slices, profile.mg_views
    ct = {"slices": n, "rows": 512, "cols": 512, "seed": 11, "study_date": _STUDY_DATE,
          "study_uid": f"1.2.826.0.1.3680043.8.498.2001.{n}"}
    ct2 = {**ct, "seed": 13, "study_uid": f"1.2.826.0.1.3680043.8.498.2003.{n}"}
    mg = {"views": views, "seed": 12, "study_date": _STUDY_DATE,
          "study_uid": f"1.2.826.0.1.3680043.8.498.2002.{views}"}
    return [_cached_study(f"ct{n}", "ct", write_ct_study, ct, log),
            _cached_study(f"mg{views}", "mg", write_mg_study, mg, log),
            _cached_study(f"ct{n}-second", "ct2", write_ct_study, ct2, log)]


def _cached_study(folder_name: str, name: str, writer: Callable[..., list[Path]],
                  params: dict[str, Any], log: Say) -> Study:
    folder = DATA_DIR / folder_name
    files = data._cached(folder, params)
    if files is None:
        log(f"generating {folder} ...")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        files = tuple(writer(folder, **params))
        (folder / "manifest.json").write_text(json.dumps(
            {"params": params, "files": [p.name for p in files]}))
    return Study(name, files)


# --------------------------------------------------------------------------- peers in namespaces


class NsBox(BoxProcess):
    """The box as a process inside a namespace of a Link."""

    def __init__(self, config_text: str, workdir: Path, link: Link, ns: str) -> None:
        super().__init__(config_text, workdir)
        self.link, self.ns = link, ns

    def start(self, timeout_s: float = BOX_START_S) -> NsBox:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = self.link.popen_in(
                self.ns, [sys.executable, "-m", "appliance", "run", "--config",
                          str(self.config_path)], stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=REPO)
        self.wait_for(self._answers, timeout_s, "box control socket")
        return self


@contextlib.contextmanager
def pacs(link: Link, workdir: Path, port: int) -> Iterator[Path]:
    """storescp (one process per association) in B; yields its output folder."""
    out = workdir / "pacs"
    out.mkdir(parents=True)
    args = ["storescp", "--fork", "--aetitle", PACS_AET, "--output-directory", str(out),
            "--accept-all", "--promiscuous", "--bit-preserving", "--disable-host-lookup",
            "--acse-timeout", "30", "--socket-timeout", "120", str(port)]
    with open(workdir / "storescp.log", "ab") as log:
        proc = link.popen_in(link.ns_b, args, stdout=log, stderr=subprocess.STDOUT,
                             env=peer_env())
    try:
        linkemu.wait_listening(link, link.ns_b, port)
        yield out
    finally:
        linkemu.kill_group(proc)


def received(out: Path) -> int:
    return sum(1 for p in out.rglob("*") if p.is_file())


def storescu_args(study: Study, profile_cfg: Path, host: str, port: int,
                  called: str) -> list[str]:
    """storescu sending each file in its own transfer syntax."""
    profile_cfg.write_text(storescu_profile(list(study.files)))
    return ["storescu", "--verbose", "--aetitle", "MODALITY", "--call", called,
            "--timeout", "15", "--acse-timeout", "30", "--dimse-timeout", "300",
            "--config-file", str(profile_cfg), "Default", host, str(port),
            *map(str, study.files)]


# --------------------------------------------------------------------------- measuring


@dataclass
class Meter:
    """Link counters at the start of a transfer."""

    link: Link
    before: dict[str, Any]
    started: float  # monotonic

    @classmethod
    def open(cls, link: Link) -> Meter:
        return cls(link, link.stats(), time.monotonic())

    def close(self, run: Run, start: float, end: float) -> Run:
        """Fill ``run`` with what crossed the link between ``start`` and ``end`` (monotonic)."""
        after = self.link.stats(timeline=True)
        a, b = after["a_to_b"], self.before["a_to_b"]
        run.wire_bytes = a["fwd_bytes"] - b["fwd_bytes"]
        run.resent_bytes = a["resent_bytes"] - b["resent_bytes"]
        run.connections = a["connections"] - b["connections"]
        run.first_byte_s = _first_byte(after, start, end)
        run.extra["outages"] = after["outages"] - self.before["outages"]
        run.extra["lost_pkts"] = a["lost_pkts"] - b["lost_pkts"]
        run.extra["queue_drops"] = a["queue_drops"] - b["queue_drops"]
        return run


def _first_byte(stats: dict[str, Any], start: float, end: float) -> float | None:
    """Seconds from ``start`` to the first timeline slot with A->B TCP payload before ``end``."""
    line = stats["timeline"]
    origin = time.monotonic() - stats["uptime_s"]
    first = max(0, int((start - origin) / line["slot_s"]))
    for slot in range(first, min(len(line["a_to_b_payload"]),
                                 int((end - origin) / line["slot_s"]) + 1)):
        if line["a_to_b_payload"][slot]:
            return max(0.0, origin + slot * line["slot_s"] - start)
    return None


def _deadline_s(profile: Profile, size_bytes: int) -> float:
    """How long a transfer may take before it counts as not completed."""
    return 4 * size_bytes * 8 / (profile.rate_mbit * 1e6) + 60


def tcp_reference(link: Link, profile: Profile) -> Run:
    """Raw TCP bulk A->B for about four seconds of the link's rate: the ceiling."""
    megabytes = profile.rate_mbit / 8 * 4
    me = [sys.executable, "-m", "tests.bench.linkemu"]
    link.popen_in(link.ns_b, [*me, "sink", str(TCP_PORT)], cwd=REPO)
    linkemu.wait_listening(link, link.ns_b, TCP_PORT)
    meter = Meter.open(link)
    run = Run(profile.name, "-", "tcp", int(megabytes * 1e6), 0, profile.rate_mbit, False)
    start = time.monotonic()
    cp = link.run_in(link.ns_a, [*me, "bulk", link.addr_b, str(TCP_PORT), str(megabytes)],
                     cwd=REPO, timeout=_deadline_s(profile, run.size_bytes))
    if cp.returncode == 0:
        result = json.loads(cp.stdout)
        run.completed, run.seconds = result["bytes"] == run.size_bytes, result["seconds"]
    return meter.close(run, start, time.monotonic())


def storescu_direct(link: Link, profile: Profile, study: Study, workdir: Path,
                    port: int) -> Run:
    """storescu in A straight to storescp in B."""
    run = Run(profile.name, study.name, "storescu", study.size_bytes, len(study.files),
              profile.rate_mbit, False)
    workdir.mkdir(parents=True)
    with pacs(link, workdir, port) as out:
        args = storescu_args(study, workdir / "storescu.cfg", link.addr_b, port, PACS_AET)
        meter = Meter.open(link)
        start = time.monotonic()
        try:
            cp = link.run_in(link.ns_a, args, env=peer_env(),
                             timeout=_deadline_s(profile, study.size_bytes))
        except subprocess.TimeoutExpired:
            run.extra["error"] = "timed out"
            return meter.close(run, start, time.monotonic())
        end = time.monotonic()
        ok = sum(answer == "Success" for _, answer in store_responses(cp))
        run.completed = ok == len(study.files) and received(out) == len(study.files)
        run.seconds = end - start
        if not run.completed:
            run.extra["error"] = f"exit {cp.returncode}, {ok} stored: {cp.stderr[-300:]}"
        return meter.close(run, start, end)


def box_config(profile: Profile, link: Link, data_dir: Path, pacs_port: int,
               syntaxes: tuple[str, ...]) -> str:
    dest: dict[str, Any] = {"name": "pacs", "ae_title": PACS_AET, "host": link.addr_b,
                            "port": pacs_port}
    if syntaxes:
        dest["transfer_syntaxes"] = list(syntaxes)
    text = box_toml(data_dir, BOX_PORT, site_toml("a", [dest]),
                    transmit=f"study_quiet_s = 0.5\ndimse_timeout_s = 60\n{BOX_TRANSMIT}")
    return f'[links]\nclasses = {{ {link.dev} = "{profile.link_class}" }}\n\n{text}'


def box_variant(link: Link, profile: Profile, study_list: list[Study], variant: str,
                workdir: Path, port: int) -> list[Run]:
    """One box in A with one PACS in B; the studies go through it one after the other."""
    workdir.mkdir(parents=True)
    runs = []
    with pacs(link, workdir, port) as out:
        config = box_config(profile, link, (workdir / "data").resolve(), port,
                            VARIANTS[variant])
        box = NsBox(config, workdir, link, link.ns_a)
        try:
            box.start()
            expected = 0
            for n, study in enumerate(study_list):
                expected += len(study.files)
                run = _box_study(link, box, profile, study, variant, workdir / f"s{n}", n)
                run.completed = run.completed and received(out) >= expected
                runs.append(run)
                if not run.completed:
                    break
            box.stop(timeout_s=30)
        except BaseException:
            box.kill9()
            raise
    return runs


def _box_study(link: Link, box: NsBox, profile: Profile, study: Study, variant: str,
               workdir: Path, index: int) -> Run:
    """The modality sends ``study`` to the box; wait until the box has delivered it."""
    run = Run(profile.name, study.name, variant, study.size_bytes, len(study.files),
              profile.rate_mbit, False)
    workdir.mkdir(parents=True)
    meter = Meter.open(link)
    interrupted = box.log().count("delivery interrupted")
    args = storescu_args(study, workdir / "storescu.cfg", "127.0.0.1", box.port, BOX_AET)
    cp = link.run_in(link.ns_a, args, env=peer_env(), timeout=300)
    stored = sum(answer == "Success" for _, answer in store_responses(cp))
    if stored != len(study.files):
        run.extra["error"] = f"the box stored {stored} of {len(study.files)}"
        return meter.close(run, meter.started, time.monotonic())
    uid = _study_uid(study)
    deadline = time.monotonic() + _deadline_s(profile, study.size_bytes) + 30
    row = _wait_study(box, uid, {"complete"}, deadline)
    now_mono = time.monotonic()
    if row is None:
        run.extra["error"] = "not delivered in time"
        return meter.close(run, meter.started, now_mono)
    to_mono = time.monotonic() - time.time()
    closes = _logged_closes(box.log())
    closed = closes[index] if len(closes) > index else None
    start = (closed + to_mono) if closed else meter.started
    end = float(row["completed_at"]) + to_mono if row.get("completed_at") else now_mono
    run.completed, run.seconds = True, end - start
    run.extra["interruptions"] = box.log().count("delivery interrupted") - interrupted
    return meter.close(run, start, end)


def _study_uid(study: Study) -> str:
    return str(dcmread(study.files[0], stop_before_pixels=True,
                       specific_tags=["StudyInstanceUID"]).StudyInstanceUID)


def _wait_study(box: BoxProcess, uid: str, states: set[str],
                deadline: float) -> dict[str, Any] | None:
    """Poll until the study ``uid`` is in one of ``states``; None at the deadline or if it
    ends failed or held."""
    while time.monotonic() < deadline:
        try:
            rows = box.studies()
        except ControlError:  # busy for a moment: ask again
            rows = []
        row = next((r for r in rows if r["study_uid"] == uid), None)
        if row is not None and row["state"] in states:
            return row
        if row is not None and row["state"] in ("failed", "held"):
            return None
        time.sleep(POLL_S)
    return None


def _logged_closes(log: str) -> list[float]:
    """Wall-clock times of the box's 'study closed' log lines, in order."""
    out = []
    for line in log.splitlines():
        if " study closed " in line:
            with contextlib.suppress(ValueError):
                out.append(datetime.strptime(line[:23], _LOG_TIME).timestamp())
    return out


# --------------------------------------------------------------------------- one profile


def run_profile(profile: Profile, tmp: Path, say: Say) -> list[Run]:
    """Every transfer of one profile, over one link."""
    study_list = studies(profile, say)
    data.warm_cache(study_list)
    runs: list[Run] = []
    ports = iter(range(11200, 11300))
    say(profile.describe())
    with Link(profile.rate_mbit, profile.delay_ms, profile.loss_pct, profile.drop_every_s,
              profile.drop_for_s) as link:
        _report(runs, tcp_reference(link, profile), say)
        for study in study_list[:2]:
            _report(runs, storescu_direct(link, profile, study,
                                          tmp / f"{profile.key}-scu-{study.name}", next(ports)),
                    say)
        for n, variant in enumerate(VARIANTS):
            for run in box_variant(link, profile, study_list, variant,
                                   tmp / f"{profile.key}-box{n}", next(ports)):
                _report(runs, run, say)
    return runs


def _report(runs: list[Run], run: Run, say: Say) -> None:
    runs.append(run)
    say("  " + _row(run))


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Verdict:
    what: str
    value: str
    need: str
    passed: bool


def verdicts(runs: list[Run]) -> list[Verdict]:
    """PASS/MISS against the over-the-air targets (the LTE good ones for the first CT,
    as configured, and for the second, with the box's adaptive figures warm)."""
    by = {(r.profile, r.study, r.path): r for r in runs}
    out = []
    for study, label in (("ct", "CT"), ("ct2", "second CT")):
        out += _lte_good(by.get(("LTE good", study, "box")),
                         by.get(("LTE good", "ct", "storescu")), label)
    poor = [r for r in runs if r.profile == "LTE poor" and r.path == "box"]
    if poor:
        done = sum(r.completed for r in poor)
        out.append(Verdict("LTE poor: the box completes every study", f"{done}/{len(poor)}",
                           f"{len(poor)}/{len(poor)}", done == len(poor)))
    for r in runs:
        if r.path == "box JPEG-LS" and r.study == "ct":
            out.append(Verdict(f"{r.profile} CT JPEG-LS: wire bytes / study bytes",
                               f"{r.wire_per_byte:.2f}", "<= 0.50",
                               r.completed and r.wire_per_byte <= 0.5))
    return out


def _lte_good(box: Run | None, scu: Run | None, label: str) -> list[Verdict]:
    if box is None:
        return []
    g = box.goodput or 0.0
    out = [Verdict(f"LTE good {label}: box goodput / link rate", f"{g:.2f}", ">= 0.85",
                   g >= 0.85)]
    if scu is not None and scu.goodput:
        ratio = g / scu.goodput
        out.append(Verdict(f"LTE good {label}: box / storescu goodput", f"{ratio:.2f}x",
                           ">= 1.3x", ratio >= 1.3))
    return out


HEADER = (f"{'profile':<13}{'study':<6}{'path':<13}{'MB':>7}{'s':>8}{'goodput':>9}"
          f"{'wire/B':>8}{'resent':>9}{'conns':>6}{'link use':>9}{'1st data':>9}  note")


def _row(r: Run) -> str:
    seconds = f"{r.seconds:.1f}" if r.seconds is not None and r.completed else "-"
    goodput = f"{r.goodput:.2f}" if r.goodput is not None else "-"
    use = f"{r.link_use:.2f}" if r.link_use is not None else "-"
    first = f"{r.first_byte_s:.2f}" if r.first_byte_s is not None else "-"
    wire = f"{r.wire_per_byte:.3f}" if r.path != "tcp" else "-"
    note = r.extra.get("error", "") if not r.completed else ""
    if r.extra.get("outages"):
        note += f"{r.extra['outages']} drop(s) "
    if r.extra.get("interruptions"):
        note += f"{r.extra['interruptions']} box interruption(s)"
    return (f"{r.profile:<13}{r.study:<6}{r.path:<13}{r.size_bytes / 1e6:>7.1f}{seconds:>8}"
            f"{goodput:>9}{wire:>8}{r.resent_bytes / 1e6:>8.2f}M{r.connections:>6}{use:>9}"
            f"{first:>9}  {note.strip()}")


def table(runs: list[Run], all_verdicts: list[Verdict]) -> str:
    lines = ["Flux Box over the air (one round per profile; peers with TCP_NODELAY=1; "
             f"box: {BOX_TRANSMIT.replace(chr(10), ', ')})", "", HEADER]
    lines += [_row(r) for r in runs]
    lines += ["goodput: study bytes per second / link rate; wire/B: bytes the link forwarded "
              "A->B per study byte;",
              "resent: TCP payload sent again; conns: TCP connections opened; link use: wire "
              "bits / (rate x time);",
              "1st data: from the start (storescu run, or the box closing the study) to the "
              f"first TCP payload on the wire ({linkemu.SLOT_S:g} s slots);",
              "ct2: a second CT of the same size, sent by the box after the first two studies "
              "(adaptive figures warm)", "",
              f"{'target':<50}{'value':>8}{'need':>10}  result"]
    lines += [f"{v.what:<50}{v.value:>8}{v.need:>10}  {'PASS' if v.passed else 'MISS'}"
              for v in all_verdicts]
    return "\n".join(lines)


def results_json(profiles: list[Profile], runs: list[Run], all_verdicts: list[Verdict],
                 seconds: float) -> dict:
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(), "seconds": round(seconds, 1),
        "profiles": [asdict(p) for p in profiles],
        "box_transmit": BOX_TRANSMIT,
        "runs": [{**asdict(r), "goodput": r.goodput, "wire_per_byte": r.wire_per_byte,
                  "link_use": r.link_use} for r in runs],
        "targets": [asdict(v) for v in all_verdicts],
    }


def main(profile_keys: list[str] | None = None, strict: bool = False,
         say: Say = print) -> int:
    """Run the chosen profiles (all by default); print the table; exit status."""
    reason = linkemu.unavailable()
    if reason:
        say(f"over-the-air bench skipped: {reason}")
        return 1 if strict else 0
    chosen = [p for p in PROFILES if profile_keys is None or p.key in profile_keys]
    started = time.monotonic()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="fluxbox-air-") as tmp:
        for profile in chosen:
            runs += run_profile(profile, Path(tmp), say)
    all_verdicts = verdicts(runs)
    say("\n" + table(runs, all_verdicts))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results_json(chosen, runs, all_verdicts,
                                               time.monotonic() - started), indent=2) + "\n")
    say(f"\nresults: {RESULTS} ({time.monotonic() - started:.0f} s)")
    return 1 if strict and not all(v.passed for v in all_verdicts) else 0
