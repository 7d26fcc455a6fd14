"""Child processes that cannot outlive the test that started them."""

from __future__ import annotations

import contextlib
import ctypes
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved now, not in the forked child
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when the test's
    process dies (SIGTERM for a child that must clean up its own children)."""

    def setup() -> None:  # pragma: no cover - runs in the child
        if _prctl is not None:
            with contextlib.suppress(OSError):
                _prctl(_PR_SET_PDEATHSIG, sig)

    return setup
