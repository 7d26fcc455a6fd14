"""The LMDB index: the environment, its databases, sealed values and keyed-hash keys.

The only module that opens LMDB; the parts share its environment and, inside one store
call, one write transaction (their helpers take it as `txn`), so a call is one commit.

Invariant kept: *encrypted at rest*. Every value that may hold patient data is sealed
with SecretBox (`seal_record`, `open`), and every UID used as a key or file name is a
keyed BLAKE2b hash (`hash`, `uid_key`, `ack_mark`). Proved by `test_store.py`:
`test_nothing_in_clear_at_rest`, `test_acknowledgments_keep_no_plain_content_digest`.

Databases (names and key layouts are the on-disk format; each part says which it owns):

- ``instances``  inst_key -> sealed InstanceRecord (`studies`, `messages`)
- ``studies``    study_key -> sealed StudyRecord (`studies`, `messages`)
- ``members``    study_key + inst_seq -> inst_key (a study's instances in arrival order)
- ``pending`` / ``acked`` / ``failed``  dest + NUL + study_seq + inst_seq -> the delivery
  position of one instance at one destination (`queue`)
- ``commitments``, ``transactions``  Storage Commitment toward a PACS (`queue`)
- ``commit_requests``  a modality's Storage Commitment requests (`commit_requests`)
- ``variants``   inst_key + transfer syntax -> sealed variant blob (`blobs`)
- ``worklist``   site + NUL + index -> sealed worklist entry (`worklist_cache`)
- ``events``     time_ns + counter -> sealed audit event (`journal`)
- ``meta``       ``seq`` (here), ``setting:``, ``traffic:`` (`journal`), ``worklist:``
  (`worklist_cache`)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import lmdb

from appliance.crypto import BlobCorrupt, Keys
from appliance.store.records import SEQ, InstanceRecord, record_from_json

MAP_SIZE_BYTES = 8 << 30
DATABASES = ("instances", "studies", "members", "pending", "acked", "failed", "events", "meta",
             "commitments", "transactions", "worklist", "variants", "commit_requests")
# What a record that fails authentication or does not parse raises.
DAMAGED = (BlobCorrupt, ValueError, TypeError, KeyError)

R = TypeVar("R")


class Cursor(Protocol):
    """An LMDB cursor as the store uses it: keys and values are bytes (never buffers)."""

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]: ...
    def set_range(self, key: bytes) -> bool: ...
    def first(self) -> bool: ...
    def last(self) -> bool: ...
    def delete(self) -> bool: ...
    def iterprev(self) -> Iterator[tuple[bytes, bytes]]: ...


class Txn(Protocol):
    """An LMDB transaction as the store uses it (opened without `buffers`: values are
    bytes), usable in `with`."""

    def get(self, key: bytes, default: bytes | None = None, db: Any = None) -> bytes | None: ...
    def put(self, key: bytes, value: bytes, dupdata: bool = True, overwrite: bool = True,
            append: bool = False, db: Any = None) -> bool: ...
    def delete(self, key: bytes, value: bytes = b"", db: Any = None) -> bool: ...
    def pop(self, key: bytes, db: Any = None) -> bytes | None: ...
    def cursor(self, db: Any = None) -> Cursor: ...
    def stat(self, db: Any) -> dict[str, int]: ...
    def __enter__(self) -> Txn: ...
    def __exit__(self, *exc: object) -> None: ...


class Index:
    """The environment and its named databases. Thread-safe: LMDB serialises writers."""

    def __init__(self, path: Path, keys: Keys) -> None:
        self.keys = keys
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)  # for the box's user alone, like the rest of the data directory
        self.env = lmdb.open(  # mode: the files get 0600
            str(path), map_size=MAP_SIZE_BYTES, max_dbs=16, max_readers=256, subdir=True,
            mode=0o700,
        )
        self.db = {name: self.env.open_db(name.encode()) for name in DATABASES}

    def close(self) -> None:
        self.env.close()

    def read(self) -> Txn:
        return cast(Txn, self.env.begin())

    def write(self) -> Txn:
        """A write transaction: committed when its `with` block ends without an exception."""
        return cast(Txn, self.env.begin(write=True))

    # -- keyed hashes --------------------------------------------------------------

    def hash(self, text: str) -> bytes:
        """The keyed hash that stands for `text` (a UID) in keys and file names."""
        return self.keys.uid_hash(text)

    def uid_key(self, uid: str) -> str:
        return self.hash(uid).hex()

    def ack_mark(self, record: InstanceRecord) -> bytes:
        """What an acknowledgment keeps of the version it acknowledged: a keyed hash of its
        digest (a plain content digest would tell whether a known file is on the box)."""
        return self.hash("ack\0" + record.digest)

    def ack_marks(self, record: InstanceRecord) -> tuple[bytes, bytes]:
        """The marks that acknowledge `record`: the keyed one, and the plain digest that
        stores written before it hold."""
        return self.ack_mark(record), record.digest.encode()

    # -- sealed values -------------------------------------------------------------

    def seal(self, plain: bytes) -> bytes:
        return self.keys.seal(plain)

    def open(self, sealed: bytes) -> bytes:
        """The plain value; raises BlobCorrupt when it fails authentication."""
        return self.keys.open(sealed)

    def seal_json(self, body: dict[str, Any]) -> bytes:
        return self.seal(json.dumps(body).encode())

    def open_json(self, sealed: bytes) -> dict[str, Any]:
        opened: dict[str, Any] = json.loads(self.open(sealed))
        return opened

    def seal_record(self, record: Any) -> bytes:
        return self.seal(json.dumps(asdict(record), separators=(",", ":")).encode())

    def open_record(self, sealed: bytes, cls: type[R]) -> R:
        """A record from its sealed value; raises one of DAMAGED if it does not read."""
        return record_from_json(cls, self.open(sealed))

    def get(self, txn: Txn, db: str, key: bytes, cls: type[R]) -> R | None:
        raw = txn.get(key, db=self.db[db])
        return None if raw is None else self.open_record(raw, cls)

    def put(self, txn: Txn, db: str, key: bytes, record: Any) -> None:
        txn.put(key, self.seal_record(record), db=self.db[db])

    def records(self, txn: Txn, db: str, cls: type[R]) -> Iterator[R]:
        """Every record of `db` that reads; a damaged one is skipped (repair counts it)."""
        for _, value in txn.cursor(db=self.db[db]):
            try:
                yield self.open_record(value, cls)
            except DAMAGED:
                continue

    # -- keys and scans ------------------------------------------------------------

    def next_seq(self, txn: Txn) -> int:
        """The next number of the one sequence studies and instances share."""
        raw = txn.get(b"seq", db=self.db["meta"])
        seq = (SEQ.unpack(raw)[0] if raw else 0) + 1
        txn.put(b"seq", SEQ.pack(seq), db=self.db["meta"])
        return seq

    def prefixed(self, txn: Txn, db: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The entries of `db` whose key starts with `prefix`, in key order."""
        cursor = txn.cursor(db=self.db[db])
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value

    def has_prefix(self, txn: Txn, db: str, prefix: bytes) -> bool:
        return next(self.prefixed(txn, db, prefix), None) is not None
