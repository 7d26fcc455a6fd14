"""Fuzzing the box over loopback (issue 11, part 6): malformed association requests,
P-DATA and data sets get a status or an abort; the box keeps serving well-behaved
modalities during and after, loses nothing it acknowledged, and its memory stays
bounded. `make fuzz` runs the same campaign longer (tests/fuzz/run.py).
"""

from __future__ import annotations

import threading
import time

import pytest
from pydicom import dcmread

from tests.fuzz.campaign import CRASHERS, RSS_LIMIT, Campaign, load_crashers
from tests.integration.conftest import dest
from tests.peers import CountingSCP, store_responses, storescu

SHORT_RUN_S = 45
DELIVERY_TIMEOUT_S = 120


def _uids(paths) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def _modality(port: int, groups: list, stop: threading.Event, answers: list) -> None:
    """A well-behaved storescu sending one group every few seconds while the fuzzer runs."""
    for group in groups:
        answers.extend(a for _, a in store_responses(
            storescu("127.0.0.1", port, group, called_aet="FLUXBOX")))
        if stop.wait(SHORT_RUN_S / (len(groups) + 1)):
            return


@pytest.mark.slow
def test_fuzz_campaign_gets_answers_and_loses_nothing_acknowledged(make_box, ct_study):
    with CountingSCP(ae_title="PACS") as pacs:
        box = make_box([dest("pacs", "PACS", pacs.port)]).start()
        campaign = Campaign(box, crashers=CRASHERS)
        during: list[str] = []
        stop = threading.Event()
        modality = threading.Thread(target=_modality, args=(
            box.port, [ct_study[0:3], ct_study[3:6], ct_study[6:9]], stop, during))
        modality.start()
        try:
            campaign.run(SHORT_RUN_S, seed=0)
        finally:
            stop.set()
            modality.join(timeout=300)
        after = storescu("127.0.0.1", box.port, ct_study[9:], called_aet="FLUXBOX")
        print("\n" + campaign.summary())

        assert campaign.crashes == [], campaign.crashes
        assert during == ["Success"] * 9
        assert [a for _, a in store_responses(after)] == ["Success"] * len(ct_study[9:])
        expected = _uids(ct_study) | campaign.acknowledged
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while not expected <= pacs.uids() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert expected - pacs.uids() == set(), "acknowledged but never delivered"
        assert box.peak_rss_bytes() < RSS_LIMIT


def test_kept_crashers_are_answered_and_the_box_serves_on(make_box):
    crashers = load_crashers()
    box = make_box([dest("pacs", "PACS", 9)]).start()  # nothing is delivered meanwhile
    campaign = Campaign(box, crashers=None)
    for problem, case in crashers:
        campaign.one(case)  # raises CaseFailed if the box dies, hangs or grows
        assert campaign.problem() is None, (problem, case.kind)
    assert campaign.cases == len(crashers)
