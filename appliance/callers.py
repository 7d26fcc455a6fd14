"""Who may call the box, and for which service (issue 12, "closed to strangers").

A modality, named in `box.allowed_calling_aets` or `[box.modalities.AE_TITLE]`, may use
every service. A site's PACS asked for Storage Commitment (`site.destination.commitment`)
reports its results on an association of its own, calling as its own AE title: it may
send those reports (N-EVENT-REPORT) and C-ECHO, nothing else (no worklist, no images).

With `box.refuses_unknown` any other calling AE title gets an A-ASSOCIATE-RJ (rejected
permanent, calling AE title not recognized), and an admitted caller using a service it is
not admitted for gets "Refused: Not authorized" (0x0124, PS3.7 Annex C) and no data: a
worklist C-FIND then answers no entry. Otherwise (the embedded default, PRODUCT.md: "empty:
any modality may connect") every caller may use every service.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from pynetdicom import evt
from pynetdicom.events import Event, EventType

from appliance import statuses
from appliance.config import Config
from appliance.dimse import Answer, Handler, HandlerResult, calling_aet
from appliance.logs import event

log = logging.getLogger("fluxbox.callers")


ECHO, STORE, FIND, MPPS, COMMIT_REQUEST, COMMIT_REPORT = (
    "echo", "store", "find", "mpps", "commitment-request", "commitment-report")
REPORTER_SERVICES = frozenset({ECHO, COMMIT_REPORT})

# The service each DIMSE event handler serves; other events (notifications) pass as they are.
SERVICES: dict[EventType, str] = {
    evt.EVT_C_ECHO: ECHO,
    evt.EVT_C_STORE: STORE,
    evt.EVT_C_FIND: FIND,
    evt.EVT_N_CREATE: MPPS,
    evt.EVT_N_SET: MPPS,
    evt.EVT_N_ACTION: COMMIT_REQUEST,
    evt.EVT_N_EVENT_REPORT: COMMIT_REPORT,
}

# Longer than any AE title on the wire (16 characters at most): a list holding only this
# admits nobody, where pynetdicom takes an empty list for "anyone".
NOBODY = "-" * 17


@dataclass(frozen=True)
class Callers:
    refuse_unknown: bool
    modalities: frozenset[str] = frozenset()
    reporters: frozenset[str] = frozenset()  # PACS AE titles that send commitment reports

    @classmethod
    def from_config(cls, config: Config) -> Callers:
        box = config.box
        modalities = {*box.allowed_calling_aets, *(m.ae_title for m in box.modalities)}
        reporters = {d.ae_title for s in config.sites for d in s.destinations if d.commitment}
        return cls(box.refuses_unknown, frozenset(modalities), frozenset(reporters))

    def association_titles(self) -> list[str]:
        """For pynetdicom's `require_calling_aet`: [] admits any caller, [NOBODY] none."""
        if not self.refuse_unknown:
            return []
        return sorted(self.modalities | self.reporters) or [NOBODY]

    def may(self, calling_aet: str, service: str) -> bool:
        """Whether `calling_aet` may use `service`."""
        if not self.refuse_unknown:
            return True
        title = calling_aet.strip()
        return title in self.modalities or (
            title in self.reporters and service in REPORTER_SERVICES)

    def guard(self, event_type: EventType, handler: Handler) -> Handler:
        """`handler` for callers that may use its service; others get statuses.NOT_AUTHORIZED in
        the form that event's handler answers in, and the handler never runs."""
        service = SERVICES.get(event_type)
        if service is None:
            return handler

        def guarded(ev: Event) -> HandlerResult:
            caller = calling_aet(ev)
            if self.may(caller, service):
                return handler(ev)
            event(log, "service refused", logging.WARNING, calling_ae=caller,
                  service=service, status=f"0x{statuses.NOT_AUTHORIZED:04X}")
            return _refusal(service)

        return guarded


def _refusal(service: str) -> HandlerResult:
    if service in (ECHO, STORE):
        return statuses.NOT_AUTHORIZED
    if service == FIND:
        return _no_entries()
    return statuses.NOT_AUTHORIZED, None


def _no_entries() -> Iterator[Answer]:
    yield statuses.NOT_AUTHORIZED, None
