"""Real DICOM peers on loopback for the tests, each one stopped reliably.

- ``Orthanc``: a PACS with a REST API (``/usr/sbin/Orthanc``).
- ``StoreSCP``: DCMTK ``storescp``, writing what it receives bit for bit.
- ``storescu()``: DCMTK ``storescu`` sending files in their own transfer syntaxes.
- ``CountingSCP``: an in-process storage SCP that records every C-STORE and can
  misbehave (abort, refuse, reject) on request.
- ``DcmQRSCP``: DCMTK ``dcmqrscp``, an image archive storing bit-preserving.
- ``gdcmscu()`` and ``pynetdicom_store()``: GDCM's and pynetdicom's storage SCUs;
  ``Orthanc.upload()`` and ``Orthanc.send_to()`` make Orthanc a modality.
- ``dciodvfy()``: dicom3tools' conformance checker, its errors as a set.

Child processes get ``TCP_NODELAY=1`` (DCMTK and Orthanc leave Nagle on
without it), run in their own process group, are killed with the group on
``stop()``, and get SIGKILL from the kernel if the test process dies first.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pydicom import dcmread
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    VerificationPresentationContexts,
    _config,
    evt,
)

from tests.support.ports import (
    LOOPBACK,
    free_port,  # noqa: F401 - tests import it from here too
    port_open,
    wait_port,
)
from tests.support.processes import die_with_parent

ORTHANC_BIN = "/usr/sbin/Orthanc"


def _check_free(port: int) -> None:
    if port_open(LOOPBACK, port):
        raise RuntimeError(f"port {port} is already in use: a stale peer?")


# --------------------------------------------------------------------------- processes


def peer_env() -> dict[str, str]:
    """The environment for DCMTK and Orthanc: ours plus TCP_NODELAY=1."""
    return {**os.environ, "TCP_NODELAY": "1"}


def _spawn(args: Sequence[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a peer in its own process group; stdout and stderr go to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=peer_env(), cwd=cwd, start_new_session=True, preexec_fn=die_with_parent(),
        )


def _terminate(proc: subprocess.Popen[Any] | None, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after ``grace_s``
    (at once if ``grace_s`` is 0)."""
    if proc is None:
        return
    steps = [(signal.SIGTERM, grace_s)] if grace_s > 0 else []
    for sig, wait_s in [*steps, (signal.SIGKILL, 5.0)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # forked children left in the group
        return


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


class _Peer:
    """Context manager plumbing shared by the process-backed peers."""

    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Any:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __del__(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _terminate(self.proc, grace_s=1.0)


# --------------------------------------------------------------------------- Orthanc


class Orthanc(_Peer):
    """Orthanc with a private config and storage, DICOM and HTTP on free loopback ports.

    Orthanc 1.10 has no HTTP bind address setting: it listens on all interfaces,
    and ``RemoteAccessAllowed: false`` makes it answer only loopback clients.
    """

    def __init__(self, *, aet: str = "ORTHANC", dicom_port: int | None = None,
                 http_port: int | None = None, extra_config: dict[str, Any] | None = None,
                 start_timeout_s: float = 30.0) -> None:
        self.aet = aet
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        self.extra_config = extra_config or {}
        self.start_timeout_s = start_timeout_s
        self.workdir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "orthanc.log"

    def config(self) -> dict[str, Any]:
        assert self.workdir is not None
        return {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "UnknownSopClassAccepted": True,
            "OverwriteInstances": True,
            "StorageCompression": False,
            "SaveJobs": False,
            "Plugins": [],
            **self.extra_config,
        }

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="orthanc-"))
        for port in (self.dicom_port, self.http_port):
            _check_free(port)
        cfg = self.workdir / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        self.proc = _spawn([ORTHANC_BIN, str(cfg)], self.log_path, cwd=self.workdir)
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n"
                                   f"{_tail(self.log_path)}")
            with contextlib.suppress(OSError, ValueError):
                system = self.rest("GET", "/system", timeout_s=2.0)
                if system.get("DicomPort") != self.dicom_port:
                    raise RuntimeError(f"another Orthanc answers on {self.http_port}: {system}")
                wait_port(LOOPBACK, self.dicom_port, max(0.1, deadline - time.monotonic()),
                          proc=self.proc)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Orthanc did not answer within {self.start_timeout_s} s:\n"
                                   f"{_tail(self.log_path)}")
            time.sleep(0.1)

    def stop(self, graceful: bool = False) -> None:
        """Kill Orthanc and delete its storage. SIGKILL unless ``graceful``: a clean
        shutdown takes Orthanc about 3 s, and the storage is thrown away anyway."""
        _terminate(self.proc, grace_s=10.0 if graceful else 0.0)
        self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # REST ----------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None,
                 timeout_s: float = 30.0) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.read()

    def rest(self, method: str, path: str, body: Any = None, timeout_s: float = 30.0) -> Any:
        """Call the REST API; the decoded JSON answer (None if empty)."""
        raw = self._request(method, path, body, timeout_s)
        return json.loads(raw) if raw.strip() else None

    def instances(self) -> list[str]:
        """Orthanc IDs of every stored instance."""
        return list(self.rest("GET", "/instances"))

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored Part 10 file of one instance."""
        return self._request("GET", f"/instances/{orthanc_id}/file")

    def find_instances(self) -> list[dict[str, Any]]:
        """Every instance with its main DICOM tags, in one request."""
        return list(self.rest("POST", "/tools/find",
                              {"Level": "Instance", "Query": {}, "Expand": True}))

    def sop_instance_uids(self) -> set[str]:
        return {i["MainDicomTags"]["SOPInstanceUID"] for i in self.find_instances()}

    def instance_by_uid(self) -> dict[str, str]:
        """SOP Instance UID -> Orthanc ID."""
        return {i["MainDicomTags"]["SOPInstanceUID"]: i["ID"] for i in self.find_instances()}

    def count_instances(self) -> int:
        return int(self.rest("GET", "/statistics")["CountInstances"])

    def studies(self) -> list[str]:
        """Orthanc IDs of every stored study."""
        return list(self.rest("GET", "/studies"))

    def study_uids(self) -> set[str]:
        found = self.rest("POST", "/tools/find", {"Level": "Study", "Query": {}, "Expand": True})
        return {s["MainDicomTags"]["StudyInstanceUID"] for s in found}

    def upload(self, part10: bytes) -> str:
        """Store a Part 10 file through the REST API; its Orthanc ID."""
        req = urllib.request.Request(self.url + "/instances", data=part10, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(json.loads(resp.read())["ID"])

    def send_to(self, modality: str, ids: list[str], timeout_s: float = 120.0) -> Any:
        """C-STORE these instances to a modality of the config (``DicomModalities``),
        synchronously, as a modality would send them (``/modalities/{id}/store``); an
        instance the receiver refuses does not stop the others (``Permissive``)."""
        return self.rest("POST", f"/modalities/{modality}/store",
                         {"Resources": ids, "Synchronous": True, "Permissive": True},
                         timeout_s=timeout_s)

    def delete_all(self) -> None:
        for patient in self.rest("GET", "/patients"):
            with contextlib.suppress(urllib.error.HTTPError):
                self.rest("DELETE", f"/patients/{patient}")


# --------------------------------------------------------------------------- DCMTK


class StoreSCP(_Peer):
    """DCMTK storescp: every storage SOP class (also unknown ones), every transfer
    syntax, files written bit-preserving (``+B``) to ``out_dir``.

    Single-process: it serves one association at a time, the next waits in the
    listen backlog.
    """

    def __init__(self, *, aet: str = "STORESCP", port: int | None = None,
                 out_dir: Path | None = None, extra_args: Sequence[str] = ()) -> None:
        self.aet = aet
        self.port = port or free_port()
        self.extra_args = tuple(extra_args)
        self._own_dir = out_dir is None
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.workdir: Path | None = None

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "storescp.log"

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="storescp-"))
        if self.out_dir is None:
            self.out_dir = self.workdir / "out"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _check_free(self.port)
        args = ["storescp", "--aetitle", self.aet, "--output-directory", str(self.out_dir),
                "--accept-all", "--promiscuous", "--bit-preserving",
                "--disable-host-lookup", "--acse-timeout", "30", "--socket-timeout", "60",
                *self.extra_args, str(self.port)]
        self.proc = _spawn(args, self.log_path)
        try:
            wait_port(LOOPBACK, self.port, 10.0, proc=self.proc)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{e}\n{_tail(self.log_path)}") from e

    def files(self) -> list[Path]:
        """Received files, oldest first."""
        if self.out_dir is None or not self.out_dir.exists():
            return []
        found = [p for p in self.out_dir.rglob("*") if p.is_file()]
        return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        if self._own_dir:
            self.out_dir = None


def _expand(files: Iterable[Path | str]) -> list[Path]:
    out: list[Path] = []
    for f in map(Path, files):
        out.extend(sorted(p for p in f.rglob("*") if p.is_file()) if f.is_dir() else [f])
    return out


def storescu_profile(files: Sequence[Path]) -> str:
    """A storescu association profile (``-xf FILE Default``) with one presentation
    context per (SOP class, transfer syntax) of ``files``, each proposing exactly the
    file's own transfer syntax, so compressed files go out as they are.
    """
    pairs: dict[tuple[str, str], None] = {}  # an ordered set
    for f in files:
        ds = dcmread(f, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        sop_class = ds.get("SOPClassUID") or ds.file_meta.MediaStorageSOPClassUID
        pairs[(str(sop_class), str(ds.file_meta.TransferSyntaxUID))] = None
    if len(pairs) > 128:
        raise ValueError(f"{len(pairs)} presentation contexts needed, at most 128 fit")
    syntaxes = sorted({ts for _, ts in pairs})
    lines = ["[[TransferSyntaxes]]"]
    for n, ts in enumerate(syntaxes, 1):
        lines += [f"[TS{n}]", f"TransferSyntax1 = {ts}"]
    lines += ["", "[[PresentationContexts]]", "[Contexts]"]
    for n, (sop, ts) in enumerate(pairs, 1):
        lines.append(f"PresentationContext{n} = {sop}\\TS{syntaxes.index(ts) + 1}")
    lines += ["", "[[Profiles]]", "[Default]", "PresentationContexts = Contexts", ""]
    return "\n".join(lines)


def storescu(host: str, port: int, files: Iterable[Path | str], *, called_aet: str,
             calling_aet: str = "MODALITY", extra_args: Sequence[str] = (),
             own_transfer_syntax: bool = True,
             timeout_s: float = 600.0) -> subprocess.CompletedProcess[str]:
    """Send ``files`` (directories are walked) with DCMTK storescu; never raises on failure.

    With ``own_transfer_syntax`` each file is proposed in its own transfer syntax
    (see ``storescu_profile``); storescu's ``-x...`` options propose one fixed set
    and would make it decompress (or fail on) files in any other syntax.
    It runs with ``-v``: ``store_responses()`` reads each file's answer from the output.
    storescu stops at the first refused C-STORE with exit status 1; with ``-nh`` in
    ``extra_args`` it goes on and exits 0 even when stores were refused.
    """
    paths = _expand(files)
    if not paths:
        raise ValueError("no files to send")
    with tempfile.TemporaryDirectory(prefix="storescu-") as tmp:
        args = ["storescu", "--verbose", "--aetitle", calling_aet, "--call", called_aet,
                "--timeout", "15", "--acse-timeout", "30", "--dimse-timeout", "300"]
        if own_transfer_syntax:
            profile = Path(tmp) / "profile.cfg"
            profile.write_text(storescu_profile(paths))
            args += ["--config-file", str(profile), "Default"]
        args += [*extra_args, host, str(port), *map(str, paths)]
        return subprocess.run(args, env=peer_env(), capture_output=True, text=True,
                              timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)


def store_responses(cp: subprocess.CompletedProcess[str]) -> list[tuple[str, str]]:
    """(file, response) for each file storescu sent, e.g. ("a.dcm", "Success") or
    ("b.dcm", "Refused: SOPClassNotSupported"); a file without an answer is left out."""
    return storescu_responses((cp.stdout + "\n" + cp.stderr).splitlines())


def storescu_responses(lines: list[str]) -> list[tuple[str, str]]:
    """store_responses of storescu's --verbose output lines."""
    out: list[tuple[str, str]] = []
    current = None
    for line in lines:
        if line.startswith("I: Sending file: "):
            current = line.removeprefix("I: Sending file: ").strip()
        elif line.startswith("I: Received Store Response (") and current is not None:
            out.append((current, line.removeprefix("I: Received Store Response (").rstrip(")")))
            current = None
    return out


