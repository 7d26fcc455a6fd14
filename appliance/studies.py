"""Study states, derived from what the store records, and quiet-time closing.

A study's delivery state is never stored on its own: it is derived from its
phase, its hold and its delivery positions, so it cannot drift from them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import Config
from appliance.inflight import InFlight
from appliance.logs import event
from appliance.routing import SITE_UNKNOWN, route_study
from appliance.store import DeliveryCounts, Store, StudyRecord
from appliance.validation import InstanceFacts, study_findings

log = logging.getLogger("fluxbox.studies")

RECEIVING, HELD, QUEUED, SENDING, COMPLETE, FAILED = (
    "receiving", "held", "queued", "sending", "complete", "failed",
)
STATES = (RECEIVING, HELD, QUEUED, SENDING, COMPLETE, FAILED)

def destination_state(counts: DeliveryCounts, instances: int) -> str:
    if (counts.delivered >= instances and counts.pending == 0 and counts.failed == 0
            and not counts.awaiting_commitment):
        return COMPLETE
    if counts.failed and not counts.pending:
        return FAILED
    return SENDING if counts.delivered else QUEUED


def study_state(study: StudyRecord, counts: dict[str, DeliveryCounts],
                block: str | None = None) -> str:
    """The PRODUCT.md state of a study, from its record and per-destination counts."""
    if study.phase == RECEIVING:
        return RECEIVING
    if study.held_reason:
        return HELD
    states = [destination_state(c, study.instances) for c in counts.values()]
    if study.completed_at is not None or (states and all(s == COMPLETE for s in states)):
        return COMPLETE
    if any(s == FAILED for s in states) and not any(c.pending for c in counts.values()):
        return FAILED
    if block:
        return HELD
    return SENDING if any(c.delivered for c in counts.values()) else QUEUED


class AssignRefused(Exception):
    """A study that may not change site (the reason is the message); nothing changed."""


def assign_refusal(store: Store, study: StudyRecord, site_id: str) -> str | None:
    """Why a study may not be assigned to `site_id` by hand: part of it already went to
    its own site's PACS and the rest has not (it would be split between two hospitals)."""
    if study.site and study.site != site_id and study.completed_at is None and any(
            store.counts(study, d).delivered for d in study.destinations):
        return f"study already partly delivered to site {study.site!r}"
    return None


@dataclass(frozen=True)
class Closed:
    study_key: str
    destinations: tuple[str, ...]
    held_reason: str | None


class StudyCloser:
    """Closes studies that went quiet and routes them. `close_once` is the one step."""

    def __init__(self, store: Store, config: Config,
                 open_studies: Callable[[], set[str]],
                 in_flight: InFlight | None = None) -> None:
        self.store = store
        self.config = config
        self.open_studies = open_studies
        self.in_flight = in_flight or InFlight()  # shared with the delivery workers

    def close_once(self, now: float) -> list[Closed]:
        quiet_s = self.config.transmit.study_quiet_s
        streaming = self.config.transmit.forward == "streaming"
        busy = self.open_studies()
        closed = []
        for study in self.store.studies():
            if study.phase != RECEIVING or study.kind != "study":
                continue
            quiet = study.key not in busy and now - study.last_at >= quiet_s
            if study.expected:
                quiet = self._expected_done(study, now)
            if quiet:
                result = self._close(study, now)
                if result:
                    closed.append(result)
            elif streaming:
                route = route_study(study, self.config)
                if route.destinations:
                    self.store.enqueue(study.key, route.destinations, now, route.commitment)
        return closed

    def expect(self, study_uid: str, instance_uids: list[str], now: float) -> None:
        """An MPPS COMPLETED listed these instances: close as soon as all are here, or
        hold (even a closed study, back to receiving) for `mpps_wait_s` while some are not."""
        study = self.store.study_by_uid(study_uid)
        if study is None or not instance_uids:
            return
        keys = tuple(self.store.uid_key(uid) for uid in instance_uids)
        until = now + self.config.transmit.mpps_wait_s
        if study.phase != RECEIVING and not self._missing(study, keys):
            self.store.update_study(study.key, expected=keys, expect_until=until)
            return
        self.store.update_study(study.key, phase=RECEIVING, closed_at=None, expected=keys,
                                expect_until=until)

    def _missing(self, study: StudyRecord, keys: tuple[str, ...]) -> set[str]:
        present = {r.key for r in self.store.study_instances(study.key)}
        return set(keys) - present

    def _expected_done(self, study: StudyRecord, now: float) -> bool:
        """All listed instances are here, or the wait is over."""
        return not self._missing(study, study.expected) or now >= (study.expect_until or 0)

    def assign(self, study: StudyRecord, site_id: str, source: str,
               now: float) -> StudyRecord | None:
        """Give a study a site (`fluxbox assign`, the console, adoption) and, if it is
        closed, route it again: the old site's positions go, the new site's come.

        Sends of the study in flight are answered first and new ones wait (`in_flight`), so
        none reaches the old site's PACS afterwards; raises StudyBusy, changing nothing,
        when they take longer than the guard's wait, and AssignRefused when the study was
        partly delivered to its own site by then (see `assign_refusal`)."""
        with self.in_flight.moving(study.key):
            study = self.store.study(study.key) or study  # as it is once nothing is in flight
            refusal = assign_refusal(self.store, study, site_id)
            if refusal:
                raise AssignRefused(refusal)
            held = study.held_reason == SITE_UNKNOWN
            updated = self.store.assign_site(study.key, site_id, source,
                                             None if held else study.held_reason)
            event(log, "study assigned", study=study.key[:12], site=site_id, source=source)
            if updated is not None and updated.phase == "closed":
                self.reroute(updated, now)
            return updated

    def reroute(self, study: StudyRecord, now: float) -> Closed | None:
        """Route a closed study again (after its site was assigned)."""
        return self._close(study, now)

    def _close(self, study: StudyRecord, now: float) -> Closed | None:
        facts = [
            InstanceFacts(
                series_uid=r.series_uid,
                series_number=r.facts.get("series_number"),
                instance_number=r.facts.get("instance_number"),
                images_in_acquisition=r.facts.get("images_in_acquisition"),
                number_of_frames=r.facts.get("number_of_frames"),
                remarks=tuple(r.facts.get("remarks", ())),
            )
            for r in self.store.study_instances(study.key)
        ]
        route = route_study(study, self.config)
        findings = study_findings(facts)
        missing = self._missing(study, study.expected) if study.expected else set()
        if missing:
            findings.append(f"{len(missing)} of {len(study.expected)} instances listed by the "
                            "modality's MPPS never arrived")
        # The MPPS list served this close: a late instance waits the quiet time again.
        updated = self.store.update_study(
            study.key, expect_last_at=study.last_at, phase="closed", closed_at=now,
            findings=tuple(findings), held_reason=route.held_reason,
            expected=(), expect_until=None,
        )
        if updated is None:  # an instance arrived meanwhile; close later
            return None
        if route.destinations:
            self.store.enqueue(study.key, route.destinations, now, route.commitment)
            self.store.complete_if_done(study.key, now)
        event(log, "study closed", study=study.key[:12], instances=study.instances,
              destinations=len(route.destinations), held=route.held_reason or "-",
              findings=len(updated.findings))
        return Closed(study.key, route.destinations, route.held_reason)
