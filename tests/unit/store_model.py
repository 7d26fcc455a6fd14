"""A stateful model of the store, routing and delivery decisions (issue 12).

Random sequences of what happens to a box in service (instances received, duplicated,
corrected, moved to another study, late; sites assigned, pinned and detected; policy
changed; batches taken, acknowledged, refused or aborted; Storage Commitment asked and
reported, old reports included; purge; restart; a crash; blobs lost or damaged) are
played against the real `Store` on a real directory, the real `StudyCloser` and routing,
and the delivery worker's own steps: `_next_batch` with the gate, `send_each` (the gate
asked again before each send, the answer recorded), `commitments_due` and `ask_commitments`.
A PACS is a fake behind the worker's own `Sender` and `CommitmentAsker` interfaces: it
checks that what reaches it may (against the model's own record of each study's site, and
policy), and holds what it acknowledges.

After every step the promises of PRODUCT.md are checked (see `check_*`). The machine's
rules are plain methods, so a shrunk failure replays as a plain test.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pydicom
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from appliance.commands import PIN_SETTING
from appliance.config import (
    Config,
    DestinationConfig,
    DetectConfig,
    PolicyConfig,
    SiteConfig,
    TransmitConfig,
)
from appliance.crypto import BlobCorrupt
from appliance.delivery import (
    Answer,
    BatchResult,
    DestinationWorker,
    TransientRefusal,
    Unsendable,
)
from appliance.inflight import InFlight
from appliance.report import study_view
from appliance.routing import Policy, delivery_block, destination_id
from appliance.signals import Snapshot
from appliance.sites import decide_site
from appliance.store import InstanceRecord, Outcome, Queued, Store, StudyRecord, destination_site
from appliance.studies import StudyCloser, assign_refusal
from appliance.validation import read_header

SITES = ("a", "b")
INSTANCES = 5  # SOP Instance UIDs in play
STUDIES = 3  # Study Instance UIDs in play
VERSIONS = 2  # contents per (instance, study)
QUIET_S = 10.0
START = datetime(2026, 11, 26, 12, 0).timestamp()  # a Thursday noon, local time
ROOT = "1.2.826.0.1.3680043.8.498.77"
SUCCESS, REFUSED, OUT_OF_RESOURCES = 0x0000, 0xC000, 0xA700
KEY = bytes(range(32))


def _config(isolate: bool = True, windows: tuple[str, ...] = (),
            forward: str = "on-study-complete") -> Config:
    policy = PolicyConfig(windows=windows)
    a = SiteConfig(id="a", policy=policy, destinations=(
        DestinationConfig("pacs", "A_PACS", "127.0.0.1", 104, commitment=True),
        DestinationConfig("archive", "A_ARCH", "127.0.0.1", 105),
    ))
    b = SiteConfig(id="b", policy=policy, destinations=(
        DestinationConfig("pacs", "B_PACS", "127.0.0.1", 106),
    ))
    transmit = TransmitConfig(batch="count", batch_count=3, study_quiet_s=QUIET_S,
                              forward=forward)
    return Config(detect=DetectConfig(mode="auto", isolate=isolate), transmit=transmit,
                  sites=(a, b))


# Policy changes (a new config, taken at restart): isolation on or off, a closed window,
# streaming (sent while still receiving).
CONFIGS = (_config(), _config(isolate=False), _config(windows=("03:00-03:01",)),
           _config(forward="streaming"))
DESTINATIONS = tuple(destination_id(s, d) for s in CONFIGS[0].sites for d in s.destinations)


def sop_uid(i: int) -> str:
    return f"{ROOT}.1.{i}"


def study_uid(j: int) -> str:
    return f"{ROOT}.2.{j}"


def study_index(uid: str) -> int:
    return int(uid.rsplit(".", 1)[1])


class Contents:
    """The Part 10 files a modality may send, made once per (instance, study, version)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        self.made: dict[tuple[int, int, int], tuple[Path, object]] = {}
        self.by_digest: dict[str, tuple[int, int, int]] = {}

    def get(self, i: int, j: int, v: int):
        if (i, j, v) not in self.made:
            ds = self.base.copy()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid(i)
            ds.StudyInstanceUID = study_uid(j)
            ds.ImageComments = f"version {v}"
            path = self.folder / f"{i}-{j}-{v}.dcm"
            ds.save_as(path, enforce_file_format=True)
            header = read_header(path, command_sop_class=ds.SOPClassUID,
                                 command_sop_instance=sop_uid(i))
            self.made[(i, j, v)] = (path, header)
            self.by_digest[hashlib.sha256(path.read_bytes()).hexdigest()] = (i, j, v)
        return self.made[(i, j, v)]

    def which(self, data: bytes) -> tuple[int, int, int]:
        return self.by_digest[hashlib.sha256(data).hexdigest()]


