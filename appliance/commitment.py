"""Storage Commitment (PS3.4 Annex J): the N-ACTION a destination gets, the report it sends.

A destination with `commitment = true` is asked, once every instance of a study
has been acknowledged, to commit them all. Its N-EVENT-REPORT may come on the
same association or on a new one to the box's own port; both end here.
"""

from __future__ import annotations

import time

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import
    StorageCommitmentPushModel as StorageCommitmentPushModel,  # re-exported
)

from appliance import statuses
from appliance.store import InstanceRecord, Store

# PS3.4 J.3.3: the well-known SOP Instance of the Storage Commitment Push Model.
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
ACTION_REQUEST_COMMIT = 1
EVENT_ALL_COMMITTED = 1
EVENT_SOME_FAILED = 2


def request_dataset(records: list[InstanceRecord]) -> Dataset:
    """The N-ACTION information: a new Transaction UID and every instance of the study."""
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    refs = []
    for record in records:
        item = Dataset()
        item.ReferencedSOPClassUID = record.sop_class_uid
        item.ReferencedSOPInstanceUID = record.sop_instance_uid
        refs.append(item)
    ds.ReferencedSOPSequence = refs
    return ds


def handle_report(store: Store, event: Event) -> tuple[int, None]:
    """An EVT_N_EVENT_REPORT handler: record which instances the PACS committed."""
    info = event.event_information
    failed = {str(item.ReferencedSOPInstanceUID) for item in info.get("FailedSOPSequence", [])}
    known = store.commitment_result(str(info.get("TransactionUID", "")), failed, time.time())
    # an unknown transaction: class-instance conflict, as before
    return (statuses.SUCCESS if known else statuses.CLASS_INSTANCE_CONFLICT), None
