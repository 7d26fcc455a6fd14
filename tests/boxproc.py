"""The box as a real process, for integration tests: start, query, SIGTERM, kill -9, restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from appliance.control import ControlError, call
from tests.support.waiting import wait_for


def site_toml(site_id: str, dests: list[dict], *, policy: str = "") -> str:
    lines = [f'[[site]]\nid = "{site_id}"\nname = "{site_id}"\n']
    if policy:
        lines.append(f"[site.policy]\n{policy}\n")
    for dest in dests:
        lines.append("[[site.destination]]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in dest.items()))
    return "\n".join(lines)


def _table(defaults: dict[str, str], extra: str) -> str:
    """Default `key = value` lines, less those that `extra` sets, then `extra`."""
    given = {line.split("=")[0].strip() for line in extra.splitlines() if "=" in line}
    lines = [f"{k} = {v}" for k, v in defaults.items() if k not in given]
    return "\n".join(lines) + "\n" + extra + "\n"


def box_toml(data_dir: Path, port: int, sites: str, *, transmit: str = "", box: str = "",
             detect: str = 'mode = "fixed"\nfixed_site = "a"') -> str:
    box_defaults = {"ae_title": '"FLUXBOX"', "port": str(port), "data_dir": f'"{data_dir}"',
                    "reserve_mb": "1"}
    transmit_defaults = {"study_quiet_s": "1", "retry_initial_s": "0.2", "retry_max_s": "1",
                         "connect_timeout_s": "3", "dimse_timeout_s": "20"}
    return (f"[box]\n{_table(box_defaults, box)}\n[detect]\n{detect}\n\n"
            f"[transmit]\n{_table(transmit_defaults, transmit)}\n{sites}")


class BoxProcess:
    """The box run as `command` (default: this interpreter's `-m appliance`), in `workdir`."""

    def __init__(self, config_text: str, workdir: Path,
                 command: list[str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.command = command or [sys.executable, "-m", "appliance"]
        self._cwd = self.workdir if command else None  # an installed box: not from the tree
        self.config_path = self.workdir / "fluxbox.toml"
        self.config_path.write_text(config_text)
        self.log_path = self.workdir / "box.log"
        self.proc: subprocess.Popen | None = None
        from appliance.config import load_config

        self.config = load_config(self.config_path)

    @property
    def data_dir(self) -> Path:
        return self.config.box.data_dir

    @property
    def port(self) -> int:
        return self.config.box.port

    def start(self, timeout_s: float = 20) -> BoxProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.command, "run", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self._cwd,
            )
        self.wait_for(lambda: self._answers(), timeout_s, "box control socket")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"box exited with {self.proc.returncode}: {self.log()[-2000:]}")
        try:
            call(self.data_dir, "status", timeout_s=2)
            return True
        except ControlError:
            return False

    def call(self, command: str, **args):
        return call(self.data_dir, command, **args)

    def studies(self) -> list[dict]:
        return self.call("studies")

    def status(self) -> dict:
        return self.call("status")

    def _proc_status(self, field: str) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} for the box")

    def rss_bytes(self) -> int:
        """The box's resident set now."""
        return self._proc_status("VmRSS")

    def peak_rss_bytes(self) -> int:
        """The box's peak resident set since it started (the kernel's high-water mark)."""
        return self._proc_status("VmHWM")

    def reset_peak_rss(self) -> int:
        """Start the high-water mark again from the resident set now, which it returns
        (Linux: writing 5 to clear_refs resets VmHWM)."""
        assert self.proc is not None
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self.rss_bytes()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, predicate: Callable[[], object], timeout_s: float, what: str,
                 poll_s: float = 0.1):
        return wait_for(predicate, timeout_s, what, poll_s,
                        detail=lambda: f"box log tail:\n{self.log()[-3000:]}")

    def wait_states(self, expected: dict[str, str] | str, timeout_s: float = 60) -> list[dict]:
        """Wait until every study is in `expected` state (one state for all, or per UID)."""

        def done():
            rows = self.studies()
            if isinstance(expected, str):
                return rows if rows and all(r["state"] == expected for r in rows) else None
            states = {r["study_uid"]: r["state"] for r in rows}
            return rows if all(states.get(k) == v for k, v in expected.items()) else None

        return self.wait_for(done, timeout_s, f"study states {expected}")

    def stop(self, timeout_s: float = 30) -> int | None:
        """SIGTERM and wait; kill if it does not stop in time."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("box did not stop on SIGTERM") from None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> BoxProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill9() if exc[0] else self.stop()
