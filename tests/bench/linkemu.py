"""A user-space network link between two network namespaces, for over-the-air tests.

The kernel here has no delay queueing discipline, so the link is made in user space: a TUN
device in each of two namespaces, and a forwarder process moving IP packets
between them through, in each direction, a serialising bottleneck of the given
rate, a drop-tail queue, random loss and a fixed one-way delay. On a schedule
the link can go down (``ip link set down`` on side A, as when the vehicle's
modem loses the network) or black-hole packets.

    with Link(rate_mbit=20, delay_ms=50, loss_pct=1, drop_every_s=30) as link:
        link.popen_in(link.ns_b, ["storescp", "11112"])
        link.run_in(link.ns_a, ["storescu", link.addr_b, "11112", "ct.dcm"])
        print(link.stats()["a_to_b"]["fwd_bytes"])

Needs root (namespaces, /dev/net/tun). Every namespace, device and process made
here is removed on exit; namespaces left by a killed run are removed by the next.
Also a command line: ``python -m tests.bench.linkemu probe RATE_MBIT DELAY_MS``
measures a link, and ``forward``/``sink``/``bulk``/``connect`` are its parts.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import errno
import fcntl
import itertools
import json
import math
import os
import random
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.processes import die_with_parent

REPO = Path(__file__).resolve().parents[2]
NS_PREFIX = "fbxlink-"
DEV = "fbxlink0"
MTU = 1500
PKT_MAX = 65536
SLOT_S = 0.05  # resolution of the a->b timeline
CMD_TIMEOUT_S = 10.0
FORWARDER_START_S = 10.0

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_CLONE_NEWNET = 0x40000000

_counter = itertools.count(1)


class LinkError(RuntimeError):
    """The link could not be built or a command in a namespace failed."""


# --------------------------------------------------------------------------- one direction


class Direction:
    """One way of the link: loss, a drop-tail queue in front of a rate-limited
    serialiser, then a fixed delay. Counts what it saw, and TCP payload bytes sent
    again (a segment below the highest sequence number seen on its flow)."""

    def __init__(self, rate_bps: float, delay_s: float, queue_packets: int, loss: float,
                 rng: random.Random) -> None:
        self.rate_bps, self.delay_s, self.limit, self.loss = rate_bps, delay_s, queue_packets, loss
        self.rng = rng
        self.pending: collections.deque[tuple[float, bytes, int]] = collections.deque()
        self.txends: collections.deque[float] = collections.deque()  # of queued packets
        self.last_txend = 0.0
        self.flows: dict[bytes, int] = {}
        self.counts = dict.fromkeys(
            ("offered_pkts", "offered_bytes", "fwd_pkts", "fwd_bytes", "lost_pkts",
             "queue_drops", "outage_drops", "write_errors", "tcp_payload_bytes",
             "resent_bytes", "connections", "max_queue"), 0)

    def offer(self, pkt: bytes, now: float, blackhole: bool) -> None:
        """A packet entering the link at ``now``."""
        c = self.counts
        c["offered_pkts"] += 1
        c["offered_bytes"] += len(pkt)
        payload = self._tcp(pkt)
        if blackhole:
            c["outage_drops"] += 1
            return
        if self.loss and self.rng.random() < self.loss:
            c["lost_pkts"] += 1
            return
        while self.txends and self.txends[0] <= now:
            self.txends.popleft()
        if len(self.txends) >= self.limit:
            c["queue_drops"] += 1
            return
        txend = max(self.last_txend, now) + len(pkt) * 8 / self.rate_bps
        self.last_txend = txend
        self.txends.append(txend)
        c["max_queue"] = max(c["max_queue"], len(self.txends))
        self.pending.append((txend + self.delay_s, pkt, payload))

    def next_due(self) -> float | None:
        return self.pending[0][0] if self.pending else None

    def due(self, now: float) -> list[tuple[bytes, int]]:
        """Packets whose delay has passed, in order, with their TCP payload sizes."""
        out = []
        while self.pending and self.pending[0][0] <= now:
            _, pkt, payload = self.pending.popleft()
            out.append((pkt, payload))
        return out

    def _tcp(self, pkt: bytes) -> int:
        """Count connections and bytes sent again; the TCP payload size (0: none, or not TCP)."""
        if len(pkt) < 40 or pkt[0] >> 4 != 4 or pkt[9] != 6:
            return 0
        ihl = (pkt[0] & 0x0F) * 4
        if len(pkt) < ihl + 20:
            return 0
        seq = struct.unpack_from("!I", pkt, ihl + 4)[0]
        flags = pkt[ihl + 13]
        key = pkt[12:20] + pkt[ihl:ihl + 4]
        if flags & 0x02 and not flags & 0x10:  # SYN without ACK: a new connection
            if self.flows.get(key) != (seq + 1) & 0xFFFFFFFF:  # not a SYN sent again
                self.counts["connections"] += 1
            self.flows[key] = (seq + 1) & 0xFFFFFFFF
            return 0
        size = len(pkt) - ihl - (pkt[ihl + 12] >> 4) * 4
        if size <= 0:
            return 0
        self.counts["tcp_payload_bytes"] += size
        end = (seq + size) & 0xFFFFFFFF
        high = self.flows.get(key)
        if high is None:
            self.flows[key] = end
            return size
        behind = (high - seq) & 0xFFFFFFFF
        if 0 < behind < 1 << 31:
            self.counts["resent_bytes"] += min(behind, size)
        if 0 < ((end - high) & 0xFFFFFFFF) < 1 << 31:
            self.flows[key] = end
        return size


# --------------------------------------------------------------------------- the forwarder


def _setns(ns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
    finally:
        os.close(fd)


def open_tun(ns: str, dev: str) -> int:
    """A non-blocking file descriptor on the persistent TUN device ``dev`` in ``ns``."""
    _setns(ns)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", dev.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


class Forwarder:
    """Moves packets between two TUN descriptors; answers commands on stdin
    (``s``: stats as one JSON line, ``t``: also the timeline, ``d``/``u``: black-hole
    on/off); ends on EOF."""

    def __init__(self, fd_a: int, fd_b: int, dirs: tuple[Direction, Direction]) -> None:
        self.fds = (fd_a, fd_b)
        self.dirs = dirs
        self.blackhole = False
        self.started = time.monotonic()
        self.timeline: list[int] = []  # a->b TCP payload bytes forwarded per SLOT_S

    def run(self, control: int) -> None:
        while True:
            now = time.monotonic()
            self._deliver(now)
            ready = select.select([*self.fds, control], [], [], self._wait(now))[0]
            now = time.monotonic()
            for i, fd in enumerate(self.fds):
                if fd in ready:
                    self._read(i, fd, now)
            if control in ready and not self._command(control):
                return

    def _wait(self, now: float) -> float:
        dues = [d for d in (x.next_due() for x in self.dirs) if d is not None]
        return max(0.0, min(dues) - now) if dues else 1.0

    def _read(self, i: int, fd: int, now: float) -> None:
        for _ in range(256):
            try:
                pkt = os.read(fd, PKT_MAX)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADFD):
                    return
                raise
            self.dirs[i].offer(pkt, now, self.blackhole)

    def _deliver(self, now: float) -> None:
        for i, direction in enumerate(self.dirs):
            for pkt, payload in direction.due(now):
                try:
                    os.write(self.fds[1 - i], pkt)
                except OSError:  # the far device is down (EIO)
                    direction.counts["write_errors"] += 1
                    continue
                direction.counts["fwd_pkts"] += 1
                direction.counts["fwd_bytes"] += len(pkt)
                if i == 0 and payload:
                    self._account(now, payload)

    def _account(self, now: float, size: int) -> None:
        slot = int((now - self.started) / SLOT_S)
        if slot >= len(self.timeline):
            self.timeline.extend([0] * (slot + 1 - len(self.timeline)))
        self.timeline[slot] += size

    def _command(self, control: int) -> bool:
        data = os.read(control, 64)
        if not data:
            return False
        for cmd in data.decode().split():
            if cmd in ("d", "u"):
                self.blackhole = cmd == "d"
            elif cmd in ("s", "t"):
                self._reply(with_timeline=cmd == "t")
        return True

    def _reply(self, with_timeline: bool) -> None:
        stats: dict[str, Any] = {
            "uptime_s": time.monotonic() - self.started, "blackhole": self.blackhole,
            "a_to_b": dict(self.dirs[0].counts), "b_to_a": dict(self.dirs[1].counts)}
        if with_timeline:
            stats["timeline"] = {"slot_s": SLOT_S, "a_to_b_payload": self.timeline}
        sys.stdout.write(json.dumps(stats) + "\n")
        sys.stdout.flush()


def _forward_main(args: argparse.Namespace) -> int:
    fd_a, fd_b = open_tun(args.ns_a, args.dev), open_tun(args.ns_b, args.dev)
    rng = random.Random(args.seed)
    dirs = tuple(Direction(args.rate_bps, args.delay_ms / 1000, args.queue, args.loss_pct / 100,
                           rng) for _ in range(2))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    Forwarder(fd_a, fd_b, (dirs[0], dirs[1])).run(sys.stdin.fileno())
    return 0


# --------------------------------------------------------------------------- set-up helpers


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=CMD_TIMEOUT_S,
                        check=False, stdin=subprocess.DEVNULL)
    if check and cp.returncode != 0:
        raise LinkError(f"ip {' '.join(args)}: {cp.stderr.strip()}")
    return cp


def _namespaces() -> list[str]:
    cp = _ip("netns", "list", check=False)
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def _ns_pids(ns: str) -> list[int]:
    cp = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in cp.stdout.split() if p.isdigit()]


def _kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _delete_ns(ns: str) -> None:
    """Kill what still runs in ``ns`` (all of it started by a Link), then delete it."""
    for _ in range(3):
        pids = _ns_pids(ns)
        if not pids:
            break
        _kill_pids(pids)
        time.sleep(0.1)
    _ip("netns", "del", ns, check=False)


def remove_stale() -> list[str]:
    """Delete namespaces a Link of a process that no longer runs left behind."""
    removed = []
    for ns in _namespaces():
        if not ns.startswith(NS_PREFIX):
            continue
        pid = ns.removeprefix(NS_PREFIX).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _delete_ns(ns)
            removed.append(ns)
    return removed


def unavailable() -> str | None:
    """Why a Link cannot be built here (not root, no TUN, no namespaces), or None."""
    if os.geteuid() != 0:
        return "needs root for network namespaces and TUN devices"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    ns = f"{NS_PREFIX}{os.getpid()}-probe{next(_counter)}"
    try:
        _ip("netns", "add", ns)
        _ip("-n", ns, "tuntap", "add", "dev", DEV, "mode", "tun")
    except (LinkError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace with a TUN device: {exc}"
    finally:
        _ip("netns", "del", ns, check=False)
    return None


def default_queue(rate_mbit: float, delay_ms: float) -> int:
    """One bandwidth-delay product of full-size packets, at least 100 ms of them, at least 32."""
    window_s = max(2 * delay_ms / 1000, 0.1)
    return max(32, math.ceil(rate_mbit * 1e6 * window_s / (MTU * 8)))


# --------------------------------------------------------------------------- the link


class Link:
    """Two namespaces joined by an emulated link; a context manager.

    ``drop_every_s``: every so many seconds (from the start) the link is down for
    ``drop_for_s``; ``drop_mode`` "down" sets A's device down (connects fail at
    once, open connections stall), "blackhole" silently loses every packet.
    ``congestion``: TCP congestion control in both namespaces (None: the host's default;
    outside the first namespace the kernel allows only those in
    net.ipv4.tcp_allowed_congestion_control).
    """

    def __init__(self, rate_mbit: float, delay_ms: float, loss_pct: float = 0.0,
                 drop_every_s: float | None = None, drop_for_s: float = 2.0,
                 queue_packets: int | None = None, *, drop_mode: str = "down",
                 congestion: str | None = None, seed: int = 1) -> None:
        if rate_mbit <= 0 or delay_ms < 0 or not 0 <= loss_pct < 100:
            raise ValueError("rate_mbit > 0, delay_ms >= 0, 0 <= loss_pct < 100")
        if drop_mode not in ("down", "blackhole"):
            raise ValueError("drop_mode is 'down' or 'blackhole'")
        self.rate_mbit, self.delay_ms, self.loss_pct = rate_mbit, delay_ms, loss_pct
        self.drop_every_s, self.drop_for_s, self.drop_mode = drop_every_s, drop_for_s, drop_mode
        self.queue_packets = queue_packets or default_queue(rate_mbit, delay_ms)
        self.congestion, self.seed = congestion, seed
        n = next(_counter)
        self.ns_a = f"{NS_PREFIX}{os.getpid()}-{n}-a"
        self.ns_b = f"{NS_PREFIX}{os.getpid()}-{n}-b"
        subnet = (os.getpid() + n) % 254 + 1
        self.addr_a, self.addr_b = f"10.99.{subnet}.1", f"10.99.{subnet}.2"
        self.dev = DEV
        self.outages: list[tuple[float, float]] = []  # (start, end) monotonic
        self._forwarder: subprocess.Popen[str] | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._dropper: threading.Thread | None = None
        self._made: list[str] = []

    # lifecycle ------------------------------------------------------------------

    def start(self) -> Link:
        remove_stale()
        for ns, addr in ((self.ns_a, self.addr_a), (self.ns_b, self.addr_b)):
            self._make_ns(ns, addr)
        self._start_forwarder()
        for ns, addr in ((self.ns_a, self.addr_a), (self.ns_b, self.addr_b)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", self.dev)
            _ip("-n", ns, "link", "set", self.dev, "up", "mtu", str(MTU))
        if self.drop_every_s:
            self._dropper = threading.Thread(target=self._drop_loop, name="link-drops",
                                             daemon=True)
            self._dropper.start()
        return self

    def _make_ns(self, ns: str, addr: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "tuntap", "add", "dev", self.dev, "mode", "tun")
        if self.congestion:
            self.run_in(ns, ["sysctl", "-q", "-w",
                             f"net.ipv4.tcp_congestion_control={self.congestion}"], check=True)

    def _start_forwarder(self) -> None:
        args = [sys.executable, "-m", "tests.bench.linkemu", "forward", "--ns-a", self.ns_a,
                "--ns-b", self.ns_b, "--dev", self.dev, "--rate-bps", str(self.rate_mbit * 1e6),
                "--delay-ms", str(self.delay_ms), "--queue", str(self.queue_packets),
                "--loss-pct", str(self.loss_pct), "--seed", str(self.seed)]
        self._forwarder = subprocess.Popen(
            args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1, start_new_session=True, preexec_fn=die_with_parent())
        line = self._readline(FORWARDER_START_S)
        if line.strip() != "ready":
            raise LinkError(f"the forwarder did not start: {line!r}")

    def stop(self) -> None:
        """Stop drops, processes and the forwarder; delete both namespaces."""
        self._stop.set()
        if self._dropper is not None:
            self._dropper.join(timeout=self.drop_for_s + 5)
        for proc in self._procs:
            kill_group(proc)
        if self._forwarder is not None:
            with contextlib.suppress(OSError):
                self._forwarder.stdin.close()  # type: ignore[union-attr]
            kill_group(self._forwarder, grace_s=2.0)
            self._forwarder = None
        for ns in self._made:
            _delete_ns(ns)
        self._made.clear()

    def __enter__(self) -> Link:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # running things in a namespace -------------------------------------------------

    def run_in(self, ns: str, args: Sequence[str], *, timeout: float = 60.0, check: bool = False,
               **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run ``args`` in ``ns`` to completion; output captured as text."""
        cp = subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True,
                            timeout=timeout, check=False, stdin=subprocess.DEVNULL, **kwargs)
        if check and cp.returncode != 0:
            raise LinkError(f"{' '.join(args)} in {ns}: exit {cp.returncode}: {cp.stderr[-500:]}")
        return cp

    def popen_in(self, ns: str, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``args`` in ``ns`` in its own process group; killed on exit at the latest."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *args], start_new_session=True,
                                preexec_fn=die_with_parent(), **kwargs)
        self._procs.append(proc)
        return proc

    # drops -----------------------------------------------------------------------

    def down(self) -> None:
        """Take the link down now (see ``drop_mode``)."""
        if self.drop_mode == "down":
            _ip("-n", self.ns_a, "link", "set", self.dev, "down")
        else:
            with self._lock:
                self._send("d")

    def up(self) -> None:
        if self.drop_mode == "down":
            _ip("-n", self.ns_a, "link", "set", self.dev, "up")
        else:
            with self._lock:
                self._send("u")

    def _drop_loop(self) -> None:
        assert self.drop_every_s is not None
        while not self._stop.wait(self.drop_every_s):
            started = time.monotonic()
            self.down()
            self._stop.wait(self.drop_for_s)
            self.up()
            self.outages.append((started, time.monotonic()))

    # stats -----------------------------------------------------------------------

    def stats(self, timeline: bool = False) -> dict[str, Any]:
        """Counters per direction (``a_to_b``, ``b_to_a``); with ``timeline``, a->b TCP
        payload bytes forwarded per ``slot_s`` since the start; ``outages``: drops so far."""
        with self._lock:
            self._send("t" if timeline else "s")
            stats = json.loads(self._readline(CMD_TIMEOUT_S))
        stats["outages"] = len(self.outages)
        return stats

    def _send(self, cmd: str) -> None:
        if self._forwarder is None or self._forwarder.stdin is None:
            raise LinkError("the link is not running")
        self._forwarder.stdin.write(cmd + "\n")
        self._forwarder.stdin.flush()

    def _readline(self, timeout_s: float) -> str:
        assert self._forwarder is not None and self._forwarder.stdout is not None
        out = self._forwarder.stdout
        if not select.select([out], [], [], timeout_s)[0]:
            raise LinkError(f"no answer from the forwarder within {timeout_s} s")
        line = out.readline()
        if not line:
            raise LinkError(f"the forwarder exited ({self._forwarder.poll()})")
        return line