def dataset_sha256(path: Path) -> str:
    """SHA-256 of a Part 10 file's data set (after the file meta), read in pieces."""
    with open(path, "rb") as f:
        f.seek(140)
        f.seek(144 + int.from_bytes(f.read(4), "little"))
        digest = hashlib.sha256()
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_part(part10: bytes) -> bytes:
    """The encoded dataset of a Part 10 file: what follows the preamble and file meta."""
    if part10[128:132] != b"DICM" or part10[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a Part 10 file with a meta group length")
    return part10[144 + int.from_bytes(part10[140:144], "little"):]


class DcmQRSCP(_Peer):
    """DCMTK dcmqrscp as an image archive: one storage area for the AE title ``aet``,
    files written bit-preserving; it accepts the uncompressed transfer syntaxes only
    (DCMTK's default for an acceptor)."""

    def __init__(self, *, aet: str = "DCMQRSCP", port: int | None = None) -> None:
        self.aet = aet
        self.port = port or free_port()
        self.workdir: Path | None = None

    @property
    def storage(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "db"

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="dcmqrscp-"))
        self.storage.mkdir()
        _check_free(self.port)
        config = self.workdir / "dcmqrscp.cfg"
        config.write_text(
            f"NetworkTCPPort = {self.port}\nMaxPDUSize = 16384\nMaxAssociations = 4\n"
            "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
            f"AETable BEGIN\n{self.aet} {self.storage} RW (500, 1024mb) ANY\nAETable END\n")
        self.proc = _spawn(["dcmqrscp", "--config", str(config),
                            "--bit-preserving", "--disable-host-lookup", str(self.port)],
                           self.workdir / "dcmqrscp.log")
        try:
            wait_port(LOOPBACK, self.port, 10.0, proc=self.proc)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{e}\n{_tail(self.workdir / 'dcmqrscp.log')}") from e

    def files(self) -> list[Path]:
        """Stored instances (the index file left out)."""
        if self.workdir is None:
            return []
        return sorted(p for p in self.storage.iterdir() if p.is_file() and p.name != "index.dat")

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


