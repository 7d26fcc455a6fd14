"""A received data set, encrypted into its blob as it arrives: no plaintext on disk.

pynetdicom writes a C-STORE data set to a file object as its P-DATA fragments come: the
preamble, "DICM", the file meta (one write, group length first), then each fragment.
An `Intake` is that file object for the box's own associations (`dimse.receive_into`).
It writes the blob as ``<name>.part`` in its ``blobs/`` folder, computes the instance's digest
(transfer syntax and data set bytes, as `Blobs.encrypt_to_temp` does) and counts the
plaintext bytes. `seal` ends the stream, renames the file to its final name and syncs it
(the file's sync commits the rename with it on a journalling file system; the folder's
sync after it makes that so everywhere); `discard` removes it. Start-up removes every
``.part`` file: a data set cut off mid-way never lingers.

Invariants kept: *durable before success* (`Store.put_intake` answers only after `seal`
and the index commit) and *encrypted at rest* (no byte of the data set is written in
clear), proved by `test_write_path.py`: `test_no_plaintext_of_a_received_instance_on_disk`.
A blob left by a crash (never sealed, or sealed but not indexed) is removed at start-up
by `Blobs.repair`, as no record names it; its modality had no success for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from appliance.crypto import DecryptedReader, StreamEncryptor
from appliance.validation.elements import read_meta

_PREAMBLE_AND_GROUP_LENGTH = 128 + 4 + 12  # "DICM", then (0002,0000) UL with its value
_GROUP_LENGTH = struct.Struct("<I")
_NO_FILE = "/nonexistent/fluxbox-intake"  # what pynetdicom unlinks once the box is done
_HEAD_MAX = 65_536  # preamble and file meta: pynetdicom writes a few hundred bytes
PART_SUFFIX = ".part"


class Intake:
    """The file object pynetdicom writes one C-STORE data set to (see module doc)."""

    def __init__(self, blob: str, path: Path, key: bytes,
                 fsync_dir: Callable[[Path], None]) -> None:
        self.blob = blob
        self.path = path
        self._key = key
        self._fsync_dir = fsync_dir
        self._part = path.with_suffix(PART_SUFFIX)
        self._file: BinaryIO = open(self._part, "xb")  # noqa: SIM115 (closed by seal or discard)
        self._encryptor = StreamEncryptor(key, self._file)
        self._head = bytearray()  # preamble and file meta, until the digest can start
        self._digest: hashlib.blake2b | None = None
        self.size = 0
        self.transfer_syntax = ""
        self.sealed = False
        self._kept = False
        # pynetdicom unlinks `name` after the handler: a name no file has, once the box kept
        # the blob or removed it itself.
        self.name = str(self._part)
        self.file = self  # pynetdicom calls .file.flush()

    # -- the file object pynetdicom writes to ---------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._encryptor.write(data)
        self.size += len(data)
        if self._digest is not None:
            self._digest.update(data)
        else:
            self._head += data
            self._start_digest()
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        """pynetdicom's close after the handler, or of an abandoned message: a blob never
        sealed is removed."""
        if not self.sealed:
            self.discard()

    # -- the box's side ---------------------------------------------------------------

    def _start_digest(self) -> None:
        if len(self._head) < _PREAMBLE_AND_GROUP_LENGTH:
            return
        (group_length,) = _GROUP_LENGTH.unpack_from(self._head, _PREAMBLE_AND_GROUP_LENGTH - 4)
        if (len(self._head) < _PREAMBLE_AND_GROUP_LENGTH + group_length
                and len(self._head) < _HEAD_MAX):
            return
        head = bytes(self._head)
        self._head = bytearray()
        try:
            syntax, offset = read_meta(io.BytesIO(head), len(head))
        except Exception:  # noqa: BLE001 (validation says why, from the sealed blob)
            syntax, offset = "", len(head)
        self.transfer_syntax = syntax
        self._digest = hashlib.blake2b(syntax.encode() + b"\0", digest_size=32)
        self._digest.update(head[offset:])

    @property
    def digest(self) -> str:
        return self._digest.hexdigest() if self._digest is not None else ""

    def end(self) -> None:
        """The data set is complete: push the final chunk (readable by `reader` now)."""
        if not self._encryptor.closed:
            self._encryptor.close()
            self._file.flush()

    def seal(self) -> None:
        """Make the blob durable: one sync of the file, and of its folder for the new name
        (a no-op where the file's sync committed the name too, as on ext4). Raises OSError
        (ENOSPC: a full disk)."""
        if self.sealed:
            return
        self.end()
        os.replace(self._part, self.path)
        self.name = str(self.path)
        os.fsync(self._file.fileno())
        self._file.close()
        self._fsync_dir(self.path.parent)
        self.sealed = True

    def kept(self) -> None:
        """The index names the blob now: nothing may remove it (pynetdicom, `discard`)."""
        self._kept = True
        self.name = _NO_FILE

    def discard(self) -> None:
        """Remove the blob, unless the index names it."""
        if self._kept:
            return
        with contextlib.suppress(OSError):
            self._file.close()
        self._part.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        self.name = _NO_FILE
        self.sealed = True  # nothing more to do on close

    def reader(self) -> DecryptedReader:
        """The blob's plaintext once `end`ed, decrypted as it is read (for validation)."""
        return DecryptedReader(self._key, open(self._part, "rb"))  # noqa: SIM115


def new_blob_name() -> str:
    """A received blob's name: random, so it says nothing of the instance."""
    return uuid.uuid4().hex
