"""Loopback TCP ports: a free one, whether one is open, waiting until one opens."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout_s: float = 10.0,
              proc: subprocess.Popen[Any] | None = None) -> None:
    """Wait until host:port accepts connections; TimeoutError if it does not in time,
    RuntimeError if ``proc`` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} did not open within {timeout_s} s")
        time.sleep(0.05)
