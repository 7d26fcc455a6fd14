"""Where the config comes from (a file, $FLUXBOX_CONFIG, the system file, the embedded
default) and parsing it into a Config, or a ConfigError listing every problem."""

from __future__ import annotations

import os
import re
import tomllib
from importlib import resources
from pathlib import Path

from appliance.config.checks import Checker
from appliance.config.model import Config
from appliance.config.problems import ConfigError, ConfigProblem
from appliance.config.scanner import LineScanner

SYSTEM_CONFIG = Path("/etc/fluxbox/fluxbox.toml")
ENV_VAR = "FLUXBOX_CONFIG"
DEFAULT_SOURCE = "<embedded default>"


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate TOML text; raise ConfigError listing every problem."""
    try:
        data = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(exc, text, source)]) from None
    checker = Checker(source, LineScanner().scan(text))
    config = checker.config(data)
    if checker.problems:
        raise ConfigError(sorted(checker.problems, key=lambda p: (p.line is None, p.line or 0)))
    return config


def load_config(path: str | Path) -> Config:
    """Read, parse and validate the config file at ``path``."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        problem = ConfigProblem(source, None, "", f"cannot read the config file: {reason}")
        raise ConfigError([problem]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        raise ConfigError([ConfigProblem(source, line, "", message)]) from None
    return parse_config(text, source)


def default_config() -> Config:
    """The embedded default config (appliance/default.toml)."""
    text = resources.files("appliance").joinpath("default.toml").read_text(encoding="utf-8")
    return parse_config(text, DEFAULT_SOURCE)


def resolve_config(explicit: str | Path | None = None) -> Config:
    """The explicit file, else $FLUXBOX_CONFIG, else the system file, else the default."""
    if explicit:
        return load_config(explicit)
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return load_config(from_env)
    if SYSTEM_CONFIG.exists():
        return load_config(SYSTEM_CONFIG)
    return default_config()


_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


def _syntax_problem(exc: tomllib.TOMLDecodeError, text: str, source: str) -> ConfigProblem:
    """A TOML syntax error as a problem with the line tomllib names."""
    message = str(exc)
    line: int | None = None
    if at := _AT_LINE.search(message):
        line = int(at[1])
        message = f"{message[: at.start()]} at column {at[2]}"
    elif at := _AT_END.search(message):
        line = max(1, len(text.splitlines()))
        message = f"{message[: at.start()]} at end of file"
    return ConfigProblem(source, line, "", f"TOML syntax error: {message}")
