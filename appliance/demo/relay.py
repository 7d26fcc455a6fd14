"""A TCP relay that can drop its connections: a stand-in for a flaky link.

One thread runs a select loop over the listening socket and every relayed
connection; each direction has a bounded buffer, so a slow reader slows the
writer down as a real link would. ``cut()`` resets every open connection (RST,
not FIN), ``set_down(True)`` makes new connections fail at once, and
``cut_after_bytes`` cuts a connection by itself after that many bytes went
from client to server.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import struct
import threading
from types import TracebackType

_BUFFER = 256 * 1024  # most bytes held per direction of one connection
_CHUNK = 64 * 1024
_CONNECT_ERRORS = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, 0)


def _nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0, so the peer gets an RST."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Conn:
    """One relayed connection: client <-> server sockets and their buffers."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.connected = False  # the connect to the target has completed
        self.up = bytearray()  # client -> server, not yet sent
        self.down = bytearray()  # server -> client, not yet sent
        self.up_total = 0  # bytes read from the client
        self.client_eof = False
        self.server_eof = False
        self.up_shut = False  # FIN passed on to the server
        self.down_shut = False  # FIN passed on to the client
        self.up_limit: int | None = None  # cut once this many bytes went upstream

    def done(self) -> bool:
        return self.up_shut and self.down_shut


