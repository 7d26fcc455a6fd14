"""The worklist cache: sync from each site's worklist server, clean-up, answering queries.

Sync: while a site with a ``[site.worklist]`` is the current one, one broad C-FIND
pulls every order scheduled from yesterday to today + ``days_ahead`` (optionally for
one modality and station), every ``sync_interval_s``; after a failed sync again
within ``retry_interval_s``; at once on `poke()` (the site changed, the link came
back). Only a complete answer (every pending response, then final success) replaces
the site's cache, in one store transaction; a failed or partial one keeps the last
good list and records why. Orders gone from the server are gone after the next good
sync.

Entries are kept as encoded datasets in UTF-8, corrected by the site's rules
(mwl_corrections); the notes of what was corrected ride in the entry as one private
element that is never answered.

Answers: the Modality Worklist C-FIND SCP answers from the cache of the current site
only (no site known: no matches), by mwl_matching, in the character set of
mwl_charset.answer_terms. Patient values are never logged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pynetdicom import AE
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import ModalityWorklistInformationFind

from appliance import dimse, mwl_matching
from appliance.config import Config, SiteConfig, WorklistConfig
from appliance.logs import event
from appliance.mwl_charset import answer_terms, render, to_utf8
from appliance.mwl_corrections import correct
from appliance.store import Store

log = logging.getLogger("fluxbox.worklist")

# C-FIND statuses, PS3.4 C.4.1.1.4.
PENDING = 0xFF00
PENDING_WARNING = 0xFF01
CANCEL = 0xFE00
TICK_S = 1.0
OK = "ok"

# The notes of an entry's corrections: one private element, never part of an answer.
_NOTES_GROUP = 0x0099
_NOTES_CREATOR = "FLUXBOX WORKLIST"
_NOTES_ELEMENT = 0x10

# Return keys of the sync query: what PS3.4 Table K.6-1 lists, so every order comes
# with everything a modality may ask for.
_CODE_KEYS = ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning")
_SPS_KEYS = (
    "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime", "Modality", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription", "ScheduledStationName",
    "ScheduledProcedureStepLocation", "PreMedication", "ScheduledProcedureStepID",
    "RequestedContrastAgent", "ScheduledProcedureStepStatus",
    "CommentsOnTheScheduledProcedureStep",
)
_TOP_KEYS = (
    "AccessionNumber", "InstitutionName", "ReferringPhysicianName", "PatientName", "PatientID",
    "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs",
    "OtherPatientNames", "PatientAge", "PatientSize", "PatientWeight", "MedicalAlerts",
    "Allergies", "EthnicGroup", "AdditionalPatientHistory",
    "PregnancyStatus", "LastMenstrualDate", "SpecialNeeds", "PatientState",
    "PatientComments", "StudyInstanceUID", "RequestingPhysician", "RequestingService",
    "RequestedProcedureDescription", "RequestedProcedureID", "ReasonForTheRequestedProcedure",
    "RequestedProcedurePriority", "PatientTransportArrangements", "RequestedProcedureLocation",
    "RequestedProcedureComments", "ConfidentialityCode", "ReportingPriority",
    "NamesOfIntendedRecipientsOfResults", "AdmissionID", "IssuerOfAdmissionID",
    "CurrentPatientLocation", "ReasonForTheImagingServiceRequest",
    "ImagingServiceRequestComments", "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest", "AdmittingDiagnosesDescription",
    "ConfidentialityConstraintOnPatientDataDescription",
)
_SEQUENCE_KEYS = ("ReferencedStudySequence", "ReferencedPatientSequence")


# -- entries -------------------------------------------------------------------------


def encode_entry(entry: Dataset, notes: list[str]) -> bytes:
    """An entry as the store keeps it: explicit VR little endian, its notes inside."""
    stored = Dataset()
    stored.update(entry)
    block = stored.private_block(_NOTES_GROUP, _NOTES_CREATOR, create=True)
    block.add_new(_NOTES_ELEMENT, "LT", json.dumps(notes))
    return encode(stored, False, True)


def decode_entry(raw: bytes) -> tuple[Dataset, list[str]]:
    """The entry and its correction notes (the notes' element removed)."""
    entry = decode(BytesIO(raw), False, True)
    notes: list[str] = []
    try:
        block = entry.private_block(_NOTES_GROUP, _NOTES_CREATOR)
        notes = json.loads(block[_NOTES_ELEMENT].value)
    except (KeyError, ValueError):
        pass
    for tag in [e.tag for e in entry if e.tag.group == _NOTES_GROUP]:
        del entry[tag]
    return entry, notes


def prune(ds: Dataset) -> None:
    """Drop empty elements and sequences: the server's echo of keys it has no value for.
    An answer still carries every key asked for, empty where unknown."""
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value or []:
                prune(item)
            if not any(len(item) for item in elem.value or []):
                del ds[elem.tag]
        elif elem.is_empty:
            del ds[elem.tag]


def entry_json(entry: Dataset, notes: list[str] | None = None) -> dict:
    """An entry keyed by DICOM keywords (sequences as lists of objects), with its
    correction notes as "_corrections" when given."""
    out: dict = {}
    for elem in entry:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.is_private or (
                elem.keyword == "SpecificCharacterSet"):
            continue
        out[elem.keyword or str(elem.tag)] = _json_value(elem)
    if notes is not None:
        out["_corrections"] = notes
    return out


def _json_value(elem):
    value = elem.value
    if elem.VR == "SQ":
        return [entry_json(item) for item in value or []]
    if value is None or isinstance(value, bytes):
        return "" if value is None else value.hex()
    if isinstance(value, MultiValue | list | tuple):
        return [v if isinstance(v, int | float) and elem.VR not in ("DS", "IS") else str(v)
                for v in value]
    return value if isinstance(value, int | float) and elem.VR not in ("DS", "IS") else str(value)


# -- sync ----------------------------------------------------------------------------


def sync_query(cfg: WorklistConfig, today: date) -> Dataset:
    """The one broad query of a sync: orders from yesterday to today + days_ahead."""
    first, last = today - timedelta(days=1), today + timedelta(days=cfg.days_ahead)
    step = Dataset()
    for keyword in _SPS_KEYS:
        setattr(step, keyword, "")
    step.ScheduledProcedureStepStartDate = f"{first:%Y%m%d}-{last:%Y%m%d}"
    step.Modality = cfg.modality
    step.ScheduledStationAETitle = cfg.station_ae_title
    step.ScheduledProtocolCodeSequence = Sequence([_code_item()])
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    for keyword in _TOP_KEYS:
        setattr(query, keyword, "")
    for keyword in _SEQUENCE_KEYS:
        setattr(query, keyword, Sequence())
    query.RequestedProcedureCodeSequence = Sequence([_code_item()])
    query.ScheduledProcedureStepSequence = Sequence([step])
    return query


def _code_item() -> Dataset:
    item = Dataset()
    for keyword in _CODE_KEYS:
        setattr(item, keyword, "")
    return item


@dataclass(frozen=True)
class Fetched:
    """What a worklist server answered: every identifier, and OK or why the list is
    not complete."""

    identifiers: list[Dataset]
    result: str
    unreadable: int = 0

    @property
    def complete(self) -> bool:
        return self.result == OK


Fetcher = Callable[[WorklistConfig, Dataset], Fetched]


def fetch(cfg: WorklistConfig, query: Dataset, *, calling_ae: str, connect_timeout_s: float,
          dimse_timeout_s: float) -> Fetched:
    """One C-FIND to the worklist server; never raises for network trouble."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.connection_timeout = ae.acse_timeout = connect_timeout_s
    ae.dimse_timeout = ae.network_timeout = dimse_timeout_s
    assoc = ae.associate(cfg.host, cfg.port, ae_title=cfg.ae_title)
    if not assoc.is_established:  # pynetdicom marks a refused connection as aborted too
        return Fetched([], "rejected" if assoc.is_rejected else "unreachable")
    try:
        return _collect(assoc.send_c_find(query, ModalityWorklistInformationFind))
    finally:
        if assoc.is_established:
            assoc.release()


def _collect(responses: Iterator[tuple[Dataset, Dataset | None]]) -> Fetched:
    found: list[Dataset] = []
    unreadable = 0
    for status, identifier in responses:
        code = status.get("Status") if status else None
        if code is None:
            return Fetched([], f"partial: connection lost after {len(found)} answers")
        if code in (PENDING, PENDING_WARNING):
            if identifier is None:
                unreadable += 1
            else:
                found.append(identifier)
        elif code == dimse.SUCCESS:
            return Fetched(found, OK, unreadable)
        elif code == CANCEL:
            return Fetched([], f"partial: cancelled after {len(found)} answers")
        else:
            return Fetched([], f"failed: status 0x{code:04X}")
    return Fetched([], "partial: no final status")


# -- the cache -------------------------------------------------------------------------


class Worklist:
    """The sync worker and the C-FIND SCP of the worklist, over the store's cache."""

    def __init__(self, store: Store, config: Config, site: Callable[[], str | None], *,
                 calling_ae: str, fetcher: Fetcher | None = None) -> None:
        self.store = store
        self.config = config
        self.site = site
        transmit = config.transmit
        self.fetcher = fetcher or (lambda cfg, query: fetch(
            cfg, query, calling_ae=calling_ae, connect_timeout_s=transmit.connect_timeout_s,
            dimse_timeout_s=transmit.dimse_timeout_s))
        self._wake = threading.Event()
        self._poked = False
        self._attempts: dict[str, tuple[float, bool]] = {}  # site -> (at, good)
        self._seen: tuple[str | None, bool] | None = None
        self._lock = threading.Lock()
        self._counted: dict[str, tuple[float | None, int]] = {}  # site -> (synced_at, notes)

    # -- sync ---------------------------------------------------------------------

    def poke(self) -> None:
        """Sync the current site on the worker's next turn, whatever the interval says;
        safe from any thread."""
        self._poked = True
        self._wake.set()

    def observe(self, site_id: str | None, link_up: bool) -> None:
        """Each snapshot: a new site, or the link to it coming back, syncs at once."""
        seen, self._seen = self._seen, (site_id, link_up)
        if site_id and link_up and seen != (site_id, link_up):
            self.poke()

    def run(self, stop: threading.Event) -> None:
        """The sync loop, until `stop` is set (poke() after setting it to end the wait)."""
        while not stop.is_set():
            self._wake.clear()
            try:
                self.tick(time.time())
            except Exception as exc:  # the type only: a message may quote a patient value
                event(log, "worklist error", logging.ERROR, error=type(exc).__name__)
            self._wake.wait(TICK_S)

    def tick(self, now: float) -> str | None:
        """Sync the current site if it is due; the result, or None if nothing ran."""
        poked, self._poked = self._poked, False
        site = self._site_config(self.site())
        if site is None or site.worklist is None:
            return None
        last = self._attempts.get(site.id)
        if not poked and last is not None:
            at, good = last
            wait_s = site.worklist.sync_interval_s if good else min(
                site.worklist.retry_interval_s, site.worklist.sync_interval_s)
            if now - at < wait_s:
                return None
        return self.sync_once(site, now)

    def sync_once(self, site: SiteConfig, now: float) -> str:
        """Pull the site's worklist and replace its cache if the answer is complete;
        otherwise keep the cache and record why. Returns the result."""
        cfg = site.worklist
        assert cfg is not None
        fetched = self.fetcher(cfg, sync_query(cfg, date.fromtimestamp(now)))
        if not fetched.complete:
            self._note(site.id, now, fetched.result)
            self.store.note_worklist_sync(site.id, now, fetched.result)
            return fetched.result
        entries, corrections, unreadable = [], 0, fetched.unreadable
        for identifier in fetched.identifiers:
            try:
                entry = to_utf8(identifier, cfg.server_character_set)
                prune(entry)
                notes = correct(entry, cfg.corrections)
                entries.append(encode_entry(entry, notes))
            except Exception:  # one broken order must not freeze the whole list
                unreadable += 1
                continue
            corrections += len(notes)
        result = OK if not unreadable else f"{OK}: {unreadable} unreadable entries left out"
        self.store.replace_worklist(site.id, entries, now, result)
        self._note(site.id, now, result, entries=len(entries), corrections=corrections)
        return result

    def _note(self, site_id: str, now: float, result: str, **fields) -> None:
        good = result.startswith(OK)
        before = self._attempts.get(site_id)
        self._attempts[site_id] = (now, good)
        if good:  # every few minutes while all is well: a line only when news
            level = logging.INFO if before is None or not before[1] else logging.DEBUG
            event(log, "worklist synced", level, site=site_id, result=result, **fields)
        elif before is None or before[1]:  # once per outage, not every retry
            event(log, "worklist sync failed", logging.WARNING, site=site_id, result=result)

    def _site_config(self, site_id: str | None) -> SiteConfig | None:
        return self.config.site(site_id) if site_id else None

    # -- answering ----------------------------------------------------------------

    def answer(self, query: Dataset) -> list[Dataset]:
        """The responses to a modality's query, from the current site's cache; none
        when no site is known."""
        site = self._site_config(self.site())
        if site is None:
            return []
        cfg = site.worklist
        terms = answer_terms(cfg.answer_character_set if cfg else "", query)
        rule = cfg.unrepresentable if cfg else "transliterate"
        ignore_case = cfg is None or cfg.name_matching == "case-insensitive"
        charset = terms[0] if len(terms) == 1 else list(terms)
        responses = []
        for raw in self.store.worklist(site.id):
            entry, _ = decode_entry(raw)
            response = mwl_matching.answer(query, render(entry, terms, rule),
                                           names_ignore_case=ignore_case)
            if response is not None:
                response.SpecificCharacterSet = charset
                responses.append(response)
        return responses

    def on_c_find(self, ev) -> Iterator[tuple[int, Dataset | None]]:
        """pynetdicom's EVT_C_FIND handler: pending answers, then success (sent by
        pynetdicom), or cancel when the modality asks."""
        if ev.request.AffectedSOPClassUID != ModalityWorklistInformationFind:
            yield dimse.SOP_CLASS_NOT_SUPPORTED, None
            return
        try:
            query = ev.identifier
            responses = self.answer(query)
        except Exception as exc:
            event(log, "worklist query failed", logging.WARNING, error=type(exc).__name__)
            yield dimse.CANNOT_UNDERSTAND, None
            return
        for response in responses:
            if ev.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, response

    # -- views ---------------------------------------------------------------------

    def entries_view(self) -> list[dict]:
        """`fluxbox worklist --json`: the current site's entries (patient data)."""
        site_id = self.site()
        if not site_id:
            return []
        return [entry_json(*decode_entry(raw)) for raw in self.store.worklist(site_id)]

    def status(self, now: float) -> dict:
        """The current site's cache for `status`: no patient data."""
        site_id = self.site()
        state = self.store.worklist_state(site_id) if site_id else {}
        synced_at = state.get("synced_at")
        return {
            "site": site_id,
            "entries": state.get("entries", 0),
            "synced_at": synced_at,
            "age_s": round(now - synced_at, 1) if synced_at is not None else None,
            "result": state.get("result"),
            "attempted_at": state.get("attempted_at", synced_at),
            "corrections": self._corrections(site_id, synced_at) if site_id else 0,
        }

    def _corrections(self, site_id: str, synced_at: float | None) -> int:
        with self._lock:
            counted = self._counted.get(site_id)
            if counted is None or counted[0] != synced_at:
                total = sum(len(decode_entry(raw)[1]) for raw in self.store.worklist(site_id))
                counted = self._counted[site_id] = (synced_at, total)
            return counted[1]
