"""`make bench`: ingest and delivery rates of the box beside DCMTK storescp/storescu and Orthanc.

Runs on loopback, every DCMTK and Orthanc peer with TCP_NODELAY=1. Each round
measures every path once per study, interleaved, so disk speed swings hit all
of them alike; the table shows medians. Results go to build/bench-results.json.

    python -m tests.bench.run [--repeat N] [--studies ct,mg,small] [--only delivery]
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


def steps(transmit: str, only: str | None = None) -> tuple[tuple[str, Step], ...]:
    """Every measured path of one round, in order (``only``: the ones of that kind);
    ``transmit`` goes to the box's config."""
    every = (
        ("box ingest", partial(measure.box_ingest, transmit=transmit)),
        ("storescp ingest", lambda s, _: measure.storescp_ingest(s)),
        ("Orthanc ingest", lambda s, _: measure.orthanc_ingest(s)),
        ("box delivery", partial(measure.box_delivery, transmit=transmit)),
        ("storescu delivery", lambda s, _: measure.storescu_delivery(s)),
    )
    return tuple((name, step) for name, step in every if only is None or name.endswith(only))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--studies", default="ct,mg,small",
                        help="comma-separated: ct, mg, small")
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
    _say(f"  {sender.study.name.upper():<3} {name:<18} {timing.seconds:7.2f} s "
         f"{timing.mb_s:7.1f} MB/s {timing.images_s:7.1f} img/s")
    return timing


def _rounds(senders: list[Sender], tmp: Path, repeat: int, transmit: str,
            only: str | None) -> list[Timing]:
    timings = []
    for n in range(1, repeat + 1):
        _say(f"round {n}/{repeat}")
        for sender in senders:
            for i, (name, step) in enumerate(steps(transmit, only)):
                timings.append(_run_step(name, step, sender, tmp, f"r{n}-{sender.study.name}-{i}"))
    return timings


def _profiled(senders: list[Sender], tmp: Path, transmit: str,
              only: str | None) -> tuple[list[Timing], list[str]]:
    """One extra box ingest and delivery per study under py-spy; timings and summaries."""
    profiler = Profiler(PROFILE_DIR)
    _say(f"profiling the box with py-spy at {profiler.rate_hz} Hz (runs not counted)")
    timings = []
    for sender in senders:
        for kind, step in (("ingest", measure.box_ingest), ("delivery", measure.box_delivery)):
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


def _meta(args: argparse.Namespace, studies: list[data.Study]) -> dict[str, Any]:
    version = subprocess.run(["storescu", "--version"], capture_output=True, text=True,
                             check=False, timeout=10).stdout.splitlines()[:1]
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version(), "dcmtk": " ".join(version)},
        "rounds": args.repeat,
        "box_transmit": args.transmit,
        "studies": {s.name: {"files": len(s.files), "bytes": s.size_bytes} for s in studies},
        "peers": "loopback; storescp, storescu and Orthanc with TCP_NODELAY=1",
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    if args.air:
        return air.main(args.air_profiles, strict=args.strict, say=_say)
    started = time.monotonic()
    studies = [data.study(DATA_DIR, name, log=_say) for name in args.studies]
    data.warm_cache(studies)
    for s in studies:
        _say(f"{s.name.upper()}: {len(s.files)} files, {s.megabytes:.1f} MB")
    with tempfile.TemporaryDirectory(prefix="fluxbox-bench-") as tmp_name:
        tmp = Path(tmp_name)
        senders = [Sender(s, tmp) for s in studies]
        timings = _rounds(senders, tmp, args.repeat, args.transmit, args.only)
        profiled, summaries = (_profiled(senders, tmp, args.transmit, args.only) if args.profile
                               else ([], []))
    all_rates = report.rates(timings)
    all_verdicts = report.verdicts(all_rates)
    header = (f"Flux Box bench: medians of {args.repeat} rounds, loopback, "
              f"{os.cpu_count()} CPUs, peers with TCP_NODELAY=1")
    _say("\n" + report.table(all_rates, all_verdicts, header))
    results = report.results_json(timings, all_rates, all_verdicts, _meta(args, studies))
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
