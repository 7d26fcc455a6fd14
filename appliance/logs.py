"""Logging: fixed event phrases with keyed fields, never patient values.

Callers pass hashed keys (a study's store key, shortened) and counts, never
names, IDs or UIDs in clear.
"""

from __future__ import annotations

import logging
import sys


def event(logger: logging.Logger, phrase: str, level: int = logging.INFO, **fields: object) -> None:
    """Log `phrase key=value ...`; values are formatted with repr only when they contain spaces."""
    parts = [phrase]
    for key, value in fields.items():
        text = str(value)
        parts.append(f"{key}={text!r}" if " " in text else f"{key}={text}")
    logger.log(level, " ".join(parts))


def configure(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom logs every refused connection as an error (node probes make many) and
    # identifiers at debug level; the box logs its own events instead.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
