"""Medians of the timed runs, ratios against the peers, targets, the table and the JSON."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from tests.bench.measure import Timing

LABELS = {
    ("ingest", "box"): "ingest   storescu -> box",
    ("ingest", "storescp"): "ingest   storescu -> storescp",
    ("ingest", "orthanc"): "ingest   storescu -> Orthanc",
    ("ingest-nagle", "box"): "ingest   storescu Nagle -> box",
    ("ingest-nagle", "storescp"): "ingest   storescu Nagle -> storescp",
    ("ingest-nagle", "orthanc"): "ingest   storescu Nagle -> Orthanc",
    ("delivery", "box"): "delivery box -> storescp",
    ("delivery", "storescu"): "delivery storescu -> storescp",
    ("concurrent", "box"): "ingest   2 storescu -> box delivering",
}
SMALL = ("small",)
RSS_LIMIT_MB = 150.0


@dataclass(frozen=True)
class Target:
    """The box's rate / a peer's rate (``peer_kind`` of the peer, default ``kind``) must reach
    ``need`` for the studies in ``only`` (all when empty) and not in ``skip``."""

    kind: str
    peer: str
    need: float
    peer_kind: str = ""
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()

    def applies(self, study: str) -> bool:
        return (not self.only or study in self.only) and study not in self.skip


TARGETS = (Target("ingest", "storescp", 0.4, skip=SMALL),
           Target("ingest", "storescp", 1.0, only=SMALL),
           Target("ingest-nagle", "storescp", 1.0, only=SMALL),
           Target("ingest", "orthanc", 1.2),
           Target("ingest-nagle", "orthanc", 1.2, only=SMALL),
           Target("delivery", "storescu", 0.5),
           # two modalities sending while delivery runs, against one modality alone
           Target("concurrent", "box", 0.8, peer_kind="ingest"))


@dataclass(frozen=True)
class Rate:
    """The median of the runs of one (study, kind, target)."""

    study: str
    kind: str
    target: str
    runs: int
    seconds: float
    min_s: float
    max_s: float
    mb_s: float
    images_s: float
    peak_rss_mb: float | None
    cpu_share: float | None  # the box's CPU seconds per wall-clock second (1.0: one core)
    syncs_per_instance: float | None = None  # the box's sync calls while storescu ran
    write_amp: float | None = None  # bytes the box wrote (write_bytes) per study byte
    cpu_s_per_gb: float | None = None  # the box's CPU seconds per GB of study
    delivery_share: float | None = None  # concurrent: the share of it delivery ran


@dataclass(frozen=True)
class Verdict:
    """``ratio`` (box / peer, or for kind "rss" the peak RSS in MB) against ``need``
    (a floor, or for "rss" a ceiling)."""

    study: str
    kind: str
    peer: str
    ratio: float
    need: float

    @property
    def passed(self) -> bool:
        return self.ratio < self.need if self.kind == "rss" else self.ratio >= self.need


def rates(timings: list[Timing]) -> list[Rate]:
    """One Rate per (study, kind, target), in the order first measured."""
    groups: dict[tuple[str, str, str], list[Timing]] = {}
    for t in timings:
        groups.setdefault((t.study, t.kind, t.target), []).append(t)
    return [_rate(key, runs) for key, runs in groups.items()]


def _rate(key: tuple[str, str, str], runs: list[Timing]) -> Rate:
    seconds = statistics.median(t.seconds for t in runs)
    rss = [t.extra["peak_rss_mb"] for t in runs if "peak_rss_mb" in t.extra]
    cpu = [t.extra["cpu_s"] / t.seconds for t in runs if "cpu_s" in t.extra]
    first = runs[0]
    return Rate(*key, runs=len(runs), seconds=seconds, min_s=min(t.seconds for t in runs),
                max_s=max(t.seconds for t in runs), mb_s=first.size_bytes / 1e6 / seconds,
                images_s=first.files / seconds, peak_rss_mb=max(rss) if rss else None,
                cpu_share=statistics.median(cpu) if cpu else None,
                syncs_per_instance=_median(runs, "syncs_per_instance"),
                write_amp=_median(runs, "write_amp"), cpu_s_per_gb=_median(runs, "cpu_s_per_gb"),
                delivery_share=_median(runs, "delivery_share"))


def _median(runs: list[Timing], key: str) -> float | None:
    values = [t.extra[key] for t in runs if t.extra.get(key) is not None]
    return statistics.median(values) if values else None


def verdicts(all_rates: list[Rate]) -> list[Verdict]:
    """Every target whose two rates were measured, then peak RSS per study."""
    by_key = {(r.study, r.kind, r.target): r for r in all_rates}
    out = []
    for study in dict.fromkeys(r.study for r in all_rates):
        for target in TARGETS:
            box = by_key.get((study, target.kind, "box"))
            peer = by_key.get((study, target.peer_kind or target.kind, target.peer))
            if box and peer and target.applies(study):
                out.append(Verdict(study, target.kind, target.peer, box.mb_s / peer.mb_s,
                                   target.need))
        rss = [r.peak_rss_mb for r in all_rates if r.study == study and r.peak_rss_mb]
        if rss:
            out.append(Verdict(study, "rss", "box", max(rss), RSS_LIMIT_MB))
    return out


def _cell(value: float | None, form: str) -> str:
    return format(value, form) if value is not None else ""


def table(all_rates: list[Rate], all_verdicts: list[Verdict], header: str,
          syncs_from: str = "strace") -> str:
    """The printed report."""
    lines = [header, "",
             f"{'study':<6}{'path':<38}{'MB/s':>8}{'img/s':>9}{'median s':>10}"
             f"{'min-max s':>14}{'box RSS':>9}{'box CPU':>9}{'syncs/img':>10}"
             f"{'wr amp':>8}{'CPU s/GB':>10}"]
    for r in all_rates:
        rss = f"{r.peak_rss_mb:.0f} MB" if r.peak_rss_mb is not None else ""
        lines.append(f"{r.study.upper():<6}{LABELS[(r.kind, r.target)]:<38}{r.mb_s:>8.1f}"
                     f"{r.images_s:>9.1f}{r.seconds:>10.2f}"
                     f"{f'{r.min_s:.2f}-{r.max_s:.2f}':>14}{rss:>9}"
                     f"{_cell(r.cpu_share, '.0%'):>9}{_cell(r.syncs_per_instance, '.2f'):>10}"
                     f"{_cell(r.write_amp, '.2f'):>8}{_cell(r.cpu_s_per_gb, '.0f'):>10}")
    lines += ["box RSS: peak resident set (VmHWM); box CPU: its CPU time / wall time "
              "(100% = one core)",
              f"syncs/img: the box's fsync, fdatasync, msync, sync_file_range and syncfs calls "
              f"per instance while storescu ran (from {syncs_from})",
              "wr amp: bytes the box wrote (/proc/<pid>/io write_bytes) per study byte; "
              "CPU s/GB: the box's CPU seconds per GB of study",
              "Nagle: storescu with DCMTK's defaults (no TCP_NODELAY); every other sender and "
              "every peer with TCP_NODELAY=1",
              "2 storescu -> box delivering: two twins of the study sent at once while the box "
              "delivers the study to storescp"
              + "".join(f"; {r.study.upper()}: delivery ran {r.delivery_share:.0%} of the time"
                        for r in all_rates if r.delivery_share is not None),
              "", f"{'study':<6}{'ratio':<40}{'value':>9}{'target':>10}  result"]
    for v in all_verdicts:
        if v.kind == "rss":
            name, value, need = "peak RSS of the box", f"{v.ratio:.0f} MB", f"< {v.need:.0f} MB"
        else:
            name = f"{v.kind} box / {_peer_name(v.kind, v.peer)}"
            value, need = f"{v.ratio:.2f}x", f">= {v.need:.1f}x"
        lines.append(f"{v.study.upper():<6}{name:<40}{value:>9}{need:>10}"
                     f"  {'PASS' if v.passed else 'MISS'}")
    return "\n".join(lines)


def _peer_name(kind: str, peer: str) -> str:
    if kind == "concurrent":
        return "1 sender alone"
    return "Orthanc" if peer == "orthanc" else peer


def results_json(timings: list[Timing], all_rates: list[Rate], all_verdicts: list[Verdict],
                 meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "rates": [asdict(r) for r in all_rates],
        "targets": [{**asdict(v), "passed": v.passed} for v in all_verdicts],
        "runs": [{**asdict(t), "mb_s": t.mb_s, "images_s": t.images_s} for t in timings],
    }
