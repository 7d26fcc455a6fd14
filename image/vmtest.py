"""The image test: boot the test image in QEMU and use it as a modality and a PACS would.

    .venv/bin/python image/vmtest.py [--image build/image/fluxbox-test.img]

1. boot (UEFI, systemd-boot, slot A) until `fluxbox.service` is active; the serial console
   logs root in (test image only);
2. check the image: read-only root, data directories bound from the data partition and
   owned by `fluxbox`, the unit's sandbox, the data partition grown to fill the disk (the
   test's disk is 1 GiB larger than the image), the hardware watchdog, the journal on the
   data partition, no failed units;
3. send a small study with DCMTK storescu to the box's port 104 (forwarded from the host);
   every instance must get Success; `fluxbox status --json` in the guest must read healthy;
   the study must reach an Orthanc on the host (the guest's PACS at 10.0.2.100:11113);
   status names the firmware's version; a real kernel LED (the emulated keyboard's scroll
   lock) set as box.status_led is steady on while the box is ok and on the heartbeat while
   the appliance is stopped (fluxbox-led.service); tty1 shows `fluxbox console`;
4. power cut: send a long study and kill QEMU in the middle of it; boot again; every
   instance storescu got Success for must reach Orthanc; the journal kept the boot before
   the cut and names no test patient.

Every wait is bounded; QEMU and Orthanc are killed on every exit path. Results go to
build/image/test/ (serial.log, result.json). Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "image"))

from pydicom import dcmread  # noqa: E402
from qemu import Vm, VmError, overlay  # noqa: E402

from appliance.demo.synthetic import write_ct_study  # noqa: E402
from tests.peers import (  # noqa: E402
    Orthanc,
    free_port,
    peer_env,
    storescu_profile,
    storescu_responses,
)

BOX_AET = "FLUXBOX"
DATA_MIB = 1024  # the data partition as image/mkdisk.sh makes it
GROW_DISK_MIB = 1024  # the test's disk is this much larger than the image
JOURNAL_SYNC_S = 15  # SyncIntervalSec in image/rootfs/etc/systemd/journald.conf.d/fluxbox.conf


class Check:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.results: list[dict] = []
        self.timings: dict[str, float] = {}

    def ok(self, name: str, passed: bool, detail: str = "") -> bool:
        self.results.append({"check": name, "passed": bool(passed), "detail": detail})
        print(f"{'PASS' if passed else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
        return passed

    def time(self, name: str, seconds: float | None = None) -> None:
        self.timings[name] = round(
            seconds if seconds is not None else time.monotonic() - self.t0, 1
        )
        print(f"  {self.timings[name]:7.1f} s  {name}", flush=True)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r["passed"] for r in self.results)

    def finish(self, workdir: Path, what: str, serial: Path) -> int:
        """Write result.json, print the verdict line, and return the exit status."""
        self.time("total")
        (workdir / "result.json").write_text(
            json.dumps(
                {"passed": self.passed, "checks": self.results, "timings_s": self.timings},
                indent=1,
            )
        )
        print(
            f"{what} {'passed' if self.passed else 'FAILED'} "
            f"({sum(r['passed'] for r in self.results)}/{len(self.results)} checks; "
            f"serial log {serial})"
        )
        return 0 if self.passed else 1


def wait_until(pred, timeout_s: float, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def echo_ok(port: int) -> bool:
    r = subprocess.run(
        ["echoscu", "-aec", BOX_AET, "-to", "5", "-ta", "5", "-td", "5", "127.0.0.1", str(port)],
        env=peer_env(),
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    return r.returncode == 0


def storescu_args(files: list[Path], port: int, profile: Path) -> list[str]:
    profile.write_text(storescu_profile(files))
    return [
        "storescu",
        "--verbose",
        "--aetitle",
        "MODALITY",
        "--call",
        BOX_AET,
        "--timeout",
        "15",
        "--acse-timeout",
        "30",
        "--dimse-timeout",
        "120",
        "--config-file",
        str(profile),
        "Default",
        "127.0.0.1",
        str(port),
        *map(str, files),
    ]


def uid_of(path: str | Path) -> str:
    return str(
        dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID
    )


def status_json(vm: Vm) -> dict:
    text = vm.sh("fluxbox status --json", 120)
    return json.loads(text[text.index("{") : text.rindex("}") + 1])


def wait_box_active(vm: Vm, timeout_s: float) -> None:
    vm.sh(
        f"timeout {int(timeout_s)} sh -c 'until systemctl is-active -q fluxbox.service; "
        f"do sleep 1; done'",
        timeout_s + 15,
    )


def led_state(vm: Vm, led: str) -> tuple[str, str, str]:
    """(the active trigger, brightness, max_brightness) of a kernel LED in the guest."""
    out = vm.sh(f"cd /sys/class/leds/{led} && cat trigger brightness max_brightness")
    trigger, brightness, top = (out.splitlines() + ["", "", ""])[:3]
    active = next((w.strip("[]") for w in trigger.split() if w.startswith("[")), "")
    return active, brightness.strip(), top.strip()


def check_status_led(vm: Vm, check: Check) -> None:
    """A real kernel LED (the emulated keyboard's scroll lock) as the status LED: steady on
    while the box is ok, the heartbeat trigger while the appliance is down."""
    led = vm.sh("ls /sys/class/leds | grep -m1 '::scrolllock$'", check=False).strip()
    if not check.ok("a kernel LED to use as the status LED", bool(led), led):
        return
    triggers = vm.sh(f"cat /sys/class/leds/{led}/trigger")
    check.ok(
        "the LED triggers the patterns use are loaded",
        all(name in triggers.replace("[", " ").replace("]", " ").split()
            for name in ("timer", "heartbeat")),
        triggers[-200:],
    )
    vm.sh(f"sed -i '/^\\[box\\]$/a status_led = \"{led}\"' /etc/fluxbox/fluxbox.toml && "
          "systemctl restart fluxbox-led")
    ok = wait_until(lambda: (s := led_state(vm, led))[0] == "none" and s[1] == s[2] and s, 30, 1)
    check.ok("LED steady on while the box is ok (fluxbox-led.service)", bool(ok),
             str(ok or led_state(vm, led)))
    vm.sh("systemctl stop fluxbox")
    down = wait_until(lambda: led_state(vm, led)[0] == "heartbeat", 30, 1)
    check.ok("LED on the heartbeat trigger while the appliance is down", bool(down),
             str(led_state(vm, led)))
    vm.sh("systemctl start fluxbox")
    wait_box_active(vm, 120)
    back = wait_until(lambda: led_state(vm, led)[0] == "none", 60, 1)
    check.ok("LED steady again once the appliance is back", bool(back), str(led_state(vm, led)))


def check_front_console(vm: Vm, check: Check) -> None:
    """tty1 shows `fluxbox console` (read back from the virtual terminal's screen memory)."""
    def screen() -> str:
        return vm.sh("cat /dev/vcs1 | tr -s ' '", check=False)

    shown = wait_until(lambda: "FLUX BOX" in (s := screen()) and "SITE test (fixed)" in s and s,
                       60, 2)
    state = vm.sh("systemctl is-active fluxbox-console@tty1.service getty@tty1.service",
                  check=False).split()
    check.ok(
        "tty1 shows the front-panel console (no login prompt there)",
        bool(shown) and state[:1] == ["active"] and "active" not in state[1:],
        f"units {state}; screen: {(shown or screen())[:160]!r}",
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=REPO / "build/image/fluxbox-test.img")
    ap.add_argument("--workdir", type=Path, default=REPO / "build/image/test")
    ap.add_argument(
        "--relay",
        choices=["cmd", "tcp"],
        default="cmd",
        help="guestfwd to the host PACS by a relay process per connection (cmd) or "
        "QEMU's own one-connection tcp chardev (tcp)",
    )
    ap.add_argument(
        "--cut-after", type=int, default=25, help="kill QEMU once storescu has this many successes"
    )
    args = ap.parse_args()
    if not args.image.exists():
        print(f"vmtest: {args.image} missing: run `make image` first", file=sys.stderr)
        return 2
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    serial = args.workdir / "serial.log"
    check = Check()
    vm: Vm | None = None
    orthanc = Orthanc(aet="ORTHANC")
    tmp = Path(tempfile.mkdtemp(prefix="fluxbox-vmtest-"))
    try:
        # a disk larger than the image: the first boot grows the data partition into it
        disk = overlay(args.image, args.workdir / "disk.qcow2", GROW_DISK_MIB)
        study1 = write_ct_study(
            tmp / "study1", slices=4, rows=64, cols=64, seed=11, patient_id="VMTEST1"
        )
        study2 = write_ct_study(
            tmp / "study2", slices=300, rows=64, cols=64, seed=12, patient_id="VMTEST2"
        )
        orthanc.start()
        box_port = free_port()

        # ---------------------------------------------------------------- 1. first boot
        def boot(name: str) -> Vm:
            v = Vm(disk, log=serial, box_port=box_port, pacs_port=orthanc.dicom_port,
                   relay=args.relay).start()
            check.time(f"{name}: shell on the serial console", v.login(300))
            wait_box_active(v, 240)
            check.time(f"{name}: fluxbox.service active", v.elapsed())
            return v

        vm = boot("first boot")
        active_at = time.monotonic()

        # ---------------------------------------------------------------- 2. the image
        mnt = vm.sh(
            "findmnt -no OPTIONS /; findmnt -no SOURCE,FSTYPE /var/lib/fluxbox; "
            "findmnt -no SOURCE /etc/fluxbox; findmnt -no FSTYPE /var"
        )
        lines = mnt.splitlines()
        check.ok("root file system read-only", lines[0].split(",")[0] == "ro", lines[0])
        check.ok(
            "store on the data partition", "/fluxbox]" in lines[1] and "ext4" in lines[1], lines[1]
        )
        check.ok("config on the data partition", "etc/fluxbox]" in lines[2], lines[2])
        check.ok("/var is a RAM overlay", lines[3].strip() == "overlay", lines[3])
        owners = vm.sh(
            "stat -c '%U %a %n' /var/lib/fluxbox /var/lib/fluxbox-key /var/lib/fluxbox-key/data.key"
        )
        check.ok(
            "data directories and key owned by fluxbox",
            all(ln.startswith("fluxbox ") for ln in owners.splitlines())
            and "fluxbox 600 /var/lib/fluxbox-key/data.key" in owners,
            owners.replace("\n", "; "),
        )
        unit = vm.sh(
            "systemctl show fluxbox.service -p Type -p User -p WatchdogUSec -p "
            "NRestarts -p ProtectSystem -p NoNewPrivileges -p AmbientCapabilities"
        )
        props = dict(ln.split("=", 1) for ln in unit.splitlines() if "=" in ln)
        check.ok(
            "service: notify, watchdog, user fluxbox, sandboxed",
            props.get("Type") == "notify"
            and props.get("User") == "fluxbox"
            and props.get("WatchdogUSec") not in (None, "0", "infinity")
            and props.get("ProtectSystem") == "strict"
            and props.get("NoNewPrivileges") == "yes"
            and "cap_net_bind_service" in props.get("AmbientCapabilities", ""),
            " ".join(f"{k}={v}" for k, v in sorted(props.items())),
        )
        enabled = vm.sh(
            "systemctl is-enabled NetworkManager ModemManager gpsd fluxbox "
            "fluxbox-firstboot 2>&1 | tr '\\n' ' '",
            check=False,
        )
        check.ok(
            "NetworkManager, ModemManager, gpsd, fluxbox enabled",
            enabled.split()[:4] == ["enabled"] * 4,
            enabled,
        )
        sizes = vm.sh(
            "lsblk -bno SIZE /dev/disk/by-partlabel/data; df -B1 --output=size /data | tail -1"
        ).split()
        check.ok(
            "data partition and its file system grown to the end of the disk",
            len(sizes) == 2 and min(map(int, sizes)) > (DATA_MIB + GROW_DISK_MIB * 3 // 4) << 20,
            f"partition {sizes[0] if sizes else '?'} B, file system "
            f"{sizes[-1] if sizes else '?'} B (image: {DATA_MIB} MiB, disk +{GROW_DISK_MIB} MiB)",
        )
        dog = vm.sh(
            "systemctl show -p RuntimeWatchdogUSec --value; ls /dev/watchdog0; "
            "findmnt -no SOURCE /var/log/journal",
            check=False,
        ).splitlines()
        check.ok(
            "hardware watchdog fed by systemd",
            len(dog) >= 2 and dog[0] not in ("0", "infinity") and dog[1] == "/dev/watchdog0",
            " ".join(dog[:2]),
        )
        check.ok(
            "journal on the data partition",
            len(dog) == 3 and dog[2].endswith("[/journal]"),
            dog[-1] if dog else "",
        )
        machine_id = vm.sh("cat /etc/machine-id").strip()
        check.ok(
            "the box's identity saved on the data partition",
            len(machine_id) == 32 and vm.sh("cat /data/etc/machine-id").strip() == machine_id,
            machine_id,
        )
        failed = vm.sh("systemctl --failed --no-legend --plain | sed 's/ .*//'", check=False)
        check.ok("no failed units", not failed.strip(), failed.replace("\n", " "))
        check.ok("config accepted", "ok" in vm.sh("fluxbox check-config /etc/fluxbox/fluxbox.toml"))

        # ---------------------------------------------------------------- 3. one study
        t = time.monotonic()
        check.ok("C-ECHO through the forwarded port", wait_until(lambda: echo_ok(box_port), 60, 2))
        r = subprocess.run(
            storescu_args(study1, box_port, tmp / "p1.cfg"),
            env=peer_env(),
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        got = storescu_responses((r.stdout + r.stderr).splitlines())
        check.ok(
            "storescu: every instance acknowledged with Success",
            len(got) == len(study1) and all(s == "Success" for _, s in got),
            f"{len(got)}/{len(study1)} answers, exit {r.returncode}",
        )
        check.time("study 1 stored", time.monotonic() - t)
        status = status_json(vm)
        firmware = (status.get("version") or {}).get("firmware") or ""
        check.ok(
            "fluxbox status --json: the firmware's version",
            firmware.startswith((status.get("version") or {}).get("appliance") or "?"),
            f"version={status.get('version')}",
        )
        check.ok(
            "fluxbox status --json: healthy",
            status.get("health") in ("ok", "sending")
            and (status.get("receiving") or {}).get("stored", len(study1)) >= len(study1),
            f"health={status.get('health')} site={status.get('site')} "
            f"queue={status.get('queue')} errors={status.get('errors')}",
        )
        want1 = {uid_of(p) for p in study1}
        t = time.monotonic()
        delivered = wait_until(lambda: want1 <= orthanc.sop_instance_uids(), 120, 2)
        check.ok(
            "study 1 delivered to the PACS on the host (guestfwd)",
            bool(delivered),
            f"{len(want1 & orthanc.sop_instance_uids())}/{len(want1)} in Orthanc",
        )
        check.time("study 1 delivered after storing", time.monotonic() - t)
        if delivered:
            status = wait_until(
                lambda: (s := status_json(vm))["health"] == "ok" and s, 60, 3
            ) or status_json(vm)
            check.ok(
                "fluxbox status --json: ok once delivered",
                status.get("health") == "ok",
                f"health={status.get('health')} queue={status.get('queue')}",
            )

        check_status_led(vm, check)
        check_front_console(vm, check)

        # ---------------------------------------------------------------- 4. power cut
        # journald writes to disk every 15 s (SyncIntervalSec): what the appliance logged
        # when it started must be older than that when the power goes
        time.sleep(max(0.0, active_at + JOURNAL_SYNC_S + 5 - time.monotonic()))
        t = time.monotonic()
        proc = subprocess.Popen(
            storescu_args(study2, box_port, tmp / "p2.cfg"),
            env=peer_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        lines: list[str] = []
        successes = 0
        deadline = time.monotonic() + 180
        cut = False
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("I: Received Store Response (Success"):
                successes += 1
            if successes >= args.cut_after or time.monotonic() > deadline:
                vm.kill()  # the power cut
                cut = True
                break
        if not cut:
            vm.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            rest, _ = proc.communicate(timeout=60)
            lines += (rest or "").splitlines()
        if proc.poll() is None:
            proc.kill()
        acked = [f for f, s in storescu_responses(lines) if s == "Success"]
        check.ok(
            "power cut in the middle of a study",
            cut and 0 < len(acked) < len(study2),
            f"QEMU killed after {len(acked)} of {len(study2)} instances were acknowledged",
        )
        check.time("study 2: sent until the cut", time.monotonic() - t)
        want2 = {uid_of(f) for f in acked}

        vm = boot("second boot")
        t = time.monotonic()
        have = wait_until(lambda: want2 <= orthanc.sop_instance_uids(), 240, 3)
        in_pacs = want2 & orthanc.sop_instance_uids()
        check.ok(
            "after the power cut every acknowledged instance is delivered",
            bool(have),
            f"{len(in_pacs)}/{len(want2)} acknowledged instances in Orthanc "
            f"({len(orthanc.sop_instance_uids() & {uid_of(p) for p in study2})} of study 2 in all)",
        )
        check.time("study 2 delivered after the second boot", time.monotonic() - t)
        status = status_json(vm)
        check.ok(
            "fluxbox status --json after the power cut: not fault",
            status.get("health") in ("ok", "sending", "attention", "holding"),
            f"health={status.get('health')} errors={status.get('errors')}",
        )
        same_id = vm.sh("cat /etc/machine-id").strip()
        check.ok("the same identity after the power cut", same_id == machine_id, same_id)
        boots = vm.sh("journalctl --list-boots --no-pager | grep -c '^ *-1 '; "
                      "journalctl -b -1 -u fluxbox.service -q --no-pager | grep -c listening",
                      check=False)
        counts = [int(n) for n in boots.split() if n.isdigit()]
        check.ok(
            "the journal kept the boot before the power cut",
            len(counts) == 2 and counts[0] == 1 and counts[1] >= 1,  # the LED check restarts it
            f"boot -1 in the journal: {counts[0] if counts else '?'}, the appliance's start "
            f"logged there: {counts[1] if len(counts) > 1 else '?'}",
        )
        leaked = vm.sh(
            "journalctl -q --no-pager -o cat | grep -c -e VMTEST1 -e VMTEST2 -e SYNTHETIC",
            check=False,
        )
        check.ok(
            "no patient data in the journal",
            leaked.strip().splitlines()[-1:] == ["0"],
            f"{leaked.strip()} lines name a test patient",
        )
        t = time.monotonic()
        clean = vm.poweroff(120)
        check.ok("clean power-off", clean)
        check.time("power-off", time.monotonic() - t)
    except (VmError, subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        check.ok("test ran to the end", False, f"{type(exc).__name__}: {exc}")
    finally:
        if vm is not None:
            vm.close()
        orthanc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(args.workdir / "disk.qcow2")
    return check.finish(args.workdir, "image test", serial)


if __name__ == "__main__":
    sys.exit(main())
