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
    ("delivery", "box"): "delivery box -> storescp",
    ("delivery", "storescu"): "delivery storescu -> storescp",
}


@dataclass(frozen=True)
class Target:
    """box rate / peer rate must reach ``need`` for one study and kind."""

    kind: str
    peer: str
    need: float


TARGETS = (Target("ingest", "storescp", 0.4), Target("ingest", "orthanc", 1.2),
           Target("delivery", "storescu", 0.5))


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


@dataclass(frozen=True)
class Verdict:
    study: str
    kind: str
    peer: str
    ratio: float
    need: float

    @property
    def passed(self) -> bool:
        return self.ratio >= self.need


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
                cpu_share=statistics.median(cpu) if cpu else None)


def verdicts(all_rates: list[Rate]) -> list[Verdict]:
    by_key = {(r.study, r.kind, r.target): r for r in all_rates}
    out = []
    for study in dict.fromkeys(r.study for r in all_rates):
        for target in TARGETS:
            box = by_key.get((study, target.kind, "box"))
            peer = by_key.get((study, target.kind, target.peer))
            if box and peer:
                out.append(Verdict(study, target.kind, target.peer, box.mb_s / peer.mb_s,
                                   target.need))
    return out


def table(all_rates: list[Rate], all_verdicts: list[Verdict], header: str) -> str:
    """The printed report."""
    lines = [header, "",
             f"{'study':<6}{'path':<32}{'MB/s':>8}{'img/s':>9}{'median s':>10}"
             f"{'min-max s':>14}{'box RSS':>9}{'box CPU':>9}"]
    for r in all_rates:
        rss = f"{r.peak_rss_mb:.0f} MB" if r.peak_rss_mb is not None else ""
        cpu = f"{r.cpu_share:.0%}" if r.cpu_share is not None else ""
        lines.append(f"{r.study.upper():<6}{LABELS[(r.kind, r.target)]:<32}{r.mb_s:>8.1f}"
                     f"{r.images_s:>9.1f}{r.seconds:>10.2f}"
                     f"{f'{r.min_s:.2f}-{r.max_s:.2f}':>14}{rss:>9}{cpu:>9}")
    lines += ["box RSS: peak resident set (VmHWM); box CPU: its CPU time / wall time "
              "(100% = one core)",
              "", f"{'study':<6}{'ratio':<34}{'value':>7}{'target':>10}  result"]
    for v in all_verdicts:
        name = f"{v.kind} box / {_peer_name(v.peer)}"
        lines.append(f"{v.study.upper():<6}{name:<34}{v.ratio:>6.2f}x{f'>= {v.need:.1f}x':>10}"
                     f"  {'PASS' if v.passed else 'MISS'}")
    return "\n".join(lines)


def _peer_name(peer: str) -> str:
    return "Orthanc" if peer == "orthanc" else peer


def results_json(timings: list[Timing], all_rates: list[Rate], all_verdicts: list[Verdict],
                 meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "rates": [asdict(r) for r in all_rates],
        "targets": [{**asdict(v), "passed": v.passed} for v in all_verdicts],
        "runs": [{**asdict(t), "mb_s": t.mb_s, "images_s": t.images_s} for t in timings],
    }
