"""`make bench`: ingest and delivery rates of the box beside DCMTK storescp/storescu and Orthanc.

Runs on loopback, every DCMTK and Orthanc peer with TCP_NODELAY=1. Each round
measures every path once per study, interleaved, so disk speed swings hit all
of them alike; the table shows medians. Results go to build/bench-results.json.

The studies: ``ct`` and ``mg`` (large instances, MB/s) and ``small`` (5,000
instances of 8 KB in 200 studies, instances per second; ``--small-count`` for
fewer). For ``small`` every ingest is measured twice, storescu with
TCP_NODELAY=1 and with DCMTK's defaults (Nagle on), and delivery sends all
its studies after a ``retry``. Every box ingest counts the box's syncs per
instance (perf stat, else strace), bytes written per byte received and CPU seconds per GB. The
concurrent step sends two copies of the study under other UIDs at once while
the box delivers the study itself, against one sender alone.

    python -m tests.bench.run [--repeat N] [--studies ct,mg,small] [--small-count N]
                              [--only ingest|delivery]
                              [--profile] [--strict] [--transmit "associations = 2"]
    python -m tests.bench.run --air [--air-profiles lte-good,lte-poor,wifi] [--strict]

``--only`` measures one kind of path (ingest or delivery). ``--profile`` adds one
extra, untimed box ingest and delivery per study under py-spy and prints where the box's
threads spend their time (files in build/bench-profile/). ``--transmit`` tries
[transmit] settings on the box. ``--air`` runs the over-the-air bench instead
(tests/bench/air.py: emulated LTE and Wi-Fi links between network namespaces; needs
root; build/bench-air-results.json).
Targets that are missed print MISS; only ``--strict`` turns them into exit 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from tests.bench import air, data, measure, report
from tests.bench.measure import Sender, Timing
from tests.bench.profile import Profiler, render, summarise

BUILD = Path("build")
DATA_DIR = BUILD / "bench-data"
RESULTS = BUILD / "bench-results.json"
PROFILE_DIR = BUILD / "bench-profile"

Step = Callable[[Sender, Path], Timing]
TWIN_TAGS = ("b", "c")  # the concurrent step's two modalities


def delivery_step(study: str) -> Callable[..., Timing]:
    """The box's delivery measurement: one study, or many (the small set) after a retry."""
    return measure.box_delivery_many if study == "small" else measure.box_delivery


