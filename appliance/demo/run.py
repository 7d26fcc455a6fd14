"""`fluxbox demo`: modality, box, PACS and a flaky link, all on this machine, no root.

A simulated modality sends a synthetic CT study to a box running in this
process; the box delivers it to a small PACS through a relay that cuts the
connection a few times mid-transfer. Progress is printed as it goes, then a
summary of what arrived where.
"""

from __future__ import annotations

import logging
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]  # made at import
from pynetdicom.transport import ThreadedAssociationServer

from appliance import dimse, statuses
from appliance.config import Config, parse_config
from appliance.demo.relay import FlakyRelay
from appliance.demo.synthetic import write_ct_study

if TYPE_CHECKING:
    from appliance.app import Box

DEMO_TIMEOUT_S = 120.0


class DemoPacs:
    """A storage SCP that counts what it receives per SOP Instance UID."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self._lock = threading.Lock()
        ae = AE(ae_title="DEMO_PACS")
        for cx in AllStoragePresentationContexts:  # each names its abstract syntax
            ae.add_supported_context(cast(UID, cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        self._server = cast(ThreadedAssociationServer, ae.start_server(
            ("127.0.0.1", 0), block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)]))  # not blocking: never None
        self.port: int = self._server.server_address[1]

    def _on_store(self, event: Event) -> int:
        with self._lock:
            self.received[str(dimse.store_request(event).AffectedSOPInstanceUID)] += 1
        return statuses.SUCCESS

    def stop(self) -> None:
        self._server.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _box_config(workdir: Path, relay_port: int) -> Config:
    text = f"""
[box]
ae_title = "FLUXBOX"
port = {_free_port()}
data_dir = "{workdir / 'data'}"
reserve_mb = 1

[detect]
mode = "fixed"
fixed_site = "demo"

[transmit]
study_quiet_s = 1
retry_initial_s = 0.5
retry_max_s = 2
connect_timeout_s = 3

[[site]]
id = "demo"
name = "Demo hospital"

[[site.destination]]
name = "pacs"
ae_title = "DEMO_PACS"
host = "127.0.0.1"
port = {relay_port}
"""
    return parse_config(text, "<demo>")


def _send_study(port: int, files: list[Path]) -> int:
    """The modality: send every file, return how many the box acknowledged."""
    ae = AE(ae_title="DEMO_CT")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="FLUXBOX")
    if not assoc.is_established:
        return 0
    acknowledged = 0
    for path in files:
        status = assoc.send_c_store(path)
        acknowledged += int("Status" in status and status.Status == statuses.SUCCESS)
    assoc.release()
    return acknowledged


def run_demo(instances: int = 24, cuts: int = 3,
             out: Callable[[str], object] = print) -> int:
    from appliance.app import Box  # imported late: Box sets process-wide settings
    from appliance.routing import destination_id

    _show_box_log()
    with tempfile.TemporaryDirectory(prefix="fluxbox-demo-") as tmp:
        workdir = Path(tmp)
        files = write_ct_study(workdir / "modality", slices=instances, rows=256, cols=256,
                               seed=1)
        study_bytes = sum(p.stat().st_size for p in files)
        pacs = DemoPacs()
        relay = FlakyRelay(("127.0.0.1", pacs.port), cut_after_bytes=max(study_bytes // 4, 1),
                           cut_times=cuts)
        relay.start()
        config = _box_config(workdir, relay.port)
        box = Box(config)
        box.start()
        try:
            port = box.receiver.port
            out(f"modality -> box (port {port}) -> flaky link ({cuts} cuts) -> PACS")
            started = time.monotonic()
            acknowledged = _send_study(port, files)
            out(f"modality: {acknowledged}/{len(files)} instances acknowledged by the box in "
                f"{time.monotonic() - started:.1f} s; the technologist can move on")
            state = _follow(box, pacs, relay, len(files), out)
        finally:
            box.stop()
            relay.stop()
            pacs.stop()
        dest_id = destination_id(config.sites[0], config.sites[0].destinations[0])
        resent = sum(n - 1 for n in pacs.received.values())
        out("")
        out("summary")
        out(f"  instances sent by the modality : {len(files)}")
        out(f"  acknowledged by the box        : {acknowledged}")
        out(f"  delivered to the PACS          : {len(pacs.received)}")
        out(f"  link cuts during delivery      : {relay.cuts}")
        out(f"  instances sent twice           : {resent} (in flight at a cut)")
        out(f"  study state                    : {state} ({dest_id})")
        return 0 if state == "complete" and len(pacs.received) == len(files) else 1


def _show_box_log() -> None:
    """The box's own log lines, interleaved with the demo's progress on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  box log: %(message)s"))
    root = logging.getLogger("fluxbox")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


def _follow(box: Box, pacs: DemoPacs, relay: FlakyRelay, total: int,
            out: Callable[[str], object]) -> str:
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    last = None
    state = "receiving"
    while time.monotonic() < deadline:
        rows = box.studies_view()
        state = rows[0]["state"] if rows else "receiving"
        line = (f"box: study {state:<9} PACS has {len(pacs.received):>3}/{total}  "
                f"link cuts so far: {relay.cuts}")
        if line != last:
            out(line)
            last = line
        if state in ("complete", "failed"):
            return state
        time.sleep(0.25)
    return state
