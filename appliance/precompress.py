"""Compression ahead of time: while the link is busy or absent, queued uncompressed
instances are compressed for destinations that asked for it (`transfer_syntaxes`), so the
link carries fewer bytes and no time is spent compressing while it is up.

Within a CPU budget that never slows receiving: the thread runs at the lowest scheduling
priority, and does nothing while any modality association is open.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections.abc import Callable
from typing import BinaryIO

from appliance import encoding
from appliance.config import Config
from appliance.logs import event
from appliance.routing import destination_id
from appliance.store import InstanceRecord, Store

log = logging.getLogger("fluxbox.precompress")

LOOKAHEAD = 50  # queued instances looked at per destination and step
IDLE_S = 5.0


class Precompressor:
    """`compress_once` makes at most one variant; `run` loops it gently."""

    def __init__(self, store: Store, config: Config, receiving_busy: Callable[[], bool]) -> None:
        self.store = store
        self.receiving_busy = receiving_busy
        self.targets = self._targets(config)
        self._cannot: set[tuple[str, str]] = set()

    @staticmethod
    def _targets(config: Config) -> list[tuple[str, str]]:
        """(destination id, its first compressed syntax) for destinations that want one."""
        targets = []
        for site in config.sites:
            for dest in site.destinations:
                wanted = [ts for ts in encoding.configured(dest.transfer_syntaxes)
                          if ts not in encoding.UNCOMPRESSED]
                if wanted:
                    targets.append((destination_id(site, dest), wanted[0]))
        return targets

    def compress_once(self) -> int:
        if self.receiving_busy():
            return 0
        for dest_id, syntax in self.targets:
            batch = self.store.next_batch(dest_id, max_count=LOOKAHEAD, max_bytes=1 << 62,
                                          whole_study=False, allowed=lambda study: True)
            for item in batch:
                if self._wanted(item.instance, syntax):
                    return self._make(item.instance, syntax)
        return 0

    def _wanted(self, record: InstanceRecord, syntax: str) -> bool:
        return (record.transfer_syntax in encoding.UNCOMPRESSED
                and record.size_bytes <= encoding.COMPRESS_MAX_BYTES
                and (record.key, syntax) not in self._cannot
                and self.store.variant(record, syntax) is None)

    def _make(self, record: InstanceRecord, syntax: str) -> int:
        try:
            with encoding.loaded():
                converted = encoding.convert_in_memory(lambda: self._read(record), syntax)
                self.store.put_variant(record, syntax, io.BytesIO(converted))
            return 1
        except encoding.CannotEncode as exc:
            self._cannot.add((record.key, syntax))
            event(log, "not compressed ahead", reason=str(exc))
            return 0

    def _read(self, record: InstanceRecord) -> BinaryIO:
        """The instance decrypted into memory (at most COMPRESS_MAX_BYTES: `_wanted`);
        nothing of it in clear on disk."""
        with self.store.open_plaintext(record) as stream:
            return io.BytesIO(b"".join(stream))

    def run(self, stop: threading.Event) -> None:
        if not self.targets:
            return
        with contextlib.suppress(OSError):  # lowest priority for this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while not stop.is_set():
            try:
                made = self.compress_once()
            except Exception as exc:
                event(log, "precompress error", logging.WARNING, error=type(exc).__name__)
                made = 0
            stop.wait(0.05 if made else IDLE_S)
