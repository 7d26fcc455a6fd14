"""`make bench-pdu`: the box's ingest rate and peak memory against its maximum PDU.

For each `box.max_pdu` in turn a fresh box receives one large instance from a
pynetdicom SCU that announces no limit of its own (it fills every PDU up to the
box's maximum), `--repeat` times; the table shows the median rate and the box's
peak resident set (VmHWM). The chosen default (appliance.upper_layer.DEFAULT_MAX_PDU)
is the smallest size whose rate is within a few per cent of the best.

    python -m tests.bench.pdu [--sizes 16384,65536,...] [--megabytes 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pynetdicom import AE

from appliance import dimse
from appliance.demo.synthetic import write_multiframe
from tests.bench.measure import peak_rss_mb
from tests.boxproc import BoxProcess, box_toml, site_toml
from tests.peers import free_port

SIZES = (16_384, 65_536, 131_072, 262_144, 1_048_576, 4_194_304)


def send_once(path: Path, port: int) -> float:
    """Seconds from association to the C-STORE response (the instance is then durable)."""
    ae = AE(ae_title="BENCH")
    ae.maximum_pdu_size = 0
    ae.dimse_timeout = ae.network_timeout = 300
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.1.2.1")
    started = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title="FLUXBOX")
    if not assoc.is_established:
        raise RuntimeError("association refused")
    status = assoc.send_c_store(path)
    assoc.release()
    if int(status.Status) != 0:
        raise RuntimeError(f"status 0x{int(status.Status):04X}")
    return time.monotonic() - started


def measure(path: Path, max_pdu: int, repeat: int, tmp: Path) -> tuple[float, float]:
    """Median seconds and peak RSS (MB) of `repeat` sends to a box announcing `max_pdu`."""
    workdir = tmp / f"box-{max_pdu}"
    workdir.mkdir()
    config = box_toml(workdir / "data", free_port(),
                      site_toml("a", [{"name": "p", "ae_title": "NOWHERE",
                                       "host": "127.0.0.1", "port": free_port()}]),
                      box=f"max_pdu = {max_pdu}")
    with BoxProcess(config, workdir) as box:
        seconds = [send_once(path, box.port) for _ in range(repeat)]
        rss = peak_rss_mb(box.proc.pid)
    return statistics.median(seconds), rss


def main(argv: list[str] | None = None) -> int:
    dimse.configure()  # the sender runs with the box's pynetdicom settings
    parser = argparse.ArgumentParser(prog="python -m tests.bench.pdu",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="bench-pdu-") as tmp_name:
        tmp = Path(tmp_name)
        big = write_multiframe(tmp / "big.dcm", size_bytes=args.megabytes * 1024 * 1024)
        megabytes = big.stat().st_size / 1e6
        print(f"{'box.max_pdu':>12}{'MB/s':>8}{'seconds':>9}{'box RSS':>9}")
        for size in sizes:
            seconds, rss = measure(big, size, args.repeat, tmp)
            print(f"{size:>12}{megabytes / seconds:>8.0f}{seconds:>9.2f}{rss:>6.0f} MB",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
