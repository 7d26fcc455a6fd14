"""Encrypted blobs on disk: how a payload gets there durably, how it is read back, and
what start-up cleans.

Owns the ``blobs/`` (256 fan-out folders of ``<name>.blob``), ``tmp/`` and ``spool/``
directories and the ``variants`` database. A received data set is written encrypted as it
arrives, as ``<name>.part`` in its folder (`open_intake`, `intake.py`), renamed and fsynced
when kept; a file the box already has is encrypted into ``tmp/``, fsynced, renamed into
``blobs/`` and the folder fsynced (`encrypt_to_temp`, `place`). Only then may an index entry
name a blob.

Invariants kept: *durable before success* (a blob is on disk before any record names it;
`repair` scrubs temporary and ``.part`` files, removes blobs no record names and counts
records whose blob is missing), proved by `test_robustness.py`:
`test_kill_9_during_ingest_loses_no_acknowledged_instance`, and `test_store.py`:
`test_repair_scrubs_leftovers_and_reports_missing_blobs`; *encrypted at rest* (secretstream;
delivery and the compressor ahead of time read a blob's plaintext as a stream in memory,
`open_plaintext`; `plaintext` writes a copy to ``spool/`` for tests and tools only),
proved by `test_store.py`: `test_nothing_in_clear_at_rest`, and
`test_delivery_streams.py`: `test_delivery_writes_no_plaintext_anywhere`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from appliance.crypto import BlobCorrupt, decrypt_stream, encrypt_stream
from appliance.logs import event
from appliance.store.index import DAMAGED, Index, Txn
from appliance.store.intake import PART_SUFFIX, Intake, new_blob_name
from appliance.store.records import InstanceRecord, RepairReport, StoreFault, StoreFull
from appliance.validation import InstanceHeader

log = logging.getLogger("fluxbox.store")


class Blobs:
    def __init__(self, data_dir: Path, index: Index, *, reserve_bytes: int = 0) -> None:
        self.data_dir = data_dir
        self.index = index
        self.reserve_bytes = reserve_bytes
        self.blob_dir = data_dir / "blobs"
        self.temp_dir = data_dir / "tmp"
        self.spool_dir = data_dir / "spool"
        for path in (self.data_dir, self.blob_dir, self.temp_dir, self.spool_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._make_blob_dirs()

    def _make_blob_dirs(self) -> None:
        """All 256 fan-out directories up front: no mkdir and parent fsync while ingesting."""
        made = False
        for n in range(256):
            folder = self.blob_dir / f"{n:02x}"
            if not folder.exists():
                folder.mkdir(mode=0o700)
                made = True
        if made:
            fsync_dir(self.blob_dir)

    def path(self, name: str) -> Path:
        return self.blob_dir / name[:2] / f"{name}.blob"

    def instance_blob(self, sop_instance_uid: str, digest: str) -> str:
        """The blob name of one version of an instance (a keyed hash: no UID in file names)."""
        return self.index.uid_key(f"{sop_instance_uid}\0{digest}")

    def unlink(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    # -- space -------------------------------------------------------------------

    def free_bytes(self) -> int:
        stats = os.statvfs(self.data_dir)
        return stats.f_bavail * stats.f_frsize

    def check_space(self) -> None:
        """Raises StoreFull when free space is below the reserve."""
        if self.free_bytes() < self.reserve_bytes:
            raise StoreFull("free space below reserve")

    # -- writing -------------------------------------------------------------------

    def open_intake(self) -> Intake:
        """A new blob for a data set about to arrive, written encrypted as it comes."""
        name = new_blob_name()
        return Intake(name, self.path(name), self.index.keys.blob_key, fsync_dir)

    def unlink_replaced(self, name: str) -> None:
        """Remove the blob of a version the index no longer names; a failure is logged and
        left to start-up's repair (the new version is safe either way)."""
        try:
            self.unlink(name)
        except OSError as exc:
            event(log, "replaced blob not removed", logging.WARNING, error=exc.strerror)

    def encrypt_to_temp(self, path: Path, header: InstanceHeader) -> tuple[Path, str, int]:
        """Encrypt the received file into tmp/, fsynced; digest covers syntax + dataset bytes.

        Raises StoreFull (ENOSPC) or StoreFault, leaving no temporary file."""
        digest = hashlib.blake2b(header.transfer_syntax.encode() + b"\0", digest_size=32)
        skip = [header.dataset_offset]

        def feed(chunk: bytes) -> None:
            if skip[0] >= len(chunk):
                skip[0] -= len(chunk)
                return
            digest.update(memoryview(chunk)[skip[0]:])
            skip[0] = 0

        temp = self._temp_path()
        try:
            size = self._encrypt_into(path, temp, feed)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise (StoreFull if exc.errno == errno.ENOSPC else StoreFault)(str(exc)) from exc
        return temp, digest.hexdigest(), size

    def _temp_path(self) -> Path:
        return self.temp_dir / f"{uuid.uuid4().hex}.part"

    def _encrypt_into(self, path: Path | BinaryIO, temp: Path,
                      feed: Callable[[bytes], None] | None = None) -> int:
        """Encrypt `path` (a file, or bytes being read) into `temp` and fsync it; returns the
        plaintext size."""
        with contextlib.ExitStack() as files:
            source = files.enter_context(open(path, "rb")) if isinstance(path, Path) else path
            sink = files.enter_context(open(temp, "wb"))
            size = encrypt_stream(self.index.keys.blob_key, source, sink, feed=feed)
            sink.flush()
            os.fsync(sink.fileno())
        return size

    def place(self, temp: Path, final: Path) -> None:
        """Rename a fsynced temporary file into place and fsync its folder."""
        os.replace(temp, final)
        fsync_dir(final.parent)

    # -- compressed variants ---------------------------------------------------------

    def put_variant(self, record: InstanceRecord, transfer_syntax: str,
                    path: Path | BinaryIO) -> None:
        """Keep `path` (the instance compressed to `transfer_syntax`, made ahead of sending;
        a file, or bytes in memory being read) as an encrypted variant; durable on return.
        A variant of an older version is never used (it is tied to the record's digest)."""
        temp = self._temp_path()
        size = self._encrypt_into(path, temp)
        blob = self.index.uid_key(
            f"{record.sop_instance_uid}:{record.digest}:{transfer_syntax}")
        self.place(temp, self.path(blob))
        body = {"blob": blob, "digest": record.digest, "size_bytes": size}
        with self.index.write() as txn:
            txn.put(bytes.fromhex(record.key) + transfer_syntax.encode(),
                    self.index.seal_json(body), db=self.index.db["variants"])

    def variant(self, record: InstanceRecord, transfer_syntax: str) -> InstanceRecord | None:
        """The instance as kept in `transfer_syntax`, if a current variant exists."""
        with self.index.read() as txn:
            raw = txn.get(bytes.fromhex(record.key) + transfer_syntax.encode(),
                          db=self.index.db["variants"])
        if raw is None:
            return None
        body = self.index.open_json(raw)
        if body["digest"] != record.digest:
            return None
        return replace(record, blob=body["blob"], size_bytes=body["size_bytes"],
                       transfer_syntax=transfer_syntax)

    def drop_variants(self, txn: Txn, inst_key: bytes) -> list[str]:
        """Forget an instance's variants in `txn`; returns their blobs, to unlink after commit."""
        found = [(key, self.index.open_json(value)["blob"])
                 for key, value in self.index.prefixed(txn, "variants", inst_key)]
        for key, _ in found:
            txn.delete(key, db=self.index.db["variants"])
        return [blob for _, blob in found]

    # -- reading -------------------------------------------------------------------

    def write_plaintext(self, record: InstanceRecord, target: Path) -> None:
        """Decrypt an instance's blob into `target` (a Part 10 file), chunk by chunk.

        A blob that is missing, unreadable or damaged raises BlobCorrupt (that instance
        cannot be sent, ever); an error writing `target` (a full disk) stays an OSError."""
        try:
            source = open(self.path(record.blob), "rb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise BlobCorrupt(f"blob missing or unreadable ({exc.strerror})") from exc
        with source, open(target, "wb") as sink:
            chunks = decrypt_stream(self.index.keys.blob_key, source)
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                except OSError as exc:
                    raise BlobCorrupt(f"blob unreadable ({exc.strerror})") from exc
                sink.write(chunk)

    def open_plaintext(self, record: InstanceRecord) -> PlainStream:
        """The instance's Part 10 bytes, decrypted as they are read (nothing on disk).
        A blob that is missing or unreadable raises BlobCorrupt; close the stream after."""
        try:
            source = open(self.path(record.blob), "rb")  # noqa: SIM115 (the stream closes it)
        except OSError as exc:
            raise BlobCorrupt(f"blob missing or unreadable ({exc.strerror})") from exc
        return PlainStream(source, self.index.keys.blob_key)

    @contextlib.contextmanager
    def plaintext(self, record: InstanceRecord) -> Iterator[Path]:
        """A short-lived decrypted copy in the spool directory, removed on exit: for tests
        and tools that read an instance back as a file (the box itself never does)."""
        target = self.spool_dir / f"{uuid.uuid4().hex}.dcm"
        try:
            self.write_plaintext(record, target)
            yield target
        finally:
            target.unlink(missing_ok=True)

    def verify_blob(self, record: InstanceRecord) -> bool:
        """Whether the blob is there, authenticates, and has the recorded size."""
        try:
            with open(self.path(record.blob), "rb") as source:
                return sum(len(c) for c in decrypt_stream(self.index.keys.blob_key, source)) == (
                    record.size_bytes)
        except (OSError, BlobCorrupt):
            return False

    # -- start-up ------------------------------------------------------------------

    def repair(self) -> RepairReport:
        """At start-up: scrub temp and spool files, drop blobs no index entry names,
        and count index entries whose blob is missing (reported, never hidden).

        A damaged index value is counted, never fatal (the box must start); while any is
        damaged no blob counts as an orphan, since it may be the damaged record's."""
        report = RepairReport()
        for folder in (self.temp_dir, self.spool_dir):
            for leftover in folder.iterdir():
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
                report.temp_files_removed += 1
        for partial in self.blob_dir.glob(f"*/*{PART_SUFFIX}"):  # data sets cut off mid-way
            partial.unlink(missing_ok=True)
            report.temp_files_removed += 1
        known = self._named_blobs(report)
        if report.damaged_records:
            return report
        for blob_file in self.blob_dir.glob("*/*.blob"):
            if blob_file.stem not in known:
                blob_file.unlink(missing_ok=True)
                report.orphan_blobs_removed += 1
        return report

    def _named_blobs(self, report: RepairReport) -> set[str]:
        """Every blob an instance or variant names; counts missing blobs and damaged values."""
        known = set()
        with self.index.read() as txn:
            for _, value in txn.cursor(db=self.index.db["instances"]):
                try:
                    record = self.index.open_record(value, InstanceRecord)
                except DAMAGED:
                    report.damaged_records += 1
                    continue
                known.add(record.blob)
                if record.blob and not self.path(record.blob).exists():
                    report.missing_blobs += 1
            for _, value in txn.cursor(db=self.index.db["variants"]):
                try:
                    known.add(self.index.open_json(value)["blob"])
                except DAMAGED:
                    report.damaged_records += 1
        return known


class PlainStream:
    """Plaintext chunks of one blob (at most 256 KiB each), decrypted as they are taken;
    `read_ahead` decrypts the first ones early (while the previous instance's answer is
    awaited) and keeps them until taken. Raises BlobCorrupt on any defect."""

    def __init__(self, source: BinaryIO, key: bytes) -> None:
        self._source = source
        self._chunks = decrypt_stream(key, source)
        self._ahead: deque[bytes] = deque()
        self._ahead_bytes = 0
        self.closed = False

    def read_ahead(self, max_bytes: int) -> None:
        """Decrypt chunks now until `max_bytes` are held (or the blob ends)."""
        while self._ahead_bytes < max_bytes:
            chunk = self._pull()
            if chunk is None:
                return
            self._ahead.append(chunk)
            self._ahead_bytes += len(chunk)

    def _pull(self) -> bytes | None:
        try:
            return next(self._chunks)
        except StopIteration:
            return None
        except OSError as exc:
            raise BlobCorrupt(f"blob unreadable ({exc.strerror})") from exc

    def __iter__(self) -> PlainStream:
        return self

    def __next__(self) -> bytes:
        if self._ahead:
            chunk = self._ahead.popleft()
            self._ahead_bytes -= len(chunk)
            return chunk
        pulled = self._pull()
        if pulled is None:
            raise StopIteration
        return pulled

    def close(self) -> None:
        self._ahead.clear()
        self._source.close()
        self.closed = True

    def __enter__(self) -> PlainStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
