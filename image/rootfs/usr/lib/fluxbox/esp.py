"""The ESP (systemd-boot) as RAUC sees it: which slot boots, and which slots are good.

    /loader/loader.conf          "default fluxbox-a.conf": the committed slot
    /loader/entries/fluxbox-X.conf, /fluxbox/x/{vmlinuz,initrd.img}: slot X's boot entry
    /fluxbox/x/bad               slot X is marked bad (RAUC set-state X bad)
    /fluxbox/x/trying            slot X was made primary and is on trial
    EFI variable LoaderEntryOneShot = fluxbox-x.conf: boot slot X once, then the default

A slot made primary is booted once. If it comes up and the appliance runs,
fluxbox-mark-good.service runs `rauc status mark-good`, which makes it the default. If
it does not come up, the next boot (a power cycle) is the old default again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import subprocess
from pathlib import Path

MOUNT = Path("/run/fluxbox-esp")
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
ONESHOT = Path(f"/sys/firmware/efi/efivars/LoaderEntryOneShot-{LOADER_GUID}")
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10


def mount() -> Path:
    """Mount the ESP read-write at /run/fluxbox-esp (once)."""
    MOUNT.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(MOUNT):
        subprocess.run(["mount", "-t", "vfat", "-o", "rw,nodev,nosuid,noexec,flush",
                        "/dev/disk/by-partlabel/esp", str(MOUNT)], check=True)
    return MOUNT


def entry(bootname: str) -> str:
    return f"fluxbox-{bootname.lower()}.conf"


def slot_dir(bootname: str) -> Path:
    return mount() / "fluxbox" / bootname.lower()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_slot() -> str:
    text = (mount() / "loader" / "loader.conf").read_text()
    m = re.search(r"^default\s+fluxbox-([a-z])\.conf\s*$", text, re.M)
    return m.group(1).upper() if m else "A"


def set_default(bootname: str) -> None:
    conf = mount() / "loader" / "loader.conf"
    lines = [ln for ln in conf.read_text().splitlines() if not ln.startswith("default ")]
    write_atomic(conf, ("\n".join([f"default {entry(bootname)}"] + lines) + "\n").encode())


def _immutable(path: Path, on: bool) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0)))[0]
            flags = flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags))
        finally:
            os.close(fd)


def oneshot() -> str | None:
    try:
        raw = ONESHOT.read_bytes()[4:]
    except OSError:
        return None
    m = re.fullmatch(r"fluxbox-([a-z])\.conf", raw.decode("utf-16-le").rstrip("\0"))
    return m.group(1).upper() if m else None


def set_oneshot(bootname: str | None) -> None:
    if ONESHOT.exists():
        _immutable(ONESHOT, False)
        ONESHOT.unlink()
    if bootname:
        data = struct.pack("<I", 7) + (entry(bootname) + "\0").encode("utf-16-le")
        with open(ONESHOT, "wb") as f:
            f.write(data)  # efivarfs wants the whole variable in one write


def booted() -> str | None:
    m = re.search(r"(?:^|\s)rauc\.slot=(\S+)", Path("/proc/cmdline").read_text())
    return m.group(1) if m else None
