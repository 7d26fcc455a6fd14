"""Modality Performed Procedure Step: the box as MPPS SCP for the modality, relaying every
N-CREATE and N-SET to the site's RIS through the delivery queue, in order per step.

An MPPS COMPLETED lists the instances the modality produced: the study is closed at once
when all of them are on the box, or held for `transmit.mpps_wait_s` while some are missing
(then closed with a finding naming how many never arrived).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import
    ModalityPerformedProcedureStep,
)

from appliance import dimse, statuses
from appliance.config import Config
from appliance.logs import event
from appliance.sites import SiteDecision
from appliance.store import Store

log = logging.getLogger("fluxbox.mpps")

MPPS_CLASS = str(ModalityPerformedProcedureStep)


def encode(ds: Dataset, step_uid: str) -> bytes:
    """A message's dataset as Part 10 bytes (explicit little endian)."""
    ds = Dataset(ds)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(MPPS_CLASS)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(step_uid)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def decode(payload: bytes) -> Dataset:
    return dcmread(io.BytesIO(payload))


def performed_instances(ds: Dataset) -> list[str]:
    """SOP Instance UIDs an MPPS lists as produced (PS3.3 C.4.14)."""
    uids = []
    for series in ds.get("PerformedSeriesSequence", []):
        for name in ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence"):
            uids += [str(item.ReferencedSOPInstanceUID) for item in series.get(name, [])
                     if "ReferencedSOPInstanceUID" in item]
    return uids


def performed_study(ds: Dataset) -> str:
    for step in ds.get("ScheduledStepAttributesSequence", []):
        if step.get("StudyInstanceUID"):
            return str(step.StudyInstanceUID)
    return ""


class MppsService:
    """The N-CREATE and N-SET handlers (pynetdicom events)."""

    def __init__(self, store: Store, config: Config, site: Callable[[], SiteDecision],
                 on_completed: Callable[[str, list[str]], None],
                 on_queued: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.config = config
        self.site = site
        self.on_completed = on_completed
        self.on_queued = on_queued

    def ris_destination(self, site_id: str | None) -> str | None:
        site = self.config.site(site_id) if site_id else None
        return f"{site.id}/ris" if site is not None and site.mpps is not None else None

    def on_n_create(self, ev: Event) -> dimse.Answer:
        return self._guarded(self._create, ev)

    def on_n_set(self, ev: Event) -> dimse.Answer:
        return self._guarded(self._set, ev)

    def _guarded(self, handler: Callable[[Event], dimse.Answer], ev: Event) -> dimse.Answer:
        """A failure answers 0x0110 (processing failure) and is logged without values."""
        try:
            return handler(ev)
        except Exception as exc:
            event(log, "mpps not accepted", logging.ERROR, error=type(exc).__name__)
            return statuses.PROCESSING_FAILURE, None

    def _create(self, ev: Event) -> dimse.Answer:
        ds = ev.attribute_list
        step_uid = str(dimse.create_request(ev).AffectedSOPInstanceUID or "")
        if not step_uid:
            return statuses.CANNOT_UNDERSTAND, None
        if self.store.study(self.store.uid_key("mpps:" + step_uid)) is not None:
            return statuses.DUPLICATE_SOP_INSTANCE, None
        site = self.site().id
        self.store.put_message(step_uid, "create", encode(ds, step_uid), site=site,
                               dest=self.ris_destination(site), now=time.time(),
                               sop_class_uid=MPPS_CLASS, performed_study_uid=performed_study(ds))
        event(log, "mpps created", status=ds.get("PerformedProcedureStepStatus", ""))
        self.on_queued()
        return statuses.SUCCESS, ds

    def _set(self, ev: Event) -> dimse.Answer:
        ds = ev.modification_list
        step_uid = str(dimse.set_request(ev).RequestedSOPInstanceUID or "")
        step = self.store.study(self.store.uid_key("mpps:" + step_uid))
        if step is None:
            return statuses.NO_SUCH_SOP_INSTANCE, None
        self.store.put_message(step_uid, "set", encode(ds, step_uid), site=step.site,
                               dest=self.ris_destination(step.site), now=time.time(),
                               sop_class_uid=MPPS_CLASS)
        status = ds.get("PerformedProcedureStepStatus", "")
        event(log, "mpps set", status=status)
        if status == "COMPLETED" and step.performed_study_uid:
            self.on_completed(step.performed_study_uid, performed_instances(ds))
        self.on_queued()
        return statuses.SUCCESS, ds
