"""Delivery: what goes to each destination, and how.

- ``worker``: one worker per destination: batches, the gate asked again before each send,
  acknowledgments recorded one by one, Storage Commitment requests, back-off.
- ``outcomes``: answers and failures of a send, the ``Sender`` and ``CommitmentAsker``
  interfaces the worker's steps take (the stateful model drives them with a fake PACS).
- ``association``: those interfaces over a pynetdicom association, and DICOM TLS.
"""

from appliance.delivery.association import tls_context, tls_problem
from appliance.delivery.outcomes import (
    Answer,
    BatchResult,
    CommitmentAsker,
    LinkDown,
    NoContextAccepted,
    PeerRejected,
    Sender,
    TransientRefusal,
    Unsendable,
)
from appliance.delivery.worker import LAST_SUCCESS_SAVE_S, DestinationWorker, contexts_for

__all__ = [
    "LAST_SUCCESS_SAVE_S", "Answer", "BatchResult", "CommitmentAsker",
    "DestinationWorker", "LinkDown", "NoContextAccepted", "PeerRejected", "Sender",
    "TransientRefusal", "Unsendable", "contexts_for", "tls_context", "tls_problem",
]
