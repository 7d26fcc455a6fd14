"""Line numbers for config keys: tomllib gives values, not where they were written."""

from __future__ import annotations

import re
from collections.abc import Mapping

from appliance.config.values import join_key

_KEY = r"""[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*'"""
_DOTTED = rf"(?:{_KEY})(?:[ \t]*\.[ \t]*(?:{_KEY}))*"
_KEY_RE = re.compile(_KEY)
_HEADER_RE = re.compile(rf"[ \t]*(\[\[?)[ \t]*({_DOTTED})[ \t]*\]")
_ASSIGN_RE = re.compile(rf"[ \t]*({_DOTTED})[ \t]*=")
_LAST_PART = re.compile(r"(?:\.[^.\[\]]+|\[\d+\])$")


def _key_parts(dotted: str) -> list[str]:
    return [key[1:-1] if key[0] in "\"'" else key for key in _KEY_RE.findall(dotted)]


def line_of(lines: Mapping[str, int], key: str) -> int | None:
    """The line that sets ``key``, else that of the nearest enclosing key or table."""
    while key:
        if key in lines:
            return lines[key]
        parent = _LAST_PART.sub("", key, count=1)
        if parent == key:
            return None
        key = parent
    return None


class LineScanner:
    """Maps key paths such as ``site[1].destination[0].port`` to the line that sets them."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}
        self._arrays: dict[str, int] = {}  # array-of-tables path -> blocks seen so far
        self._table = ""
        self._open: list[tuple[str, str | None]] = []  # open '[' / '{' and the inline table path
        self._string: str | None = None  # closing delimiter of an open multi-line string
        self._expect_key = False

    def scan(self, text: str) -> dict[str, int]:
        for number, line in enumerate(text.splitlines(), 1):
            self._line(number, line)
        return self.lines

    def _line(self, number: int, line: str) -> None:
        pos = 0
        if self._string:
            end = line.find(self._string)
            if end < 0:
                return
            self._string, pos = None, end + 3
        elif not self._open:
            self._statement(number, line)
            return
        self._value(number, line, pos, None)

    def _statement(self, number: int, line: str) -> None:
        if header := _HEADER_RE.match(line):
            self._header(number, header[1] == "[[", _key_parts(header[2]))
        elif assign := _ASSIGN_RE.match(line):
            path = self._table
            for part in _key_parts(assign[1]):  # a.b = 1 also sets table a
                path = join_key(path, part)
                self.lines.setdefault(path, number)
            self._value(number, line, assign.end(), path)

    def _header(self, number: int, is_array: bool, parts: list[str]) -> None:
        path = ""
        for index, part in enumerate(parts):
            path = join_key(path, part)
            if is_array and index == len(parts) - 1:
                count = self._arrays.get(path, 0)
                self._arrays[path] = count + 1
                self.lines.setdefault(path, number)
                path = f"{path}[{count}]"
            elif path in self._arrays:
                path = f"{path}[{self._arrays[path] - 1}]"
        self._table = path
        self.lines.setdefault(path, number)

    def _value(self, number: int, line: str, pos: int, path: str | None) -> None:
        """Scan a value from ``pos``, noting keys of inline tables."""
        pending = path  # the key path of a table opened next
        while pos < len(line):
            char = line[pos]
            if char in " \t":
                pos += 1
                continue
            if self._expect_key:
                self._expect_key = False
                if assign := _ASSIGN_RE.match(line, pos):
                    parent = self._open[-1][1]
                    pending = join_key(parent, *_key_parts(assign[1])) if parent else None
                    if pending:
                        self.lines.setdefault(pending, number)
                    pos = assign.end()
                    continue
            if char == "#":
                return
            if char in "\"'":
                pos = self._skip_string(line, pos)
                if pos < 0:
                    return
            else:
                self._punctuation(char, pending)
                pos += 1
            pending = None

    def _punctuation(self, char: str, pending: str | None) -> None:
        if char == "{":
            self._open.append((char, pending))
            self._expect_key = True
        elif char == "[":
            self._open.append((char, None))
        elif char in "]}" and self._open:
            self._open.pop()
        elif char == "," and self._open and self._open[-1][0] == "{":
            self._expect_key = True

    def _skip_string(self, line: str, pos: int) -> int:
        """The position after the string starting at ``pos``; -1 if it runs past the line."""
        quote = line[pos]
        if line.startswith(quote * 3, pos):
            end = line.find(quote * 3, pos + 3)
            if end < 0:
                self._string = quote * 3
                return -1
            return end + 3
        pos += 1
        while pos < len(line):
            if line[pos] == "\\" and quote == '"':
                pos += 2
            elif line[pos] == quote:
                return pos + 1
            else:
                pos += 1
        return pos
