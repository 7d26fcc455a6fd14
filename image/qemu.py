"""Run a Flux Box disk image in QEMU (TCG, UEFI with OVMF) with its serial console under pexpect.

    from image.qemu import Vm
    with Vm(disk, box_port=P, pacs_port=Q, log=path) as vm:
        vm.login()                       # the test image logs root in on ttyS0
        out = vm.sh("fluxbox status --json")

Every wait is bounded; QEMU is killed on every exit path (close(), the context manager, and
the kernel's parent-death signal if this process dies). Also a command line tool:

    python3 image/qemu.py DISK [--box-port P] [--pacs-port Q]     boot it, serial on this terminal
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
PROMPT = r"root@fluxbox:[^\r\n]*# "
# The guest reaches the test host's PACS at this address (QEMU user network guestfwd).
GUEST_PACS_ADDR = "10.0.2.100"
GUEST_PACS_PORT = 11113


def _pdeathsig() -> None:  # pragma: no cover - in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def qemu_command(
    disk: Path,
    vars_fd: Path,
    *,
    box_port: int | None,
    pacs_port: int | None,
    memory_mb: int = 1536,
    cpus: int = 2,
    relay: str = "cmd",
    extra_disks: tuple[Path, ...] = (),
) -> list[str]:
    """The QEMU command line. `disk` may be raw or qcow2 (by its suffix); `extra_disks` are
    raw, read-only, and appear in the guest as /dev/vdb, /dev/vdc, ..."""
    fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
    netdev = "user,id=n0,restrict=on"
    if box_port:
        netdev += f",hostfwd=tcp:127.0.0.1:{box_port}-:104"
    if pacs_port:
        # One process per guest connection ("cmd:"): a "tcp:" chardev is one connection,
        # opened once when QEMU starts, so a second association would find it gone.
        target = (
            f"cmd:{sys.executable} {Path(__file__).with_name('relay.py')} 127.0.0.1 {pacs_port}"
            if relay == "cmd"
            else f"tcp:127.0.0.1:{pacs_port}"
        )
        netdev += f",guestfwd=tcp:{GUEST_PACS_ADDR}:{GUEST_PACS_PORT}-{target}"
    return [
        # -cpu max: the wheels (numpy) need more than the default qemu64 CPU model offers
        "qemu-system-x86_64",
        "-machine",
        "q35",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        str(memory_mb),
        "-smp",
        str(cpus),
        "-nographic",
        "-no-reboot",
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={vars_fd}",
        "-drive",
        f"file={disk},format={fmt},if=virtio,cache=writeback",
        "-netdev",
        netdev,
        "-device",
        "virtio-net-pci,netdev=n0",
        # a hardware watchdog for systemd to feed (RuntimeWatchdogSec); with -no-reboot its
        # reset ends QEMU like a reboot does
        "-device",
        "i6300esb",
    ] + [
        arg
        for extra in extra_disks
        for arg in ("-drive", f"file={extra},format=raw,if=virtio,readonly=on")
    ]


class VmError(RuntimeError):
    pass


def overlay(image: Path, disk: Path, grow_mib: int = 0) -> Path:
    """A qcow2 disk over `image` (raw), `grow_mib` larger: the guest writes there and the
    image stays as built."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(Path(image).resolve()),
         str(disk)],
        check=True,
        timeout=60,
    )
    if grow_mib:
        subprocess.run(["qemu-img", "resize", "-q", str(disk), f"+{grow_mib}M"], check=True,
                       timeout=60)
    return disk


