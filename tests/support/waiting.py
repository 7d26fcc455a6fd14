"""Polling with a deadline: a test waits for what it checks, never a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str,
             poll_s: float = 0.05, detail: Callable[[], str] | None = None) -> T:
    """The first truthy value of ``predicate()``, asked every ``poll_s`` until
    ``timeout_s``; AssertionError naming ``what`` (and ``detail()``) after that."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{extra}")
        time.sleep(poll_s)
