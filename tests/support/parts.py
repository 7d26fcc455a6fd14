"""The box's store, closer and one delivery worker, built in the test's process and wired
as `app.Box` wires them, with one shared `InFlight` and a clock the test steps: the steps
(`close_once`, `deliver_once`) run when the test says, at the time it says, against a
real PACS on loopback. Site a's PACS is the one given; site b's is never reached."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom

from appliance.config import Config, DestinationConfig, DetectConfig, SiteConfig, TransmitConfig
from appliance.delivery import DestinationWorker
from appliance.inflight import InFlight
from appliance.routing import Policy
from appliance.signals import Snapshot
from appliance.store import Store, StudyRecord
from appliance.studies import StudyCloser
from appliance.validation import read_header

KEY = bytes(range(32))
QUIET_S = 10.0
START = 1_800_000_000.0  # the parts' clock starts here


def two_sites(pacs_port: int, **transmit: object) -> Config:
    settings: dict[str, object] = dict(batch="count", batch_count=10, associations=1,
                                       adaptive=False, study_quiet_s=QUIET_S,
                                       connect_timeout_s=5, dimse_timeout_s=30)
    settings.update(transmit)
    a = SiteConfig(id="a", destinations=(
        DestinationConfig("pacs", "PACS", "127.0.0.1", pacs_port),))
    b = SiteConfig(id="b", destinations=(
        DestinationConfig("pacs", "B_PACS", "127.0.0.1", 9),))  # never reached here
    return Config(detect=DetectConfig(mode="auto"), transmit=TransmitConfig(**settings),
                  sites=(a, b))


class Parts:
    """The vehicle is at site a; `now` is the clock every step reads."""

    def __init__(self, tmp_path: Path, files: list[Path], pacs_port: int, *,
                 wait_s: float = 10.0, close: bool = True, **transmit: object) -> None:
        self.now = START
        self.config = two_sites(pacs_port, **transmit)
        self.store = Store(tmp_path / "data", KEY)
        self.in_flight = InFlight(wait_s=wait_s)
        self.closer = StudyCloser(self.store, self.config, lambda: set(), self.in_flight)
        self.pause: Callable[[], None] = lambda: None  # called after each gate verdict
        self.policy = Policy(self.config, current_site=lambda: "a",
                             snapshot=lambda: Snapshot(taken_at=self.now),
                             cellular_used=lambda now: (0, 0))
        self.worker = DestinationWorker(
            self.store, "a/pacs", self.config.sites[0].destinations[0], self.config.transmit,
            calling_ae="FLUXBOX", gate=self.gate, in_flight=self.in_flight,
            clock=lambda: self.now)
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            header = read_header(path, command_sop_class=ds.SOPClassUID,
                                 command_sop_instance=ds.SOPInstanceUID)
            self.store.put_instance(path, header, calling_aet="CT1", site="a",
                                    site_source="manual", now=self.now)
        if close:
            self.closer.close_once(self.now + QUIET_S + 1)
        (self.study,) = self.store.studies()

    def gate(self, study: StudyRecord, now: float) -> str | None:
        """app.Box's gate (`routing.Policy`) for site a's PACS, no route known (the link is
        not judged); `pause` runs between the verdict and its use."""
        verdict = self.policy.gate(study, "a/pacs", now)
        self.pause()
        return verdict

    def site(self) -> str | None:
        return self.store.study(self.study.key).site

    def state(self) -> str:
        return self.store.study(self.study.key).phase

    def close(self) -> None:
        self.store.close()
