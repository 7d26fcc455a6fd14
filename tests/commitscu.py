"""A modality that asks for Storage Commitment (pynetdicom), for the tests.

DCMTK as shipped by Debian has no Storage Commitment SCU (storescu cannot ask, and no
other tool does), so the request comes from pynetdicom. The modality takes reports on
the association that asked (if it waits there) and on its own listening port (a new
association from the box), and records which way each came.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from tests.peers import LOOPBACK

PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"


@dataclass(frozen=True)
class CommitReport:
    transaction_uid: str
    event_type: int
    committed: frozenset[tuple[str, str]]
    failed: dict[str, int]  # SOP Instance UID -> Failure Reason
    association: str  # "same" or "new"
    calling_aet: str
    at: float


class CommitModality:
    """Listens on `port` (0: any free one) for reports; `request()` asks the box."""

    def __init__(self, ae_title: str = "MODALITY", port: int = 0) -> None:
        self.ae_title = ae_title
        self.port = port
        self.reports: list[CommitReport] = []
        self.endings: dict[str, str] = {}  # Transaction UID -> "released" or "aborted"
        self._cond = threading.Condition()
        self._server: Any = None

    def __enter__(self) -> CommitModality:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self._server = ae.start_server((LOOPBACK, self.port), block=False, evt_handlers=[
            (evt.EVT_N_EVENT_REPORT, lambda e: self._on_report(e, "new"))])
        self.port = self._server.server_address[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _on_report(self, event: Any, association: str) -> tuple[int, None]:
        info = event.event_information
        committed = frozenset((str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
                              for i in info.get("ReferencedSOPSequence", []))
        failed = {str(i.ReferencedSOPInstanceUID): int(i.FailureReason)
                  for i in info.get("FailedSOPSequence", [])}
        report = CommitReport(str(info.TransactionUID), int(event.event_type), committed,
                              failed, association, str(event.assoc.requestor.ae_title),
                              time.time())
        with self._cond:
            self.reports.append(report)
            self._cond.notify_all()
        return 0x0000, None

    def request(self, box_port: int, references: list[tuple[str, str]], *,
                wait_same_s: float = 0.0, listen_same: bool = True,
                called_aet: str = "FLUXBOX") -> tuple[int, str]:
        """Send an N-ACTION; (its status, the Transaction UID). With `wait_same_s`, keep
        the association open that long for the report (less once it came); without
        `listen_same`, refuse reports there (a modality that takes them only on its port).
        How the association ended is kept in `endings`.
        """
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(StorageCommitmentPushModel)
        ae.dimse_timeout = ae.acse_timeout = ae.network_timeout = 30
        handlers = [(evt.EVT_N_EVENT_REPORT, lambda e: self._on_report(e, "same"))]
        assoc = ae.associate(LOOPBACK, box_port, ae_title=called_aet,
                             evt_handlers=handlers if listen_same else [])
        assert assoc.is_established, "the box refused the commitment association"
        info = Dataset()
        info.TransactionUID = generate_uid()
        refs = []
        for sop_class, sop_instance in references:
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
            refs.append(item)
        info.ReferencedSOPSequence = refs
        try:
            status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel,
                                            PUSH_MODEL_INSTANCE)
            if wait_same_s:
                self.wait(info.TransactionUID, wait_same_s, missing_ok=True)
        finally:
            if assoc.is_established:
                assoc.release()
            self.endings[str(info.TransactionUID)] = (
                "aborted" if assoc.is_aborted else "released" if assoc.is_released else "other")
        return int(status.get("Status", -1)), str(info.TransactionUID)

    def wait(self, transaction_uid: str, timeout_s: float,
             missing_ok: bool = False) -> CommitReport | None:
        """The report of `transaction_uid`, waiting up to `timeout_s` for it."""
        def found() -> CommitReport | None:
            return next((r for r in self.reports if r.transaction_uid == transaction_uid), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, timeout_s)
            report = found()
        if report is None and not missing_ok:
            raise AssertionError(f"no commitment report within {timeout_s} s")
        return report

    def count(self, transaction_uid: str) -> int:
        with self._cond:
            return sum(1 for r in self.reports if r.transaction_uid == transaction_uid)