_CONTENTS: Contents | None = None


def contents() -> Contents:
    """Made once per test run (the files never change), removed when the run ends."""
    global _CONTENTS
    if _CONTENTS is None:
        folder = Path(tempfile.mkdtemp(prefix="fluxbox-model-files-"))
        atexit.register(shutil.rmtree, folder, True)
        _CONTENTS = Contents(folder)
    return _CONTENTS


class Stats:
    """What a run covered: printed by the test, so a search that never delivers shows."""

    runs = 0
    steps = 0  # rules run (each followed by a check of every promise)
    checks = 0
    acknowledged = 0  # by a PACS, recorded
    completed = 0  # studies that became complete (seen by a check)
    purged = 0
    confirmed = 0  # commitment reports the store took as confirming a study

    @classmethod
    def reset(cls) -> None:
        cls.runs = cls.steps = cls.checks = cls.acknowledged = cls.completed = cls.purged = 0
        cls.confirmed = 0

    @classmethod
    def line(cls) -> str:
        return (f"{cls.steps} steps in {cls.runs} runs, invariants checked {cls.checks} times; "
                f"{cls.acknowledged} instances acknowledged by a PACS, {cls.completed} "
                f"complete studies seen, {cls.purged} purged, {cls.confirmed} commitments "
                "confirmed")


