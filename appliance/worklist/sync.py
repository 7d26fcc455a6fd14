"""Sync: the one broad C-FIND that pulls a site's orders from its worklist server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import
    ModalityWorklistInformationFind,
)

from appliance import dimse, statuses
from appliance.worklist.config import WorklistConfig

OK = "ok"

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
    ae = dimse.calling_ae(calling_ae, connect_timeout_s=connect_timeout_s,
                          dimse_timeout_s=dimse_timeout_s)
    ae.add_requested_context(ModalityWorklistInformationFind)
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
        if code in (statuses.PENDING, statuses.PENDING_WARNING):
            if identifier is None:
                unreadable += 1
            else:
                found.append(identifier)
        elif code == statuses.SUCCESS:
            return Fetched(found, OK, unreadable)
        elif code == statuses.CANCEL:
            return Fetched([], f"partial: cancelled after {len(found)} answers")
        else:
            return Fetched([], f"failed: status 0x{code:04X}")
    return Fetched([], "partial: no final status")
