"""Where the data key lives.

The key is kept apart from the data it protects: a 0600 file in its own 0700
directory (on the image, beside the data partition's store, not inside it).
`Keystore` is the interface so a TPM-sealed key can replace the file later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

KEY_BYTES = 32
KEY_FILE = "data.key"


class KeystoreError(Exception):
    """The key exists but cannot be read or is malformed; never silently replaced."""


class Keystore(Protocol):
    def load_or_create(self) -> bytes:
        """Return the 32-byte data key, creating it on first use."""
        ...


class FileKeystore:
    """A random key in `<key_dir>/data.key`, created atomically with mode 0600."""

    def __init__(self, key_dir: Path) -> None:
        self.key_dir = Path(key_dir)
        self.path = self.key_dir / KEY_FILE

    def load_or_create(self) -> bytes:
        if self.path.exists():
            return self._load()
        self.key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.key_dir, 0o700)
        key = os.urandom(KEY_BYTES)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.key_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return key

    def _load(self) -> bytes:
        try:
            key = self.path.read_bytes()
        except OSError as exc:
            raise KeystoreError(f"cannot read data key {self.path}: {exc.strerror}") from exc
        if len(key) != KEY_BYTES:
            raise KeystoreError(f"data key {self.path} is {len(key)} bytes, expected {KEY_BYTES}")
        return key
