"""The DICOM listener: accepted callers, C-ECHO and C-STORE handlers, outcomes -> status codes.

No success goes back before `Store.put_intake` returns: the instance is then encrypted on
disk (it was, as it arrived: `store.intake`), fsynced and indexed (PRODUCT.md, Guarantees).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from appliance import dimse, statuses, upper_layer
from appliance.callers import NOBODY, Callers
from appliance.commitment import handle_report
from appliance.config import BoxConfig
from appliance.config.tls import tls_server_problems
from appliance.crypto import BlobCorrupt
from appliance.logs import event
from appliance.sites import SiteDecision
from appliance.store import Intake, Outcome, Store, StoreFault, StoreFull
from appliance.validation import (
    InstanceHeader,
    InvalidDataset,
    read_header,
    read_header_from,
)

log = logging.getLogger("fluxbox.receiving")


def _acceptance_order() -> list[str]:
    """The box accepts, within one proposed context, the first of these the modality offers:
    explicit little endian, then lossless compression, then other uncompressed encodings,
    then lossy. So a value never changes to suit the box: a modality offering both a
    lossless syntax and a lossy one for the same context never compresses lossy."""
    first = [ExplicitVRLittleEndian]
    lossless = [ts for ts in ALL_TRANSFER_SYNTAXES
                if UID(ts).is_compressed and "Lossless" in UID(ts).name
                and "Near" not in UID(ts).name]
    plain = [ts for ts in ALL_TRANSFER_SYNTAXES if not UID(ts).is_compressed and ts not in first]
    rest = [ts for ts in ALL_TRANSFER_SYNTAXES if ts not in first + lossless + plain]
    return first + lossless + plain + rest + RETIRED_JPEG


# The retired JPEG processes (PS3.5 Table A-1, retired in 2006) that old modalities still
# send: pynetdicom does not list them, pydicom knows them (explicit VR little endian, kept
# and forwarded as they are). A syntax unknown to both is refused per presentation context:
# the box could store it but never forward it (pynetdicom sends only syntaxes it knows).
RETIRED_JPEG = [f"1.2.840.10008.1.2.4.{n}" for n in (52, 53, 54, 55, 56, 58, 59, 60, 61, 62,
                                                     63, 64, 65, 66)]


ACCEPTED_SYNTAXES = _acceptance_order()


DRAIN_S = 10.0  # at stop, how long open associations may go on before they are aborted
ABORT_JOIN_S = 60.0  # after the abort, how long a handler may take to finish storing
# ARTIM (PS3.8 9.1.5) on the box's listener: how long a connection may stay silent before
# its A-ASSOCIATE-RQ, and wait for the peer to close after an abort. A modality sends its
# request at once; pynetdicom's 30 s let silent connections hold the few waiting slots
# (upper_layer.WAITING_MAX) three times as long.
REQUEST_WAIT_S = 10.0


class OpenAssociations:
    """Which studies are still arriving over an open association (quiet time starts at release)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._studies: dict[int, set[str]] = {}

    def opened(self, assoc_id: int) -> None:
        with self._lock:
            self._studies.setdefault(assoc_id, set())

    def touched(self, assoc_id: int, study_key: str) -> None:
        with self._lock:
            self._studies.setdefault(assoc_id, set()).add(study_key)

    def closed(self, assoc_id: int) -> None:
        with self._lock:
            self._studies.pop(assoc_id, None)

    def studies(self) -> set[str]:
        with self._lock:
            return set().union(*self._studies.values()) if self._studies else set()

    def count(self) -> int:
        with self._lock:
            return len(self._studies)


