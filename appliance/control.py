"""The local control socket: one JSON request, one JSON answer, per connection.

The socket lives in the data directory with mode 0600, so only the appliance's
user (and root) can drive the box. Commands other than `run` are clients.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("fluxbox.control")

SOCKET_NAME = "control.sock"
MAX_REQUEST_BYTES = 64 * 1024
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
CALL_TIMEOUT_S = 30.0  # how long a command waits for the appliance's answer


@contextlib.contextmanager
def _reachable(path: Path) -> Iterator[str]:
    """A path to bind or connect to that fits in sun_path, even for a deep data directory
    (through the directory's descriptor in /proc)."""
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlError(Exception):
    """The appliance is not running, or it answered with an error."""


class CommandError(Exception):
    """Raised by a command handler: the message goes back to the client as is."""


Handler = Callable[[dict[str, Any]], object]


class ControlServer:
    def __init__(self, data_dir: Path, handlers: dict[str, Handler]) -> None:
        self.path = Path(data_dir) / SOCKET_NAME
        self.handlers = handlers
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        handlers = self.handlers

        class _Request(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(MAX_REQUEST_BYTES)
                self.wfile.write(json.dumps(dispatch(handlers, line)).encode() + b"\n")

        old_umask = os.umask(0o177)
        try:
            with _reachable(self.path) as address:
                self._server = socketserver.ThreadingUnixStreamServer(address, _Request)
        finally:
            os.umask(old_umask)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="control",
                                        kwargs={"poll_interval": 0.5}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.path.unlink(missing_ok=True)


def dispatch(handlers: dict[str, Handler], line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        handler = handlers[request["command"]]
    except (ValueError, KeyError, TypeError):
        return {"ok": False, "error": "bad request"}
    try:
        return {"ok": True, "result": handler(request.get("args") or {})}
    except CommandError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:
        log.exception("control command failed")
        return {"ok": False, "error": f"internal error: {type(exc).__name__}"}


def call(data_dir: Path, command: str, timeout_s: float = CALL_TIMEOUT_S,
         **args: object) -> object:
    """Send one command to the running appliance; raises ControlError."""
    path = Path(data_dir) / SOCKET_NAME
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            with _reachable(path) as address:
                sock.connect(address)
            sock.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ControlError(f"the appliance is not running (no control socket at {path})") from exc
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc}") from exc
    try:
        answer = json.loads(data)
    except ValueError as exc:
        raise ControlError("the appliance gave no answer") from exc
    if not answer.get("ok"):
        raise ControlError(answer.get("error", "unknown error"))
    return answer["result"]
