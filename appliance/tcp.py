"""TCP on the box's associations: Nagle off for what the box sends, immediate
acknowledgments for what it receives, and PDUs read into one buffer.

A modality that leaves Nagle's algorithm on holds the last segment of each data set back
until the previous one is acknowledged; a receiver that delays its acknowledgment (40 ms
on Linux) then stalls every instance. The box asks the kernel to acknowledge at once
after every read (TCP_QUICKACK, which the kernel forgets after use) and so ends the stall
on its side (README, "Benchmarks").
"""

from __future__ import annotations

import contextlib
import socket

from pynetdicom.transport import AssociationSocket

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)


def nodelay(sock: socket.socket | None) -> None:
    """Nagle's algorithm off on a TCP socket (pynetdicom never sets it)."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def quickack(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


def recv_exact(assoc_socket: AssociationSocket | None, length: int,
               prefix: bytes | bytearray = b"") -> bytearray:
    """`prefix` and then `length` bytes from an association's socket, in one buffer (fewer
    only if the connection closes or fails).

    Read straight into the buffer as the kernel has them: pynetdicom reads 4 KiB at a time,
    64 calls and copies for a 256 KiB PDU. Each read re-arms TCP_QUICKACK."""
    start = len(prefix)
    buffer = bytearray(start + length)
    buffer[:start] = prefix
    got = start
    sock: socket.socket | None = getattr(assoc_socket, "socket", None)
    if sock is not None:
        with memoryview(buffer) as view, contextlib.suppress(OSError):
            while got < start + length:
                n = sock.recv_into(view[got:])
                if not n:
                    break
                got += n
                quickack(sock)
    if got < start + length:
        del buffer[got:]
    return buffer
