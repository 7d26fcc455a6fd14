"""What a send can come to, as the worker's steps see it: the answers, the failures that
stop one instance or the whole batch, the interfaces of one association (`Sender`,
`CommitmentAsker`), and the back-off after a failed batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pydicom.dataset import Dataset

from appliance.store import Queued


class LinkDown(Exception):
    """The destination could not be reached, or the association broke."""


class PeerRejected(Exception):
    """The destination rejected the association (wrong AE title, busy, ...)."""


class NoContextAccepted(LinkDown):
    """The destination accepted the association but none of its presentation contexts (a
    SOP class or transfer syntax it does not take): pynetdicom then aborts at once. Where
    the caller does not tell it apart, it is handled as a link problem."""


class PeerAborted(LinkDown):
    """The PACS's application aborted the association (an A-ABORT from the service user,
    PS3.8 9.3.8) while it had one instance, not the link: counted against that instance."""


class TransientRefusal(Exception):
    """The destination answered with a status worth trying again (out of resources)."""


class Unsendable(Exception):
    """This instance cannot go to this destination (its reason says why); the rest can."""


@dataclass
class Answer:
    """A destination's response to one send: its status (empty when none came)."""

    status: Dataset
    elapsed_s: float = 0.0


class Sender(Protocol):
    """One association to the destination, as the send steps see it. Raises Unsendable
    for this instance alone, LinkDown (or TransientRefusal, dimse.Stalled) for the rest.
    `following`, the instance sent next if it may still go, may be read ahead meanwhile."""

    def send(self, item: Queued, following: Queued | None = None) -> Answer: ...


class CommitmentAsker(Protocol):
    """One association to the destination, for Storage Commitment requests."""

    def supports_commitment(self) -> bool:
        """Whether the PACS accepted the Storage Commitment context; LinkDown if lost."""

    def ask(self, request: Dataset) -> Dataset:
        """Send the N-ACTION; the response's status (empty when none came)."""


@dataclass
class BatchResult:
    sent: int = 0
    failed: int = 0
    error: str | None = None
    completed: list[str] = field(default_factory=list)
