from appliance.config import TransmitConfig
from appliance.pacing import Pacing, TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_bucket_holds_the_rate_over_many_pdus():
    t = FakeTime()
    bucket = TokenBucket(8000, clock=t.clock, sleep=t.sleep)  # 1 MB/s
    for _ in range(1000):
        bucket.consume(16 * 1024)
    rate = 1000 * 16 * 1024 / t.now
    assert 0.97e6 <= rate <= 1.0e6 * 1.01


def test_token_bucket_off_never_waits():
    t = FakeTime()
    assert TokenBucket(0, clock=t.clock, sleep=t.sleep).consume(10**9) == 0 and t.now == 0


def test_associations_grow_on_success_and_halve_on_failure():
    pacing = Pacing(TransmitConfig(associations=4, adaptive=True))
    assert pacing.associations("a/pacs", "cellular") == 4, "a new link starts at the maximum"
    pacing.record_failure("a/pacs", "cellular")
    pacing.record_failure("a/pacs", "cellular")
    assert pacing.associations("a/pacs", "cellular") == 1
    for _ in range(60):
        pacing.record_transfer("a/pacs", "cellular", 500_000, 0.5)
    assert pacing.associations("a/pacs", "cellular") == 4
    pacing.record_failure("a/pacs", "cellular")
    assert pacing.associations("a/pacs", "cellular") == 2
    assert pacing.associations("a/pacs", "wired") == 4, "figures are per link class"
    fixed = Pacing(TransmitConfig(associations=3, adaptive=False))
    assert fixed.associations("a/pacs", "cellular") == 3


def test_time_out_grows_with_size_and_round_trip_and_figures_survive_a_restart():
    pacing = Pacing(TransmitConfig(dimse_timeout_s=30, adaptive=True))
    pacing.record_rtt("a/pacs", "cellular", 0.3)
    small = pacing.dimse_timeout_s("a/pacs", "cellular", 500_000)
    large = pacing.dimse_timeout_s("a/pacs", "cellular", 1_000_000_000)
    assert 30 < small < large and large >= 30 + 20
    restored = Pacing(TransmitConfig(adaptive=True), pacing.snapshot())
    assert restored.figures["a/pacs|cellular"].rtt_s == 0.3