def kill_group(proc: subprocess.Popen[Any], grace_s: float = 3.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # forked children left in the group


# --------------------------------------------------------------------------- probes


def sink(port: int) -> None:
    """Accept connections on ``port``; for each, read to EOF, answer the byte count."""
    srv = socket.create_server(("0.0.0.0", port), reuse_port=False)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_drain, args=(conn,), daemon=True).start()


def _drain(conn: socket.socket) -> None:
    with conn:
        total = 0
        while data := conn.recv(1 << 20):
            total += len(data)
        conn.sendall(f"{total}\n".encode())


def bulk(host: str, port: int, megabytes: float) -> dict[str, float]:
    """Send ``megabytes``, then wait for the receiver's count: payload Mbit/s from the
    connect to the receiver's answer."""
    started = time.monotonic()
    conn = socket.create_connection((host, port), timeout=60)
    left = int(megabytes * 1e6)
    buf = memoryview(b"\x5a" * (1 << 16))
    while left > 0:
        conn.sendall(buf[:min(left, len(buf))])
        left -= min(left, len(buf))
    conn.shutdown(socket.SHUT_WR)
    received = int(conn.makefile().readline() or 0)
    elapsed = time.monotonic() - started
    conn.close()
    return {"bytes": received, "seconds": elapsed, "mbit_s": received * 8 / elapsed / 1e6}


