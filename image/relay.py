"""One guest connection to one host port: QEMU's guestfwd runs this per connection
("cmd:python3 relay.py HOST PORT") with the guest's TCP stream on stdin and stdout.

Half-closes are passed on both ways; it exits when both directions are done.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def guest_to_host() -> None:
        try:
            while data := os.read(0, 65536):
                sock.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=guest_to_host, daemon=True)
    t.start()
    try:
        while data := sock.recv(65536):
            view = memoryview(data)
            while view:
                n = os.write(1, view)
                view = view[n:]
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(1)
    t.join(timeout=5)
    sock.close()


if __name__ == "__main__":
    main()