class FlakyRelay:
    """Relay TCP connections from ``listen_host:port`` to ``target``, with cuts on demand."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        cut_after_bytes: int | None = None,
        cut_times: int = 0,
    ) -> None:
        self.target = target
        self.listen_host = listen_host
        self.port = listen_port
        self.cut_after_bytes = cut_after_bytes
        self.cut_times = cut_times
        self.bytes_forwarded = 0  # both directions
        self.bytes_up = 0  # client -> server
        self.bytes_down = 0  # server -> client
        self.cuts = 0  # connections reset by cut() or by cut_after_bytes
        self.auto_cuts = 0  # of which by cut_after_bytes
        self.connections = 0  # connections accepted and relayed
        self.refused = 0  # connections accepted and reset at once (down, or target refused)
        self._down = False
        self._frozen = False
        self._refresh = False
        self._conns: dict[socket.socket, _Conn] = {}
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._lock = threading.Lock()
        self._pending_cut: list[threading.Event] = []
        self._sel = selectors.DefaultSelector()

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        """Bind, listen and start the relay thread; ``port`` is then the listening port."""
        if self._thread is not None:
            return
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((self.listen_host, self.port))
        lst.listen(64)
        lst.setblocking(False)
        self.port = lst.getsockname()[1]
        self._listener = lst
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(lst, selectors.EVENT_READ)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name=f"relay-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Reset every connection, close the listener and join the thread. Idempotent."""
        thread = self._thread
        if thread is None or self._stopping:
            return
        self._stopping = True
        self._wake()
        thread.join(timeout=10)

    def cut(self, timeout_s: float = 5.0) -> None:
        """Reset every open connection now (both sides get an RST); return once done."""
        if self._thread is None or not self._thread.is_alive():
            return
        done = threading.Event()
        with self._lock:
            self._pending_cut.append(done)
        self._wake()
        done.wait(timeout_s)

    def set_down(self, down: bool) -> None:
        """While down, new connections are accepted and reset at once, like a dead link."""
        self._down = down

    def freeze(self, frozen: bool) -> None:
        """While frozen, open connections carry nothing in either direction but stay open:
        a link that went silent (a tunnel, a dead cell) rather than one that refused."""
        self._frozen = frozen
        self._refresh = True
        self._wake()

    @property
    def down(self) -> bool:
        return self._down

    @property
    def open_connections(self) -> int:
        return len(self._conns) // 2

    def __enter__(self) -> FlakyRelay:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ loop

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, events in self._sel.select(timeout=1.0):
                    self._dispatch(key.fileobj, events)  # type: ignore[arg-type]
                self._handle_cut_requests()
                if self._refresh:
                    self._refresh = False
                    for conn in {id(c): c for c in self._conns.values()}.values():
                        self._update(conn)
        finally:
            self._close_all()

    def _dispatch(self, sock: socket.socket, events: int) -> None:
        if sock is self._listener:
            self._accept()
        elif sock is self._wake_r:
            with contextlib.suppress(OSError):
                sock.recv(4096)
        else:
            conn = self._conns.get(sock)
            if conn is not None:
                self._service(conn, sock, events)

    def _handle_cut_requests(self) -> None:
        with self._lock:
            pending, self._pending_cut = self._pending_cut, []
        if not pending:
            return
        for conn in {id(c): c for c in self._conns.values()}.values():
            self._drop(conn, counted=True)
        for event in pending:
            event.set()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        if self._down:
            self.refused += 1
            _reset(client)
            return
        client.setblocking(False)
        _nodelay(client)
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setblocking(False)
        _nodelay(server)
        err = server.connect_ex(self.target)
        if err not in _CONNECT_ERRORS:
            self.refused += 1
            _reset(client)
            server.close()
            return
        conn = _Conn(client, server)
        self._conns[client] = conn
        self._conns[server] = conn
        self.connections += 1
        self._arm(conn)
        self._update(conn)

    def _arm(self, conn: _Conn) -> None:
        """Give the connection an automatic cut if any are left."""
        if self.cut_after_bytes is not None and self.auto_cuts < self.cut_times:
            conn.up_limit = self.cut_after_bytes

    # ------------------------------------------------------------------ one connection

    def _service(self, conn: _Conn, sock: socket.socket, events: int) -> None:
        try:
            if sock is conn.server and not conn.connected:
                self._finish_connect(conn)
                return
            if events & selectors.EVENT_READ:
                self._read(conn, sock)
            if events & selectors.EVENT_WRITE:
                self._write(conn, sock)
        except OSError:
            self._drop(conn, counted=False)
            return
        if self._conns.get(sock) is conn:
            self._after_io(conn)

    def _finish_connect(self, conn: _Conn) -> None:
        err = conn.server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.refused += 1
            self.connections -= 1
            self._drop(conn, counted=False)
            return
        conn.connected = True
        self._update(conn)

    def _read(self, conn: _Conn, sock: socket.socket) -> None:
        if sock is conn.client:
            room = _BUFFER - len(conn.up)
            if conn.up_limit is not None:
                room = min(room, conn.up_limit - conn.up_total)
            data = sock.recv(min(_CHUNK, room)) if room > 0 else None
            if data == b"":
                conn.client_eof = True
            elif data:
                conn.up += data
                conn.up_total += len(data)
        else:
            data = sock.recv(min(_CHUNK, _BUFFER - len(conn.down)))
            if data == b"":
                conn.server_eof = True
            else:
                conn.down += data

    def _write(self, conn: _Conn, sock: socket.socket) -> None:
        buf = conn.up if sock is conn.server else conn.down
        if not buf:
            return
        sent = sock.send(buf)
        del buf[:sent]
        self.bytes_forwarded += sent
        if sock is conn.server:
            self.bytes_up += sent
        else:
            self.bytes_down += sent

    def _after_io(self, conn: _Conn) -> None:
        """Pass on half-closes, apply the automatic cut, close finished connections."""
        if conn.up_limit is not None and conn.up_total >= conn.up_limit and not conn.up:
            if self.auto_cuts < self.cut_times:
                self.auto_cuts += 1
                self._drop(conn, counted=True)
                return
            conn.up_limit = None
        if conn.client_eof and not conn.up and not conn.up_shut:
            conn.up_shut = True
            with contextlib.suppress(OSError):
                conn.server.shutdown(socket.SHUT_WR)
        if conn.server_eof and not conn.down and not conn.down_shut:
            conn.down_shut = True
            with contextlib.suppress(OSError):
                conn.client.shutdown(socket.SHUT_WR)
        if conn.done():
            self._close(conn)
            return
        self._update(conn)

    def _update(self, conn: _Conn) -> None:
        """Register the events each socket of the connection waits for."""
        if not conn.connected:  # the client waits until the target answered
            self._modify(conn.server, selectors.EVENT_WRITE)
            return
        self._modify(conn.client, self._want(conn, conn.client))
        self._modify(conn.server, self._want(conn, conn.server))

    def _want(self, conn: _Conn, sock: socket.socket) -> int:
        if self._frozen:
            return 0
        if sock is conn.client:
            limit_left = conn.up_limit is None or conn.up_total < conn.up_limit
            reading = not conn.client_eof and len(conn.up) < _BUFFER and limit_left
            writing = bool(conn.down)
        else:
            reading = not conn.server_eof and len(conn.down) < _BUFFER
            writing = bool(conn.up)
        return (selectors.EVENT_READ if reading else 0) | (selectors.EVENT_WRITE if writing else 0)

    def _modify(self, sock: socket.socket, events: int) -> None:
        """selectors cannot hold a socket with no events: unregister it instead."""
        registered = sock in self._sel.get_map()
        if events and registered:
            self._sel.modify(sock, events)
        elif events:
            self._sel.register(sock, events)
        elif registered:
            self._sel.unregister(sock)

    def _drop(self, conn: _Conn, *, counted: bool) -> None:
        """Reset both sides of the connection."""
        if self._conns.get(conn.client) is not conn:
            return
        if counted:
            self.cuts += 1
        self._forget(conn)
        _reset(conn.client)
        _reset(conn.server)

    def _close(self, conn: _Conn) -> None:
        """Both directions finished cleanly: close both sockets."""
        self._forget(conn)
        conn.client.close()
        conn.server.close()

    def _forget(self, conn: _Conn) -> None:
        for sock in (conn.client, conn.server):
            self._conns.pop(sock, None)
            if sock in self._sel.get_map():
                self._sel.unregister(sock)

    def _close_all(self) -> None:
        for conn in {id(c): c for c in self._conns.values()}.values():
            self._drop(conn, counted=False)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(sock)
                sock.close()
        self._sel.close()
        with self._lock:
            for event in self._pending_cut:
                event.set()
            self._pending_cut = []