# --------------------------------------------------------------------------- other SCUs


def gdcmscu(host: str, port: int, files: Sequence[Path], *, called_aet: str,
            calling_aet: str = "MODALITY",
            timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Send ``files`` with GDCM's gdcmscu (it proposes each file's own transfer syntax);
    never raises on failure."""
    args = ["gdcmscu", "--store", "--call", called_aet, "--aetitle", calling_aet,
            *[a for f in files for a in ("-i", str(f))], host, str(port)]
    return subprocess.run(args, env=peer_env(), capture_output=True, text=True,
                          timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)


def pynetdicom_store(host: str, port: int, files: Sequence[Path], *, called_aet: str,
                     calling_aet: str = "MODALITY") -> dict[Path, int | None]:
    """Send ``files`` with a pynetdicom SCU on one association, each in its own transfer
    syntax on a context of its own, streamed from the file (the C-STORE command then
    takes its UIDs from the file meta); the status of each, None where no answer came."""
    _config.STORE_SEND_CHUNKED_DATASET = True  # as the box sets it: the same in every order
    pairs: dict[tuple[str, str], None] = {}
    for f in files:
        meta = dcmread(f, stop_before_pixels=True).file_meta
        pairs[(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))] = None
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for sop_class, syntax in pairs:
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        return dict.fromkeys(files)
    statuses: dict[Path, int | None] = {}
    try:
        for f in files:
            try:
                answer = assoc.send_c_store(f)
            except (ValueError, RuntimeError, AttributeError):  # no context fits the file
                statuses[f] = None
                continue
            statuses[f] = int(answer.Status) if "Status" in answer else None
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def dciodvfy(path: Path) -> set[str]:
    """dicom3tools' dciodvfy errors about a Part 10 file (warnings left out)."""
    done = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL, errors="replace")
    lines = (done.stdout + done.stderr).splitlines()
    return {line.strip() for line in lines if line.startswith("Error")}


