"""`make fuzz`: the fuzz campaign of tests/integration/test_fuzz.py, longer.

Starts a PACS (pynetdicom, in this process) and the box as a process, has a
well-behaved storescu send a study during the campaign and another after it, and
prints cases run, crashes and the box's peak resident set. Crashers are appended to
tests/fuzz/crashers.jsonl (replayed by `make test`). Exit 1 on a crash, a failed
storescu send or an acknowledged instance that never reached the PACS.

    python -m tests.fuzz.run [--seconds 600] [--seed N]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydicom import dcmread

from appliance.demo.synthetic import write_ct_study
from tests.boxproc import BoxProcess, box_toml, site_toml
from tests.fuzz.campaign import RSS_LIMIT, Campaign
from tests.peers import CountingSCP, free_port, store_responses, storescu

DELIVERY_TIMEOUT_S = 120


def _send(port: int, files: list[Path]) -> list[str]:
    return [a for _, a in store_responses(storescu("127.0.0.1", port, files,
                                                   called_aet="FLUXBOX"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"fuzzing for {args.seconds:.0f} s, seed {seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp_name, \
            CountingSCP(ae_title="PACS") as pacs:
        tmp = Path(tmp_name)
        study = write_ct_study(tmp / "ct", slices=12, rows=64, cols=64, seed=seed % 1000)
        config = box_toml(tmp / "data", free_port(),
                          site_toml("a", [{"name": "pacs", "ae_title": "PACS",
                                           "host": "127.0.0.1", "port": pacs.port}]))
        box = BoxProcess(config, tmp).start()
        try:
            campaign = Campaign(box, log=lambda line: print(line, flush=True))
            during: list[str] = []
            modality = threading.Thread(target=lambda: during.extend(_send(box.port,
                                                                           study[:6])))
            modality.start()
            campaign.run(args.seconds, seed=seed)
            modality.join(timeout=300)
            after = _send(box.port, study[6:])
            expected = campaign.acknowledged | {
                str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in study}
            deadline = time.monotonic() + DELIVERY_TIMEOUT_S
            while not expected <= pacs.uids() and time.monotonic() < deadline:
                time.sleep(0.5)
            lost = expected - pacs.uids()
            print(campaign.summary())
            peak_ok = box.peak_rss_bytes() < RSS_LIMIT
        finally:
            box.stop()
    sends_ok = during == ["Success"] * 6 and after == ["Success"] * 6
    print(f"storescu during: {during.count('Success')}/6 Success, "
          f"after: {after.count('Success')}/6 Success; "
          f"acknowledged but not delivered: {len(lost)}")
    return 0 if not campaign.crashes and sends_ok and not lost and peak_ok else 1


if __name__ == "__main__":
    sys.exit(main())
