"""A problem in a config: where it is, which key, how to fix it; and the error that
carries every problem found."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class ConfigProblem(NamedTuple):
    """One problem in a config: where it is, which key, and how to fix it."""

    source: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds every problem found."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)