# --------------------------------------------------------------------------- pynetdicom SCP


@dataclass(frozen=True)
class Received:
    """One C-STORE request as the SCP saw it."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    sha256: str  # of the encoded dataset as received (no file meta)
    size: int
    status: int | None  # None: the association was aborted instead of answering
    calling_aet: str
    association: int  # 1, 2, ... in the order associations were accepted


def received_dataset(event: Any) -> bytes:
    """The encoded dataset of a C-STORE, in memory or chunked to a file by pynetdicom."""
    path = getattr(event.request, "_dataset_path", None)
    if path is None:
        return event.encoded_dataset(include_meta=False)
    if isinstance(path, tuple):  # (file, offset of the dataset)
        path, offset = path
    else:  # preamble, "DICM", then (0002,0000) UL, whose value is the rest of the meta
        with open(path, "rb") as f:
            f.seek(128 + 4 + 8)
            offset = 128 + 4 + 12 + int.from_bytes(f.read(4), "little")
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


class CountingSCP:
    """An in-process storage SCP (pynetdicom) that records every C-STORE in arrival order.

    Misbehaviour on request:
    - ``abort_after=N``: on an association, answer N C-STOREs, then send A-ABORT
      on receiving the next one (recorded with ``status=None``), for ``abort_times``
      associations in all;
    - ``refuse_sop_classes``: answer 0x0122 (SOP class not supported) for these;
    - ``refuse_all``: answer ``refuse_status`` (0xA700) to every C-STORE;
    - ``status_override(ds) -> int | None``: a status to answer instead of success;
    - ``reject_association``: A-ASSOCIATE-RJ to every association;
    - ``delay_s``: wait this long before each answer (a slow PACS);
    - ``abort_on``: SOP Instance UIDs on whose C-STORE the PACS's application sends
      A-ABORT, every time (a PACS that chokes on one particular instance);
    - ``drop_times``: on that many C-STOREs the connection is cut, with no A-ABORT (a link
      that breaks, a PACS process that dies);
    - ``cut_after_pdus=N``: on an association, after N P-DATA-TF PDUs (mid-instance, while
      the data set still arrives) the connection is cut, after an A-ABORT from the
      service user with ``cut_abort``, for ``cut_times`` associations in all (counted in
      ``cuts``).
    """

    def __init__(self, *, ae_title: str = "PACS", port: int = 0, host: str = LOOPBACK,
                 abort_after: int | None = None, abort_times: int = 1,
                 refuse_sop_classes: Iterable[str] = (), refuse_all: bool = False,
                 refuse_status: int = 0xA700,
                 status_override: Callable[[Any], int | None] | None = None,
                 reject_association: bool = False, delay_s: float = 0.0,
                 keep_data: bool = False, max_pdu: int = 131072,
                 abort_on: Iterable[str] = (), drop_times: int = 0,
                 cut_after_pdus: int | None = None, cut_abort: bool = False,
                 cut_times: int = 1) -> None:
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.abort_after = abort_after
        self.abort_times = abort_times
        self.refuse_sop_classes = set(refuse_sop_classes)
        self.refuse_all = refuse_all
        self.refuse_status = refuse_status
        self.status_override = status_override
        self.reject_association = reject_association
        self.delay_s = delay_s
        self.keep_data = keep_data
        self.max_pdu = max_pdu
        self.abort_on = set(abort_on)
        self.drop_times = drop_times
        self.cut_after_pdus = cut_after_pdus
        self.cut_abort = cut_abort
        self.cut_times = cut_times
        self.cuts = 0
        self._pdus: dict[int, int] = {}  # id(assoc) -> P-DATA-TF PDUs received
        self.associations = 0
        self.aborts = 0
        self.data: dict[str, bytes] = {}  # latest encoded dataset per UID, with keep_data
        self._records: list[Received] = []
        self._counts: collections.Counter[str] = collections.Counter()
        self._per_assoc: dict[int, tuple[int, int]] = {}  # id(assoc) -> (serial, stores)
        self._cond = threading.Condition()
        self._server: Any = None

    # lifecycle ------------------------------------------------------------

    def start(self) -> None:
        ae = AE(ae_title=self.ae_title)
        for cx in [*AllStoragePresentationContexts, *VerificationPresentationContexts]:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.maximum_pdu_size = self.max_pdu
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.maximum_associations = 20
        if self.reject_association:
            ae.require_calling_aet = ["NO-SUCH-AE-TITLE"]
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_CONN_CLOSE, self._on_close),
            (evt.EVT_PDU_RECV, self._on_pdu),
        ]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> CountingSCP:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    # what was received ------------------------------------------------------

    @property
    def records(self) -> list[Received]:
        with self._cond:
            return list(self._records)

    @property
    def counts(self) -> dict[str, int]:
        """Receptions per SOP Instance UID, aborted ones included."""
        with self._cond:
            return dict(self._counts)

    def uids(self, *, acknowledged_only: bool = True) -> set[str]:
        """UIDs answered with success or warning (or every UID received)."""
        return {r.sop_instance_uid for r in self.records
                if not acknowledged_only or (r.status is not None and _is_ok(r.status))}

    def resent(self) -> dict[str, int]:
        """UIDs received more than once, with their counts."""
        return {uid: n for uid, n in self.counts.items() if n > 1}

    def wait_for(self, count: int, timeout_s: float = 30.0) -> bool:
        """Wait until ``count`` distinct UIDs were acknowledged; False on time-out."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._acked()) >= count, timeout_s)

    def _acked(self) -> set[str]:
        return {r.sop_instance_uid for r in self._records
                if r.status is not None and _is_ok(r.status)}

    # handlers ---------------------------------------------------------------

    def _on_open(self, event: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):
            event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_accepted(self, event: Any) -> None:
        with self._cond:
            self.associations += 1
            self._per_assoc[id(event.assoc)] = (self.associations, 0)

    def _on_close(self, event: Any) -> None:
        with self._cond:
            self._per_assoc.pop(id(event.assoc), None)
            self._pdus.pop(id(event.assoc), None)

    def _on_pdu(self, event: Any) -> None:
        if self.cut_after_pdus is None or type(event.pdu).__name__ != "P_DATA_TF":
            return
        with self._cond:
            count = self._pdus.get(id(event.assoc), 0) + 1
            self._pdus[id(event.assoc)] = count
            cut = count == self.cut_after_pdus and self.cuts < self.cut_times
            self.cuts += cut
        if not cut:
            return
        sock = event.assoc.dul.socket.socket
        with contextlib.suppress(OSError):
            if self.cut_abort:  # A-ABORT, source 0: the PACS's application (PS3.8 9.3.8)
                sock.sendall(bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
            sock.shutdown(socket.SHUT_RDWR)

    def _on_store(self, event: Any) -> int:
        req = event.request
        raw = received_dataset(event)
        with self._cond:
            serial, stores = self._per_assoc.get(id(event.assoc), (0, 0))
            self._per_assoc[id(event.assoc)] = (serial, stores + 1)
            abort = (self.abort_after is not None and stores >= self.abort_after
                     and self.aborts < self.abort_times) or (
                str(req.AffectedSOPInstanceUID) in self.abort_on)
            if abort:
                self.aborts += 1
            drop = not abort and self.drop_times > 0
            self.drop_times -= drop
        if drop:
            with contextlib.suppress(OSError):
                event.assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)
            return 0xA700  # never reaches the box
        status = None if abort else self._status(event, str(req.AffectedSOPClassUID))
        self._record(event, raw, status, serial)
        if abort:
            event.assoc.abort()
            return 0xA700
        if self.delay_s:
            time.sleep(self.delay_s)
        assert status is not None
        return status

    def _status(self, event: Any, sop_class: str) -> int:
        if self.refuse_all:
            return self.refuse_status
        if sop_class in self.refuse_sop_classes:
            return 0x0122
        if self.status_override is not None:
            override = self.status_override(event.dataset)
            if override is not None:
                return override
        return 0x0000

    def _record(self, event: Any, raw: bytes, status: int | None, serial: int) -> None:
        req = event.request
        uid = str(req.AffectedSOPInstanceUID)
        rec = Received(
            sop_instance_uid=uid,
            sop_class_uid=str(req.AffectedSOPClassUID),
            transfer_syntax=str(event.context.transfer_syntax),
            sha256=hashlib.sha256(raw).hexdigest(),
            size=len(raw),
            status=status,
            calling_aet=str(event.assoc.requestor.ae_title),
            association=serial,
        )
        with self._cond:
            self._records.append(rec)
            self._counts[uid] += 1
            if self.keep_data:
                self.data[uid] = raw
            self._cond.notify_all()


def _is_ok(status: int) -> bool:
    """Success (0x0000) or a warning (0x0001, 0xBxxx)."""
    return status == 0 or status == 0x0001 or (status & 0xF000) == 0xB000