def steps(study: str, transmit: str, twins: dict[str, tuple[Sender, ...]],
          only: str | None = None) -> tuple[tuple[str, Step], ...]:
    """Every measured path of one round for ``study``, in order (``only``: those of that
    kind, "ingest" or "delivery"); ``transmit`` goes to the box's config; ``twins`` are the
    concurrent step's senders per study."""
    nagle: tuple[tuple[str, Step], ...] = (
        ("box ingest Nagle", partial(measure.box_ingest, transmit=transmit,
                                     kind="ingest-nagle", nodelay=False)),
        ("storescp ingest Nagle", lambda s, _: measure.storescp_ingest(
            s, kind="ingest-nagle", nodelay=False)),
        ("Orthanc ingest Nagle", lambda s, _: measure.orthanc_ingest(
            s, kind="ingest-nagle", nodelay=False)),
    ) if study == "small" else ()
    every: tuple[tuple[str, Step], ...] = (
        ("box ingest", partial(measure.box_ingest, transmit=transmit)),
        ("storescp ingest", lambda s, _: measure.storescp_ingest(s)),
        ("Orthanc ingest", lambda s, _: measure.orthanc_ingest(s)),
        *nagle,
        ("box delivery", partial(delivery_step(study), transmit=transmit)),
        ("storescu delivery", lambda s, _: measure.storescu_delivery(s)),
        ("box 2 senders", lambda s, w: measure.box_concurrent(s, twins[s.study.name], w,
                                                             transmit)),
    )
    return tuple((name, step) for name, step in every if only is None or only in name
                 or (only == "ingest" and "senders" in name))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--studies", default="ct,mg",
                        help="comma-separated: ct, mg, small (default ct,mg)")
    parser.add_argument("--small-count", type=int, default=data.SMALL_COUNT, metavar="N",
                        help=f"instances in the small set, {data.SMALL_PER_STUDY} per study "
                        f"(default {data.SMALL_COUNT})")
    parser.add_argument("--only", choices=("ingest", "delivery"),
                        help="measure only this kind of path")
    parser.add_argument("--profile", action="store_true", help="also profile the box (py-spy)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--transmit", default="", metavar="TOML",
                        help='extra [transmit] settings for the box, separated by ";", '
                        'e.g. "associations = 2"')
    parser.add_argument("--air", action="store_true",
                        help="the over-the-air bench over emulated links instead")
    parser.add_argument("--air-profiles", default=",".join(p.key for p in air.PROFILES),
                        help="with --air, comma-separated: "
                        + ", ".join(p.key for p in air.PROFILES))
    args = parser.parse_args(argv)
    args.air_profiles = [p for p in args.air_profiles.split(",") if p]
    if set(args.air_profiles) - {p.key for p in air.PROFILES}:
        parser.error(f"unknown --air-profiles {args.air_profiles}")
    args.studies = [s for s in args.studies.split(",") if s]
    args.transmit = args.transmit.replace(";", "\n")
    unknown = set(args.studies) - set(data.WRITERS)
    if unknown or args.repeat < 1:
        parser.error(f"unknown studies {sorted(unknown)}" if unknown else "--repeat >= 1")
    if args.small_count < 1:
        parser.error("--small-count >= 1")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and SIGINT (even where the shell ignored it) unwind like Ctrl-C."""
    raise KeyboardInterrupt


def _say(text: str) -> None:
    print(text, flush=True)


def _run_step(name: str, step: Step, sender: Sender, tmp: Path, tag: str) -> Timing:
    workdir = tmp / tag
    try:
        timing = step(sender, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _say(f"  {sender.study.name.upper():<5} {name:<21} {timing.seconds:7.2f} s "
         f"{timing.mb_s:7.1f} MB/s {timing.images_s:7.1f} img/s")
    return timing


def _rounds(senders: list[Sender], tmp: Path, repeat: int, transmit: str,
            twins: dict[str, tuple[Sender, ...]], only: str | None = None) -> list[Timing]:
    timings = []
    for n in range(1, repeat + 1):
        _say(f"round {n}/{repeat}")
        for sender in senders:
            for i, (name, step) in enumerate(steps(sender.study.name, transmit, twins, only)):
                timings.append(_run_step(name, step, sender, tmp, f"r{n}-{sender.study.name}-{i}"))
    return timings


def _profiled(senders: list[Sender], tmp: Path, transmit: str,
              only: str | None) -> tuple[list[Timing], list[str]]:
    """One extra box ingest and delivery per study under py-spy; timings and summaries."""
    profiler = Profiler(PROFILE_DIR)
    _say(f"profiling the box with py-spy at {profiler.rate_hz} Hz (runs not counted)")
    timings = []
    for sender in senders:
        for kind, step in (("ingest", measure.box_ingest),
                           ("delivery", delivery_step(sender.study.name))):
            if only not in (None, kind):
                continue
            timings.append(_run_step(
                f"box {kind} (prof)", partial(step, profiler=profiler, transmit=transmit),
                sender, tmp, f"prof-{sender.study.name}-{kind}"))
    texts = []
    for name, path in profiler.outputs.items():
        text = render(name, summarise(path), profiler.rate_hz)
        (PROFILE_DIR / f"{name}.summary.txt").write_text(text + "\n")
        texts.append(text)
    return timings, texts


def _meta(args: argparse.Namespace, studies: list[data.Study],
          syncs_from: str) -> dict[str, Any]:
    version = subprocess.run(["storescu", "--version"], capture_output=True, text=True,
                             check=False, timeout=10).stdout.splitlines()[:1]
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version(), "dcmtk": " ".join(version)},
        "rounds": args.repeat,
        "box_transmit": args.transmit,
        "studies": {s.name: {"files": len(s.files), "bytes": s.size_bytes} for s in studies},
        "peers": "loopback; storescp, storescu and Orthanc with TCP_NODELAY=1, but storescu "
                 "with DCMTK's defaults (Nagle on) in the ingest-nagle runs",
        "syncs_from": syncs_from,
        "rss_limit_mb": report.RSS_LIMIT_MB,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    if args.air:
        return air.main(args.air_profiles, strict=args.strict, say=_say)
    started = time.monotonic()
    studies = [data.study(DATA_DIR, name, log=_say, small_count=args.small_count)
               for name in args.studies]
    twin_studies = {s.name: tuple(data.twin(DATA_DIR, s, tag, log=_say) for tag in TWIN_TAGS)
                    for s in studies}
    data.warm_cache([*studies, *(t for ts in twin_studies.values() for t in ts)])
    for s in studies:
        _say(f"{s.name.upper()}: {len(s.files)} files, {s.megabytes:.1f} MB")
    syncs_from = measure.syncs_counted_by()
    with tempfile.TemporaryDirectory(prefix="fluxbox-bench-") as tmp_name:
        tmp = Path(tmp_name)
        senders = [Sender(s, tmp) for s in studies]
        twins = {name: tuple(Sender(t, tmp) for t in ts) for name, ts in twin_studies.items()}
        timings = _rounds(senders, tmp, args.repeat, args.transmit, twins, args.only)
        profiled, summaries = (_profiled(senders, tmp, args.transmit, args.only) if args.profile
                               else ([], []))
    all_rates = report.rates(timings)
    all_verdicts = report.verdicts(all_rates)
    header = (f"Flux Box bench: medians of {args.repeat} rounds, loopback, "
              f"{os.cpu_count()} CPUs, peers with TCP_NODELAY=1")
    _say("\n" + report.table(all_rates, all_verdicts, header, syncs_from))
    results = report.results_json(timings, all_rates, all_verdicts,
                                  _meta(args, studies, syncs_from))
    results["profiled_runs"] = [dataclasses.asdict(t) for t in profiled]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for text in summaries:
        _say("\n" + text)
    _say(f"\nresults: {RESULTS} ({time.monotonic() - started:.0f} s)")
    return 1 if args.strict and not all(v.passed for v in all_verdicts) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        sys.exit(130)
    except measure.BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