class Receiver:
    """The box's SCP. `handle_store` is the C-STORE step, callable directly in tests."""

    def __init__(
        self, box: BoxConfig, store: Store, site: Callable[[], SiteDecision],
        on_stored: Callable[[], None] = lambda: None,
        position: Callable[[], tuple[float, float] | None] = lambda: None,
        extra_handlers: dimse.Handlers | None = None,
        callers: Callers | None = None,
    ) -> None:
        self.box = box
        self.store = store
        self.site = site
        self.on_stored = on_stored
        self.position = position
        self.associations = OpenAssociations()
        self.extra_handlers = extra_handlers or []
        self.counters = {"stored": 0, "duplicate": 0, "replaced": 0, "refused": 0, "failed": 0}
        self.last_error: str | None = None
        self.callers = callers or Callers(self.box.refuses_unknown,
                                          frozenset(self.box.allowed_calling_aets))
        self._ae: AE | None = None
        self._handlers: list[EventHandlerType] = []
        self._servers: dict[str, ThreadedAssociationServer] = {}  # address -> its server
        self._listen_lock = threading.Lock()  # bind (the listen thread) against stop
        self._bind_errors: dict[str, str] = {}  # address -> last error, logged once

    def start(self, addresses: tuple[str, ...] = ("0.0.0.0",)) -> None:
        """Ready to serve; listens on `addresses` (see `bind`)."""
        ae = AE(ae_title=self.box.ae_title)
        ae.maximum_pdu_size = self.box.max_pdu
        # Unknown callers get an A-ASSOCIATE-RJ here; per-service rights in the handlers.
        # (pynetdicom validates the setter's titles; NOBODY is meant never to match.)
        titles = self.callers.association_titles()
        if titles == [NOBODY]:
            ae._require_calling_aet = titles
        else:
            ae.require_calling_aet = titles
        ae.maximum_associations = 16
        ae.network_timeout = 120
        ae.dimse_timeout = 120
        ae.acse_timeout = REQUEST_WAIT_S
        # Every storage SOP class, private and unknown ones too; these contexts only serve
        # the acceptance order (see dimse.accept_any_storage).
        dimse.accept_any_storage(ae, ACCEPTED_SYNTAXES)
        dimse.receive_into(ae, self.store.open_intake)
        for cx in AllStoragePresentationContexts:  # each names its abstract syntax
            ae.add_supported_context(cast(UID, cx.abstract_syntax), ACCEPTED_SYNTAXES)
        ae.add_supported_context(Verification, ACCEPTED_SYNTAXES)
        # Modality Worklist C-FIND: the EVT_C_FIND handler comes in `extra_handlers`
        # (worklist.cache.Worklist.on_c_find); without one pynetdicom answers a failure.
        ae.add_supported_context(ModalityWorklistInformationFind, ACCEPTED_SYNTAXES)
        # MPPS N-CREATE / N-SET: the handlers come in `extra_handlers` too.
        ae.add_supported_context(ModalityPerformedProcedureStep, ACCEPTED_SYNTAXES)
        # A PACS reports Storage Commitment results on an association of its own, acting
        # as the SCP of the Push Model: accept that role.
        ae.add_supported_context(StorageCommitmentPushModel, ACCEPTED_SYNTAXES,
                                 scu_role=True, scp_role=True)
        handlers: dimse.Handlers = [
            (evt.EVT_C_ECHO, lambda event: statuses.SUCCESS),
            (evt.EVT_C_STORE, self._on_c_store),
            (evt.EVT_N_EVENT_REPORT, lambda event: handle_report(self.store, event)),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_ended),
            (evt.EVT_ABORTED, self._on_ended),
            (evt.EVT_CONN_CLOSE, self._on_ended),
            (evt.EVT_REJECTED, self._on_rejected),
            *self.extra_handlers,
        ]
        self._handlers = [(e, self.callers.guard(e, h)) for e, h in handlers]
        self._tls()  # a half-configured TLS setting raises before anything listens
        self._ae = ae
        self.bind(addresses)

    def bind(self, addresses: tuple[str, ...]) -> tuple[str, ...]:
        """Listen on exactly `addresses`: new ones start a server, gone ones stop theirs
        (their open associations go on to their end). Returns the addresses listened on; one
        that cannot be bound is logged and left out (the caller tries again)."""
        with self._listen_lock:
            return self._bind(addresses)

    def _bind(self, addresses: tuple[str, ...]) -> tuple[str, ...]:
        if self._ae is None:
            return ()
        for address in [a for a in self._servers if a not in addresses]:
            self._servers.pop(address).shutdown()
            event(log, "listening stopped", address=address, port=self.box.port)
        for address in [a for a in addresses if a not in self._servers]:
            try:
                server = cast(ThreadedAssociationServer, self._ae.start_server(
                    (address, self.box.port), block=False, evt_handlers=self._handlers,
                    ssl_context=self._tls()))  # not blocking: the server, never None
                upper_layer.limit_waiting(server)
                self._servers[address] = server
            except OSError as exc:
                error = exc.strerror or type(exc).__name__
                if self._bind_errors.get(address) != error:
                    event(log, "listen failed", logging.ERROR, address=address,
                          port=self.box.port, error=error)
                self._bind_errors[address] = error
                continue
            self._bind_errors.pop(address, None)
            event(log, "listening", ae_title=self.box.ae_title, address=address,
                  port=self.port)
        return tuple(self._servers)

    def _tls(self) -> ssl.SSLContext | None:
        """DICOM TLS on the box's own port when the config names a certificate. A
        half-configured setting raises (check-config refuses it): never a plain port."""
        problems = tls_server_problems(self.box.tls_cert, self.box.tls_key, self.box.tls_ca)
        if problems:
            raise ValueError("box: " + "; ".join(f"{k} {m}" for k, m in problems))
        if self.box.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.box.tls_cert),
                                str(self.box.tls_key) if self.box.tls_key else None)
        if self.box.tls_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(self.box.tls_ca))
        return context

    @property
    def port(self) -> int:
        """The port actually listened on."""
        for server in self._servers.values():
            return server.server_address[1]
        return self.box.port

    @property
    def running(self) -> bool:
        """Started and not stopped (it may still wait for an address to listen on)."""
        return self._ae is not None

    def stop(self, drain_s: float = DRAIN_S) -> bool:
        """Stop accepting; let in-flight associations finish for up to `drain_s`, then abort
        them and wait for their handlers to return. True when none is left running (only
        then may the store be closed under them)."""
        with self._listen_lock:
            if self._ae is None:
                return True
            ae, servers = self._ae, list(self._servers.values())
            self._servers, self._ae = {}, None
        # every association of this AE, those of a server already stopped by `bind` too
        active = list(ae.active_associations)
        for server in servers:
            server.shutdown()
        deadline = time.monotonic() + drain_s
        for assoc in active:
            assoc.join(timeout=max(0.0, deadline - time.monotonic()))
        running = [assoc for assoc in active if assoc.is_alive()]
        for assoc in running:
            assoc.abort()  # a handler busy storing still returns before the thread ends
        for assoc in running:
            assoc.join(timeout=ABORT_JOIN_S)
        left = sum(assoc.is_alive() for assoc in running)
        if left:
            event(log, "associations still running at stop", logging.WARNING, count=left)
        return left == 0

    # -- handlers ------------------------------------------------------------

    def _on_accepted(self, ev: Event) -> None:
        self.associations.opened(id(ev.assoc))

    def _on_ended(self, ev: Event) -> None:
        dimse.drop_partial_message(ev.assoc)  # a data set cut off by an abort: its blob goes
        self.associations.closed(id(ev.assoc))
        self.on_stored()

    def _on_rejected(self, ev: Event) -> None:
        event(log, "association rejected", logging.WARNING, calling_ae=dimse.calling_aet(ev))

    def _on_c_store(self, ev: Event) -> int:
        request = dimse.store_request(ev)
        sop_class = str(request.AffectedSOPClassUID)
        sop_instance = str(request.AffectedSOPInstanceUID)
        intake = dimse.received_file(ev)
        if isinstance(intake, Intake):
            try:
                return self.handle_intake(intake, assoc_id=id(ev.assoc), sop_class=sop_class,
                                          sop_instance=sop_instance,
                                          calling_aet=dimse.calling_aet(ev))
            finally:
                intake.close()  # pynetdicom's own close is skipped when a handler raises
        return self.handle_store(Path(ev.dataset_path), assoc_id=id(ev.assoc),
                                 sop_class=sop_class, sop_instance=sop_instance,
                                 calling_aet=dimse.calling_aet(ev))

    def handle_store(self, path: Path, *, assoc_id: int, sop_class: str, sop_instance: str,
                     calling_aet: str) -> int:
        """Validate and store one instance received as a plain Part 10 file (tests, tools);
        returns the DIMSE status to answer."""
        def header() -> InstanceHeader:
            return read_header(path, command_sop_class=sop_class,
                               command_sop_instance=sop_instance)

        def put(found: InstanceHeader, **arrival: Any) -> Outcome:
            return self.store.put_instance(path, found, **arrival)

        return self._store(header, put, lambda: None, assoc_id=assoc_id,
                           calling_aet=calling_aet)

    def handle_intake(self, intake: Intake, *, assoc_id: int, sop_class: str,
                      sop_instance: str, calling_aet: str) -> int:
        """Validate and store one data set received into an `Intake` (encrypted as it
        arrived); returns the DIMSE status to answer. A refused one leaves nothing."""
        def header() -> InstanceHeader:
            intake.end()
            with intake.reader() as plain:
                return read_header_from(plain, intake.size, command_sop_class=sop_class,
                                        command_sop_instance=sop_instance)

        def put(found: InstanceHeader, **arrival: Any) -> Outcome:
            return self.store.put_intake(intake, found, **arrival)

        return self._store(header, put, intake.discard, assoc_id=assoc_id,
                           calling_aet=calling_aet)

    def _store(self, header: Callable[[], InstanceHeader],
               put: Callable[..., Outcome], discard: Callable[[], None], *,
               assoc_id: int, calling_aet: str) -> int:
        try:
            found = header()
        except InvalidDataset as exc:
            discard()
            self.counters["refused"] += 1
            event(log, "instance refused", logging.WARNING, calling_ae=calling_aet,
                  status=f"0x{exc.status:04X}", reason=exc.reason)
            return exc.status
        except (OSError, BlobCorrupt) as exc:  # unreadable: the box's fault, not the data's
            discard()
            return self._store_failed("spool", exc)
        decision = self.site()
        try:
            outcome = put(found, calling_aet=calling_aet, site=decision.id,
                          site_source=decision.source, position=self.position())
        except (StoreFull, StoreFault) as exc:
            return self._store_failed(type(exc).__name__, exc)
        except Exception as exc:  # any fault: the modality keeps its copy and the box serves on
            discard()
            log.exception("store error")
            return self._store_failed("internal", exc)
        self.counters[outcome.value] += 1
        self.associations.touched(assoc_id, self.store.uid_key(found.study_uid))
        if outcome is not Outcome.DUPLICATE:
            self.on_stored()
        return statuses.SUCCESS

    def _store_failed(self, kind: str, exc: Exception) -> int:
        self.counters["failed"] += 1
        self.last_error = f"store failed: {kind}"
        event(log, "instance not stored", logging.ERROR, cause=kind,
              status=f"0x{statuses.OUT_OF_RESOURCES:04X}", detail=type(exc).__name__)
        return statuses.OUT_OF_RESOURCES