class StoreModel(RuleBasedStateMachine):
    """The box's store, closer and delivery workers under random events."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="fluxbox-model-"))
        self.files = contents()
        self.now = START
        self.config = CONFIGS[0]
        self.detected: str | None = "a"  # the vehicle starts docked at site a
        self.latest: dict[int, tuple[int, int, int]] = {}  # acknowledged to the modality
        self.damaged: set[int] = set()  # instances whose current blob the test damaged
        self.pacs: dict[str, dict[int, tuple[int, int, int]]] = {d: {} for d in DESTINATIONS}
        self.committed: dict[str, dict[int, tuple[int, int, int]]] = {
            d: {} for d in DESTINATIONS}
        self.transactions: list[tuple[str, str, list[int]]] = []
        self.in_flight: dict[str, list[Queued]] = {d: [] for d in DESTINATIONS}
        self.asking: dict[str, list[StudyRecord]] = {d: [] for d in DESTINATIONS}
        # The model's own record, never read from the store: the pin, and each study's site
        # (stamped at its first instance, changed by assign).
        self.pinned: str | None = None
        self.expected_site: dict[int, str | None] = {}
        self.released: set[int] = set()  # purged once delivered everywhere
        self.seen_complete: set[tuple[str, float]] = set()
        self.guard = InFlight(wait_s=0.0)  # one thread: a send in flight would be a bug
        self._open()
        Stats.runs += 1

    # -- wiring, as app.Box does it ----------------------------------------------------

    def _open(self) -> None:
        self.store = Store(self.dir / "data", KEY)
        self.store.repair()
        self.closer = StudyCloser(self.store, self.config, lambda: set(), self.guard)
        self.policy = Policy(self.config, current_site=self.current_site,
                             snapshot=lambda: Snapshot(taken_at=self.now),
                             cellular_used=lambda now: (0, 0))
        self.workers = {
            d: DestinationWorker(self.store, d, self._destination(d), self.config.transmit,
                                 calling_ae="FLUXBOX",
                                 gate=lambda study, now, d=d: self.gate(study, d, now),
                                 in_flight=self.guard, clock=lambda: self.now)
            for d in DESTINATIONS}
        self.in_flight = {d: [] for d in DESTINATIONS}
        self.asking = {d: [] for d in DESTINATIONS}

    def _destination(self, dest_id: str) -> DestinationConfig:
        site_id, name = dest_id.split("/", 1)
        return next(d for d in self.config.site(site_id).destinations if d.name == name)

    def current_site(self) -> str | None:
        """The box's view (app.Box.current_site): the pin as the store keeps it."""
        pinned = self.store.get_setting(PIN_SETTING)
        return decide_site(self.config, pinned).id if pinned else self.detected

    def model_site(self) -> str | None:
        """The site the vehicle is at by the model's own record of pin and detection."""
        return self.pinned or self.detected

    def may_reach(self, dest: str, j: int) -> str | None:
        """Why nothing of study `j` may reach `dest` now, by the model's record of the
        study's site (and policy); None when it may."""
        site = self.expected_site.get(j)
        if destination_site(dest) != site:
            return f"{dest} is not a destination of the study's site ({site})"
        study = self.store.study_by_uid(study_uid(j))
        if study is None:
            return "the study is no longer on the box"
        return delivery_block(replace(study, site=site), dest, self.config,
                              current_site=self.model_site(), link=None,
                              now=datetime.fromtimestamp(self.now))

    def gate(self, study: StudyRecord, dest_id: str, now: float) -> str | None:
        """The box's gate (`routing.Policy`, as app.Box builds it) with no route known:
        the link is not judged."""
        return self.policy.gate(study, dest_id, now)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _tick(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now

    # -- the modality --------------------------------------------------------------------

    @initialize(count=st.integers(1, INSTANCES), studies=st.integers(1, STUDIES),
                delivered=st.booleans())
    def studies_arrive(self, count: int, studies: int, delivered: bool) -> None:
        """Every run starts with closed studies of site a, so that delivery has work; about
        half of them delivered, confirmed and purged already (so that even a short run
        meets complete studies, commitments and purges)."""
        for i in range(count):
            self.receive(i, i % studies, 0)
        self.quiet_time_passes()
        if delivered:
            self.docked_delivery()
            self.purge(0.0)

    @rule(i=st.integers(0, INSTANCES - 1), j=st.integers(0, STUDIES - 1),
          v=st.integers(0, VERSIONS - 1))
    def receive(self, i: int, j: int, v: int) -> None:
        """A C-STORE: a new instance, a duplicate, a correction (same UID, new content), the
        same UID under another study, or a late instance of a closed study."""
        now = self._tick()
        path, header = self.files.get(i, j, v)
        site = self.current_site()
        new_study = self.store.study_by_uid(study_uid(j)) is None
        outcome = self.store.put_instance(path, header, calling_aet="MOD", site=site,
                                          site_source="manual" if site else None, now=now)
        if new_study:  # stamped with where the vehicle is
            self.expected_site[j] = self.model_site()
        if outcome is not Outcome.DUPLICATE:
            self.damaged.discard(i)
        self.released.discard(i)
        self.latest[i] = (i, j, v)

    @rule()
    def quiet_time_passes(self) -> None:
        self.closer.close_once(self._tick(QUIET_S + 1))

    @rule()
    def closer_ticks(self) -> None:
        """The closer's loop, before the quiet time (streaming queues receiving studies)."""
        self.closer.close_once(self._tick())

    # -- sites and policy -------------------------------------------------------------------

    @rule(j=st.integers(0, STUDIES - 1), site=st.sampled_from(SITES))
    def assign(self, j: int, site: str) -> None:
        """`fluxbox assign` (refused when it would split a study between two sites)."""
        now = self._tick()
        study = self.store.study_by_uid(study_uid(j))
        if study is None or assign_refusal(self.store, study, site):
            return
        if self.closer.assign(study, site, "manual", now) is not None:
            self.expected_site[j] = site

    @rule(site=st.sampled_from((None, *SITES)))
    def pin(self, site: str | None) -> None:
        """`fluxbox site set SITE` or `fluxbox site auto`."""
        self._tick()
        self.store.set_setting(PIN_SETTING, site)
        self.pinned = site

    @rule(site=st.sampled_from((None, *SITES)))
    def site_detected(self, site: str | None) -> None:
        self._tick()
        self.detected = site

    @rule(k=st.integers(0, len(CONFIGS) - 1))
    def policy_change(self, k: int) -> None:
        """A new config, taken at a restart."""
        self._tick()
        self.config = CONFIGS[k]
        self.store.close()
        self._open()

    # -- delivery -------------------------------------------------------------------------

    @rule(dest=st.sampled_from(DESTINATIONS))
    def take_batch(self, dest: str) -> None:
        """The worker takes its next batch (the gate decides what may go)."""
        now = self._tick()
        if not self.in_flight[dest]:
            self.in_flight[dest] = self.workers[dest]._next_batch(now)

    @precondition(lambda self: any(self.in_flight.values()))
    @rule(pick=st.integers(0, len(DESTINATIONS) - 1),
          answer=st.sampled_from((SUCCESS, SUCCESS, SUCCESS, REFUSED, OUT_OF_RESOURCES)))
    def send_one(self, pick: int, answer: int) -> None:
        """The next instance of a batch in flight goes out (the worker's `send_each`); the
        PACS answers."""
        self._tick()
        busy = [d for d in DESTINATIONS if self.in_flight[d]]
        if busy:
            dest = busy[pick % len(busy)]
            self._send(dest, [self.in_flight[dest].pop(0)], lambda: answer)

    @rule(dest=st.sampled_from(DESTINATIONS))
    def deliver_all(self, dest: str) -> None:
        """A good link and a willing PACS: the worker sends batches until none is left (its
        next step asks for commitment: `commitments_due`)."""
        now = self._tick()
        for _ in range(10):
            batch = self.in_flight[dest] or self.workers[dest]._next_batch(now)
            if not batch:
                break
            self.in_flight[dest] = []
            self._send(dest, batch, lambda: SUCCESS)

    @rule()
    def docked_delivery(self) -> None:
        """A good link to every destination: each delivers all it may and its PACS reports
        every commitment asked (so that runs reach complete studies and purges)."""
        for dest in DESTINATIONS:
            self.deliver_all(dest)
            self.request_commitment(dest)
        while self.transactions:
            self.commitment_report(0, False)

    def _send(self, dest: str, batch: list[Queued], answers: Callable[[], int]) -> None:
        """`batch` through the worker's send step to the model's PACS; an out-of-resources
        answer ends the batch (the worker aborts and backs off; the rest stays pending)."""
        try:
            self.workers[dest].send_each(iter(batch), ModelPacs(self, dest, answers),
                                         BatchResult())
        except TransientRefusal:
            self.in_flight[dest] = []

    @rule(dest=st.sampled_from(DESTINATIONS))
    def link_drops(self, dest: str) -> None:
        """The association breaks mid-batch: what was not answered stays pending."""
        self._tick()
        self.in_flight[dest] = []
        self.asking[dest] = []

    @rule(dest=st.sampled_from(DESTINATIONS))
    def commitments_due(self, dest: str) -> None:
        """With nothing left to send, the worker finds the studies to ask commitment for (an
        association opens only if there are any)."""
        now = self._tick()
        worker = self.workers[dest]
        if not worker.dest.commitment or self.in_flight[dest] or worker._next_batch(now):
            return
        due = worker.commitments_due(now)
        for study in due:
            why = self.may_reach(dest, study_index(study.study_uid))
            assert why is None, f"an association opened to {dest} to ask commitment: {why}"
        self.asking[dest] = due

    @precondition(lambda self: any(self.asking.values()))
    @rule(pick=st.integers(0, len(DESTINATIONS) - 1))
    def ask_commitments(self, pick: int) -> None:
        """The worker asks, on that association, for each study found due."""
        self._tick()
        busy = [d for d in DESTINATIONS if self.asking[d]]
        if busy:
            self._ask(busy[pick % len(busy)])

    def request_commitment(self, dest: str) -> None:
        """Both at once (as DestinationWorker._request_commitments)."""
        self.commitments_due(dest)
        self._ask(dest)

    def _ask(self, dest: str) -> None:
        due, self.asking[dest] = self.asking[dest], []
        self.workers[dest].ask_commitments(due, ModelCommitments(self, dest), BatchResult())

    @precondition(lambda self: self.transactions)
    @rule(pick=st.integers(0, 10), fail_one=st.booleans())
    def commitment_report(self, pick: int, fail_one: bool) -> None:
        """The PACS reports a transaction, maybe an old one: it commits what it holds."""
        now = self._tick()
        uid, dest, asked = self.transactions.pop(pick % len(self.transactions))
        held = self.pacs[dest]
        failed = {sop_uid(i) for i in asked if i not in held}
        if fail_one and asked:
            failed.add(sop_uid(asked[0]))
        if not failed:
            for i in asked:
                self.committed[dest][i] = held[i]
        taken = self.store.commitment_result(uid, failed, now)
        Stats.confirmed += taken and not failed

    @rule(j=st.one_of(st.none(), st.integers(0, STUDIES - 1)))
    def retry(self, j: int | None) -> None:
        """`fluxbox retry [STUDY]`."""
        now = self._tick()
        study = self.store.study_by_uid(study_uid(j)) if j is not None else None
        if j is not None and study is None:
            return
        self.store.retry_failed(study.key if study else None, now)

    # -- housekeeping and failures -------------------------------------------------------------

    @rule(retention_s=st.sampled_from((0.0, 3600.0)))
    def purge(self, retention_s: float) -> None:
        done = {i for i in self.latest if self._delivered_everywhere(i)}
        self._note_completions()
        Stats.purged += self.store.purge(self._tick(), retention_s)
        self.released |= {i for i in done if self._record(i) is None}

    @rule()
    def restart(self) -> None:
        self._tick()
        self.store.close()
        self._open()

    @rule(sent_unrecorded=st.booleans(), leftovers=st.booleans())
    def crash(self, sent_unrecorded: bool, leftovers: bool) -> None:
        """kill -9 between two steps. Every store call is one LMDB transaction (durable at
        commit), so what a crash can add is: an instance the PACS took whose acknowledgment
        was never recorded, and the files a crash leaves (a temp file, a blob the index
        never named: a put cut before its commit, a purge cut before its unlinks)."""
        self._tick()
        if sent_unrecorded:
            for dest, batch in self.in_flight.items():
                if batch and self.workers[dest].may_send(batch[0], self.now):
                    with_blob = self._readable(batch[0].instance)
                    if with_blob is not None:
                        self.pacs[dest][with_blob[0]] = with_blob
                    break
        if leftovers:
            (self.store.temp_dir / "cut.part").write_bytes(b"partial")
            (self.store.blob_dir / "ab" / ("ab" + "0" * 62 + ".blob")).write_bytes(b"orphan")
        self.store.close()
        self._open()

    @rule(i=st.integers(0, INSTANCES - 1), delete=st.booleans())
    def blob_lost(self, i: int, delete: bool) -> None:
        """A blob goes missing or unreadable (a bad sector, a hand in the data directory)."""
        self._tick()
        record = self._record(i)
        if record is None or not record.blob:
            return
        path = self.store._blob_path(record.blob)
        if delete:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(b"\0" * 64)
        self.damaged.add(i)

    # -- reading the store --------------------------------------------------------------------

    def _record(self, i: int) -> InstanceRecord | None:
        with self.store.env.begin() as txn:
            return self.store._get(txn, "instances", self.store.keys.uid_hash(sop_uid(i)),
                                   InstanceRecord)

    def _readable(self, record: InstanceRecord) -> tuple[int, int, int] | None:
        try:
            with self.store.plaintext(record) as path:
                return self.files.which(path.read_bytes())
        except (BlobCorrupt, KeyError):
            return None

    def _rows(self, db: str):
        with self.store.env.begin() as txn:
            return list(txn.cursor(db=self.store._db[db]))

    # -- weights: the rules whose order matters most run more often -----------------------
    # (a batch or a commitment request taken, the gate changing, then the send; purge after
    # completion). Hypothesis picks among rules evenly, so an alias doubles a rule's share.

    take_another_batch = take_batch
    send_another = send_one
    send_yet_another = send_one
    find_commitments_due = commitments_due
    ask_more_commitments = ask_commitments
    vehicle_moves = site_detected
    purge_again = purge

    # -- the promises ---------------------------------------------------------------------------

    @invariant()
    def promises_hold(self) -> None:
        Stats.checks += 1
        Stats.steps = Stats.checks - Stats.runs  # hypothesis checks once before the first step
        self.check_acknowledged_stays_until_delivered()
        self.check_only_own_site()
        self.check_live_blobs_exist()
        self.check_counts()
        self.check_no_destination_stuck()

    def _delivered_everywhere(self, i: int) -> bool:
        """Every destination of the study's own site holds the latest version, committed
        where it asks for commitment."""
        latest = self.latest[i]
        site = self.config.site(self.expected_site.get(latest[1]) or "")
        if site is None:
            return False
        for dest in site.destinations:
            dest_id = destination_id(site, dest)
            if self.pacs[dest_id].get(i) != latest:
                return False
            if dest.commitment and self.committed[dest_id].get(i) != latest:
                return False
        return True

    def check_acknowledged_stays_until_delivered(self) -> None:
        for i, latest in self.latest.items():
            if i in self.damaged or i in self.released or self._delivered_everywhere(i):
                continue
            record = self._record(i)
            assert record is not None, (
                f"instance {i} (version {latest}) was acknowledged, is not at every "
                "destination of its site, and the box no longer holds it")
            assert self._readable(record) == latest, (
                f"instance {i}: the box holds {self._readable(record)}, not the acknowledged "
                f"{latest}, before every destination has it")

    def check_only_own_site(self) -> None:
        """No position, commitment or route of a study outside the site the model recorded
        for it (at its first instance, or its last assign)."""
        studies = {s.key: s for s in self.store.studies()}
        expected = {s.key: self.expected_site[study_index(s.study_uid)]
                    for s in studies.values() if s.kind == "study"}
        seqs = {s.seq_bytes for s in studies.values()}
        for db in ("pending", "acked", "failed"):
            for position, _ in self._rows(db):
                dest, rest = position.split(b"\0", 1)
                assert rest[:8] in seqs, f"an {db} position at {dest.decode()} outlived its study"
        for db in ("pending", "failed"):
            for position, value in self._rows(db):
                key = value[16:32].hex()
                dest = position.split(b"\0", 1)[0].decode()
                if key in expected:
                    assert destination_site(dest) == expected[key], (
                        f"a {db} position for {dest}, of a study of site {expected[key]}")
        for key, raw in self._rows("commitments"):
            study_key = json.loads(raw)["study_key"]
            dest = key.split(b"\0", 1)[0].decode()
            if study_key in expected:
                assert destination_site(dest) == expected[study_key], (
                    f"a commitment of {dest}, for a study of site {expected[study_key]}")
        for study in studies.values():
            assert study.site == expected[study.key], (
                f"study of site {expected[study.key]} stored as of site {study.site}")
            for dest in study.destinations + study.commit_destinations:
                assert destination_site(dest) == expected[study.key], (
                    f"study of site {expected[study.key]} routed to {dest}")

    def check_live_blobs_exist(self) -> None:
        for i in range(INSTANCES):
            record = self._record(i)
            if record is None or not record.blob or i in self.damaged:
                continue
            assert self.store._blob_path(record.blob).exists(), (
                f"instance {i}'s record names a blob that is gone")

    def _note_completions(self) -> None:
        """Count the studies that became complete since the last look (purge may take them
        before a check sees them)."""
        for study in self.store.studies():
            if study.completed_at is not None and (
                    (study.key, study.completed_at) not in self.seen_complete):
                self.seen_complete.add((study.key, study.completed_at))
                Stats.completed += 1

    def check_counts(self) -> None:
        self._note_completions()
        records = [r for i in range(INSTANCES) if (r := self._record(i)) is not None]
        for study in self.store.studies():
            mine = [r for r in records if r.study_key == study.key]
            assert mine, f"study {study.study_uid[-3:]} holds no instance and stays"
            assert study.instances == len(mine), (
                f"study {study.study_uid[-3:]} counts {study.instances} instances, holds "
                f"{len(mine)}")
            assert study.size_bytes == sum(r.size_bytes for r in mine)
            row = study_view(self.store, study, None)
            if study.phase != "closed":
                continue
            for dest in row["destinations"]:
                total = dest["delivered"] + dest["pending"] + dest["failed"]
                assert total == study.instances, (
                    f"study {study.study_uid[-3:]} at {dest['name']}: {total} positions for "
                    f"{study.instances} instances")
            if study.completed_at is not None:
                assert row["state"] == "complete"
                for dest in row["destinations"]:
                    assert dest["pending"] == 0 and dest["failed"] == 0, (
                        "a complete study with positions left")

    def check_no_destination_stuck(self) -> None:
        """A destination with an instance it may send gets a batch (one bad instance does
        not stop it: it is failed with a reason and the rest go on)."""
        for _, value in self._rows("failed"):
            assert value[32:], "a failed position without a reason"
        for dest in DESTINATIONS:
            if self.in_flight[dest]:
                continue
            batch = self.workers[dest]._next_batch(self.now)
            may_go = self._sendable(dest)
            assert bool(batch) == bool(may_go), (
                f"{dest}: {len(may_go)} instances may go, the worker's batch has {len(batch)}")

    def _sendable(self, dest: str) -> list[bytes]:
        found = []
        studies = {s.key: s for s in self.store.studies()}
        prefix = dest.encode() + b"\0"
        for position, value in self._rows("pending"):
            if not position.startswith(prefix):
                continue
            study = studies.get(value[16:32].hex())
            if study is None or self.gate(study, dest, self.now) is not None:
                continue
            with self.store.env.begin() as txn:
                record = self.store._get(txn, "instances", value[:16], InstanceRecord)
            if record is not None and record.study_key == study.key:
                found.append(position)
        return found


class ModelPacs:
    """A PACS behind the worker's `Sender` interface: whatever reaches it must be allowed
    by the model's own record (the study's site, policy); it holds what it acknowledges."""

    def __init__(self, model: StoreModel, dest: str, answers: Callable[[], int]) -> None:
        self.model = model
        self.dest = dest
        self.answers = answers

    def send(self, item: Queued, following: Queued | None = None) -> Answer:
        model = self.model
        why = model.may_reach(self.dest, study_index(item.study.study_uid))
        assert why is None, f"an instance was sent to {self.dest}: {why}"
        try:
            with model.store.plaintext(item.instance) as path:
                sent = model.files.which(path.read_bytes())
        except BlobCorrupt as exc:
            raise Unsendable(f"the box's stored copy cannot be sent: {exc}") from exc
        answer = self.answers()
        if answer == SUCCESS:
            model.pacs[self.dest][sent[0]] = sent
            Stats.acknowledged += 1
        return Answer(_status(answer))


class ModelCommitments:
    """A PACS behind the worker's `CommitmentAsker` interface: a request must be allowed by
    the model's own record; its report comes later (`commitment_report`)."""

    def __init__(self, model: StoreModel, dest: str) -> None:
        self.model = model
        self.dest = dest

    def supports_commitment(self) -> bool:
        return True

    def ask(self, request: Dataset) -> Dataset:
        asked = [int(r.ReferencedSOPInstanceUID.rsplit(".", 1)[1])
                 for r in request.ReferencedSOPSequence]
        for j in {self.model.latest[i][1] for i in asked}:
            why = self.model.may_reach(self.dest, j)
            assert why is None, f"commitment asked of {self.dest}: {why}"
        self.model.transactions.append((str(request.TransactionUID), self.dest, asked))
        return _status(SUCCESS)


def _status(code: int) -> Dataset:
    status = Dataset()
    status.Status = code
    return status


def run_replay(steps) -> None:
    """Replay a list of (rule name, kwargs) and check the promises after each one."""
    machine = StoreModel()
    try:
        machine.promises_hold()
        for name, kwargs in steps:
            getattr(machine, name)(**kwargs)
            machine.promises_hold()
    finally:
        machine.teardown()