class Vm:
    def __init__(
        self,
        disk: Path,
        *,
        log: Path,
        box_port: int | None = None,
        pacs_port: int | None = None,
        vars_fd: Path | None = None,
        relay: str = "cmd",
        extra_disks: tuple[Path, ...] = (),
    ) -> None:
        self.disk = Path(disk)
        self.log_path = Path(log)
        self.box_port = box_port
        self.pacs_port = pacs_port
        self.relay = relay
        self.extra_disks = tuple(extra_disks)
        self._tmp = Path(tempfile.mkdtemp(prefix="fluxbox-vm-"))
        self.vars_fd = vars_fd or self._tmp / "vars.fd"
        if not self.vars_fd.exists():
            shutil.copy(OVMF_VARS, self.vars_fd)
        self.child = None
        self.t0 = 0.0

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> Vm:
        import pexpect

        cmd = qemu_command(
            self.disk,
            self.vars_fd,
            box_port=self.box_port,
            pacs_port=self.pacs_port,
            relay=self.relay,
            extra_disks=self.extra_disks,
        )
        # kept open for the life of the VM (pexpect writes to it); closed in child_close()
        self._log = open(self.log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._log.write(f"\n#### {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n")
        self.t0 = time.monotonic()
        self.child = pexpect.spawn(
            cmd[0],
            cmd[1:],
            encoding="utf-8",
            codec_errors="replace",
            timeout=30,
            preexec_fn=_pdeathsig,
            dimensions=(50, 250),
        )
        self.child.logfile_read = self._log
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def kill(self) -> None:
        """Pull the plug: SIGKILL to QEMU, no shutdown of the guest."""
        if self.child is not None and self.child.isalive():
            with contextlib.suppress(Exception):
                os.killpg(self.child.pid, signal.SIGKILL)
            self.child.terminate(force=True)
        self.child_close()

    def child_close(self) -> None:
        if self.child is not None:
            with contextlib.suppress(Exception):
                self.child.close(force=True)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def wait_exit(self, timeout_s: float) -> bool:
        """Wait for QEMU to end by itself (with -no-reboot a guest reboot ends it): True if it
        did within timeout_s. The console is read meanwhile (into the log)."""
        import pexpect

        if self.child is None:
            return True
        try:
            self.child.expect(pexpect.EOF, timeout=timeout_s)
            return True
        except pexpect.TIMEOUT:
            return False

    def poweroff(self, timeout_s: float = 90) -> bool:
        """A clean shutdown; falls back to kill() after timeout_s."""
        import pexpect

        if self.child is None or not self.child.isalive():
            return False
        try:
            self.child.sendline("systemctl poweroff")
            self.child.expect(pexpect.EOF, timeout=timeout_s)
            return True
        except Exception:
            return False
        finally:
            self.kill()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Vm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- console ------------------------------------------------------------------------

    def expect(self, pattern: str, timeout_s: float) -> re.Match:
        import pexpect

        try:
            self.child.expect(pattern, timeout=timeout_s)
        except pexpect.TIMEOUT:
            raise VmError(
                f"no {pattern!r} on the serial console within {timeout_s:.0f} s "
                f"(log: {self.log_path})"
            ) from None
        except pexpect.EOF:
            raise VmError(
                f"QEMU exited while waiting for {pattern!r} (log: {self.log_path})"
            ) from None
        return self.child.match

    def login(self, timeout_s: float = 240) -> float:
        """Wait for the autologin shell on ttyS0; quiet the kernel on the console. Returns
        the seconds since QEMU started."""
        self.expect(r"Linux version", timeout_s)
        self.expect(PROMPT, timeout_s)
        took = self.elapsed()
        self.sh(
            "dmesg -n 1; stty -echo cols 250; export SYSTEMD_PAGER= PAGER=cat SYSTEMD_COLORS=0", 30
        )
        return took

    def sh(self, command: str, timeout_s: float = 60, check: bool = True) -> str:
        """Run a shell command as root in the guest; its output (stdout and stderr)."""
        tag = uuid.uuid4().hex[:12]
        # the marker as typed differs from the marker as printed: the echo never matches
        self.child.sendline(f"{command} 2>&1; echo __END_{tag[:6]}''{tag[6:]}__ $?")
        self.expect(rf"__END_{tag}__ (\d+)\r*\n", timeout_s)
        status = int(self.child.match.group(1))
        out = self.child.before
        self.expect(PROMPT, 30)  # the next prompt, so that the next command's output starts clean
        out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).replace("\r", "")
        lines = [ln for ln in out.split("\n") if f"__END_{tag[:6]}" not in ln]
        text = "\n".join(lines).strip("\n")
        if check and status != 0:
            raise VmError(f"guest command failed ({status}): {command}\n{text[-2000:]}")
        return text


def main() -> int:
    ap = argparse.ArgumentParser(description="Boot a Flux Box disk image in QEMU (TCG, UEFI).")
    ap.add_argument("disk", type=Path)
    ap.add_argument(
        "--box-port",
        type=int,
        default=11104,
        help="host port forwarded to the box's port 104 (default 11104)",
    )
    ap.add_argument(
        "--pacs-port",
        type=int,
        default=None,
        help=f"host port the guest reaches as {GUEST_PACS_ADDR}:{GUEST_PACS_PORT}",
    )
    ap.add_argument("--snapshot", action="store_true", help="discard the guest's writes")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fluxbox-vm-"))
    try:
        shutil.copy(OVMF_VARS, tmp / "vars.fd")
        cmd = qemu_command(
            args.disk.resolve(), tmp / "vars.fd", box_port=args.box_port, pacs_port=args.pacs_port
        )
        if args.snapshot:
            cmd.append("-snapshot")
        print("$ " + " ".join(cmd), file=sys.stderr)
        print("(Ctrl-A X quits QEMU)", file=sys.stderr)
        return subprocess.call(cmd)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