def connect_rtts(host: str, port: int, count: int) -> dict[str, float]:
    """TCP connect times (one round trip each), in ms."""
    times = []
    for _ in range(count):
        started = time.monotonic()
        with socket.create_connection((host, port), timeout=10):
            times.append((time.monotonic() - started) * 1000)
        time.sleep(0.05)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def probe(rate_mbit: float, delay_ms: float, megabytes: float = 10.0,
          **link: Any) -> dict[str, Any]:
    """Build a link, measure connect RTT and bulk throughput A->B over it."""
    port = 5201
    with Link(rate_mbit, delay_ms, **link) as ln:
        ln.popen_in(ln.ns_b, [sys.executable, "-m", "tests.bench.linkemu", "sink", str(port)],
                    cwd=REPO)
        wait_listening(ln, ln.ns_b, port)
        me = [sys.executable, "-m", "tests.bench.linkemu"]
        rtt = ln.run_in(ln.ns_a, [*me, "connect", ln.addr_b, str(port), "5"], cwd=REPO,
                        check=True)
        timeout = megabytes * 8 / rate_mbit * 4 + 60
        tput = ln.run_in(ln.ns_a, [*me, "bulk", ln.addr_b, str(port), str(megabytes)], cwd=REPO,
                         check=True, timeout=timeout)
        return {"rtt": json.loads(rtt.stdout), "bulk": json.loads(tput.stdout),
                "stats": ln.stats()}


