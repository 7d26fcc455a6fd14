"""The console's terminal: raw key input with a time-out, full-screen redraws.

Works on tty1, the serial console and any terminal emulator; without a terminal
(stdin not a tty) it only draws.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import sys
import termios
import tty
from collections.abc import Iterator


class Terminal:
    def __init__(self, stream_in=None, stream_out=None) -> None:
        self.stream_in = stream_in or sys.stdin
        self.stream_out = stream_out or sys.stdout

    @contextlib.contextmanager
    def raw(self) -> Iterator[Terminal]:
        """Single keys without Enter; the terminal is restored on the way out."""
        if not self.stream_in.isatty():
            yield self
            return
        fd = self.stream_in.fileno()
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            self.stream_out.write("\033[?25l")  # hide the cursor
            yield self
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            self.stream_out.write("\033[?25h\n")
            self.stream_out.flush()

    def read_key(self, timeout_s: float) -> str | None:
        if not self.stream_in.isatty():
            select.select([], [], [], timeout_s)
            return None
        ready, _, _ = select.select([self.stream_in], [], [], timeout_s)
        return os.read(self.stream_in.fileno(), 1).decode(errors="replace") if ready else None

    def draw(self, lines: list[str]) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        body = "\n".join(line[:width] for line in lines)
        self.stream_out.write("\033[2J\033[H" + body)
        self.stream_out.flush()