def wait_listening(link: Link, ns: str, port: int, timeout_s: float = 10.0) -> None:
    """Wait until something in ``ns`` listens on TCP ``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if f":{port} " in link.run_in(ns, ["ss", "-Htln"], timeout=5).stdout:
            return
        time.sleep(0.05)
    raise LinkError(f"nothing listens on {ns}:{port} after {timeout_s} s")



def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.linkemu")
    sub = parser.add_subparsers(dest="cmd", required=True)
    fwd = sub.add_parser("forward", help="(internal) the forwarder process")
    for name in ("--ns-a", "--ns-b", "--dev"):
        fwd.add_argument(name, required=True)
    for name in ("--rate-bps", "--delay-ms", "--loss-pct"):
        fwd.add_argument(name, type=float, required=True)
    fwd.add_argument("--queue", type=int, required=True)
    fwd.add_argument("--seed", type=int, default=1)
    sub.add_parser("sink").add_argument("port", type=int)
    for name in ("bulk", "connect"):
        p = sub.add_parser(name)
        p.add_argument("host")
        p.add_argument("port", type=int)
        p.add_argument("amount", type=float, help="megabytes (bulk) or count (connect)")
    pr = sub.add_parser("probe", help="build a link and measure it")
    pr.add_argument("rate_mbit", type=float)
    pr.add_argument("delay_ms", type=float)
    pr.add_argument("--loss-pct", type=float, default=0.0)
    pr.add_argument("--megabytes", type=float, default=10.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.cmd == "forward":
        return _forward_main(args)
    if args.cmd == "sink":
        sink(args.port)
    elif args.cmd == "bulk":
        print(json.dumps(bulk(args.host, args.port, args.amount)))
    elif args.cmd == "connect":
        print(json.dumps(connect_rtts(args.host, args.port, int(args.amount))))
    else:
        print(json.dumps(probe(args.rate_mbit, args.delay_ms, args.megabytes,
                               loss_pct=args.loss_pct), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
