"""The A/B update test: install signed RAUC bundles on the test image in QEMU and boot them.

    .venv/bin/python image/updatetest.py [--image build/image/fluxbox-test.img]
        [--bundle build/image/fluxbox-update.raucb] [--broken build/image/fluxbox-broken.raucb]

The bundles (made by `make image-update-test`, image/rauc/testslot.sh) carry the test slot
with another IMAGE_VERSION; the broken one also has an appliance that cannot start.

1. boot slot A (the image's version); store a study; a tampered copy of the bundle is
   refused; `rauc install` the bundle into slot B; RAUC's custom backend makes B the
   one-shot next boot;
2. boot B: the bundle's version runs the appliance with the study it had; the boot check
   (fluxbox-mark-good.service) finds the appliance healthy and makes B the default;
   install the broken bundle into slot A;
3. boot A (on trial): the appliance fails, the boot check marks A bad and reboots by itself
   (with -no-reboot QEMU ends);
4. boot again: slot B (the last good one), with its version and the study; A is marked bad
   and the journal (kept on the data partition) says why.

Every wait is bounded; QEMU is killed on every exit path. Results in build/image/update-test/.
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

from qemu import OVMF_VARS, Vm, VmError, overlay  # noqa: E402
from vmtest import Check, status_json, wait_box_active  # noqa: E402

from appliance.demo.synthetic import write_ct_study  # noqa: E402
from tests.peers import free_port, peer_env, storescu_profile  # noqa: E402

BOOTLOADER = "/usr/lib/fluxbox/rauc-bootloader"
# the guest's view of the bundles: (device, size); the test hands them over as raw disks
BUNDLE_DEV, BROKEN_DEV = "/dev/vdb", "/dev/vdc"


def booted_slot(vm: Vm) -> str:
    return vm.sh("sed -n 's/.*rauc\\.slot=\\([A-Z]\\).*/\\1/p' /proc/cmdline").strip()


def bundle_version(bundle: Path) -> str:
    """The version in a bundle's manifest, as the build wrote it (plain text in the bundle)."""
    r = subprocess.run(
        ["unsquashfs", "-cat", str(bundle), "manifest.raucm"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    for line in r.stdout.splitlines():
        if line.startswith("version="):
            return line.removeprefix("version=").strip()
    raise ValueError(f"no version in {bundle}'s manifest")


def as_disk(bundle: Path, disk: Path) -> int:
    """Copy a bundle into a raw disk file (padded to whole MiB); returns the bundle's size."""
    size = bundle.stat().st_size
    shutil.copyfile(bundle, disk)
    os.truncate(disk, (size + (1 << 20) - 1) // (1 << 20) * (1 << 20))
    return size


def firmware(vm: Vm) -> str | None:
    return (status_json(vm).get("version") or {}).get("firmware")


def study_count(vm: Vm) -> str:
    count = "python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'"
    return vm.sh(f"fluxbox studies --json | {count}").strip().splitlines()[-1]


def boot_check_done(vm: Vm, timeout_s: int) -> str:
    """Wait for fluxbox-mark-good.service's verdict; its journal lines."""
    vm.sh(
        f"timeout {timeout_s} sh -c 'until [ \"$(systemctl show -p SubState --value "
        f"fluxbox-mark-good.service)\" = exited ]; do sleep 2; done'",
        timeout_s + 15,
        check=False,
    )
    return vm.sh("journalctl -b -u fluxbox-mark-good.service -q --no-pager -o cat", check=False)


def install(vm: Vm, check: Check, dev: str, size: int, name: str, slot: str) -> None:
    t = time.monotonic()
    vm.sh(f"head -c {size} {dev} > /data/update.raucb", 300)
    out = vm.sh("rauc install /data/update.raucb", 900, check=False)
    done = out.rstrip().endswith("succeeded")
    check.ok(f"rauc install {name} into slot {slot}", done, out[-600:])
    check.time(f"rauc install {name}", time.monotonic() - t)
    vm.sh("rm -f /data/update.raucb")
    primary = vm.sh(f"{BOOTLOADER} get-primary").strip()
    check.ok(f"next boot: slot {slot} (one-shot)", primary == slot, primary)


def refuse_tampered(vm: Vm, check: Check, size: int) -> None:
    """A bundle with one byte changed in its signature must not install."""
    vm.sh(
        f"head -c {size} {BUNDLE_DEV} > /data/tampered.raucb && "
        f"printf X | dd of=/data/tampered.raucb bs=1 seek={size - 300} conv=notrunc status=none",
        300,
    )
    out = vm.sh("rauc install /data/tampered.raucb; echo exit=$?", 300, check=False)
    vm.sh("rm -f /data/tampered.raucb")
    primary = vm.sh(f"{BOOTLOADER} get-primary").strip()
    check.ok(
        "a tampered bundle is refused",
        "exit=0" not in out and primary == booted_slot(vm),
        out.strip().splitlines()[-2][-200:] if len(out.strip().splitlines()) > 1 else out,
    )


def store_study(check: Check, study: list[Path], port: int, profile: Path) -> None:
    profile.write_text(storescu_profile(study))
    r = subprocess.run(
        ["storescu", "--aetitle", "MODALITY", "--call", "FLUXBOX", "--config-file", str(profile),
         "Default", "127.0.0.1", str(port), *map(str, study)],
        env=peer_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    check.ok("a study stored before the update", r.returncode == 0, r.stderr[-300:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=REPO / "build/image/fluxbox-test.img")
    ap.add_argument("--bundle", type=Path, default=REPO / "build/image/fluxbox-update.raucb")
    ap.add_argument("--broken", type=Path, default=REPO / "build/image/fluxbox-broken.raucb")
    ap.add_argument("--workdir", type=Path, default=REPO / "build/image/update-test")
    args = ap.parse_args()
    for f in (args.image, args.bundle, args.broken):
        if not f.exists():
            print(f"updatetest: {f} missing: run `make image-update-test`", file=sys.stderr)
            return 2
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    serial = args.workdir / "serial.log"
    check = Check()
    vm: Vm | None = None
    tmp = Path(tempfile.mkdtemp(prefix="fluxbox-updatetest-"))
    disk = args.workdir / "disk.qcow2"
    disks = (args.workdir / "bundle.disk", args.workdir / "broken.disk")
    try:
        overlay(args.image, disk)
        size = as_disk(args.bundle, disks[0])
        broken_size = as_disk(args.broken, disks[1])
        new_version, broken_version = bundle_version(args.bundle), bundle_version(args.broken)
        vars_fd = args.workdir / "vars.fd"  # the UEFI variables live on across the boots
        shutil.copy(OVMF_VARS, vars_fd)
        box_port = free_port()
        study = write_ct_study(tmp / "study", slices=3, rows=64, cols=64, seed=21,
                               patient_id="UPD1")

        def start() -> Vm:
            return Vm(disk, log=serial, box_port=box_port, vars_fd=vars_fd,
                      extra_disks=disks).start()

        def boot(name: str) -> Vm:
            v = start()
            check.time(f"{name}: shell on the serial console", v.login(300))
            wait_box_active(v, 240)
            check.time(f"{name}: fluxbox.service active", v.elapsed())
            return v

        # ------------------------------------------------------------ 1. slot A, install
        vm = boot("boot 1")
        check.ok("boot 1 runs slot A", booted_slot(vm) == "A")
        old_version = firmware(vm)
        check.ok("the image's version", bool(old_version) and old_version != new_version,
                 f"{old_version} (bundle: {new_version})")
        store_study(check, study, box_port, tmp / "p.cfg")
        refuse_tampered(vm, check, size)
        install(vm, check, BUNDLE_DEV, size, "the update", "B")
        check.ok("clean power-off", vm.poweroff(120))
        vm.close()

        # ------------------------------------------------------------ 2. slot B on trial
        vm = boot("boot 2")
        check.ok("boot 2 runs slot B", booted_slot(vm) == "B")
        version = firmware(vm)
        check.ok("slot B runs the bundle's version", version == new_version, str(version))
        check.ok("the study is still there after the update", study_count(vm) == "1")
        verdict = boot_check_done(vm, 240)
        state = vm.sh(
            f"{BOOTLOADER} get-primary; {BOOTLOADER} get-state B; "
            "grep ^default /run/fluxbox-esp/loader/loader.conf",
            check=False,
        )
        check.ok(
            "slot B found healthy and made the default",
            state.split() == ["B", "good", "default", "fluxbox-b.conf"] and "is good" in verdict,
            f"{state.split()} {verdict.strip().splitlines()[-1:] if verdict.strip() else ''}",
        )
        status = vm.sh("rauc status --detailed --output-format=json", 120, check=False)
        with contextlib.suppress(ValueError):
            st = json.loads(status[status.index("{") : status.rindex("}") + 1])
            check.ok("rauc status: booted B", st.get("booted") == "B",
                     f"booted={st.get('booted')} boot_primary={st.get('boot_primary')}")
        install(vm, check, BROKEN_DEV, broken_size, "a broken update", "A")
        check.ok("clean power-off", vm.poweroff(120))
        vm.close()

        # ------------------------------------------------------------ 3. broken slot A
        vm = start()  # no login: the box may reboot at any moment
        m = vm.expect(r"Command line: [^\r\n]*rauc\.slot=([AB])", 300)
        check.ok("boot 3 runs slot A (on trial)", m.group(1) == "A", m.group(0)[-120:])
        rebooted = vm.wait_exit(420)
        check.ok("the box gave up on slot A and rebooted by itself", rebooted,
                 f"{vm.elapsed():.0f} s after power-on")
        check.time("boot 3: up to the reboot", vm.elapsed())
        vm.close()

        # ------------------------------------------------------------ 4. back on slot B
        vm = boot("boot 4")
        check.ok("boot 4 runs slot B again (fallback)", booted_slot(vm) == "B")
        version = firmware(vm)
        check.ok("slot B still runs its version", version == new_version,
                 f"{version} (broken bundle: {broken_version})")
        check.ok("the study is still there after the fallback", study_count(vm) == "1")
        why = vm.sh("journalctl -b -1 -u fluxbox-mark-good.service -q --no-pager -o cat",
                    check=False)
        check.ok("the journal says why slot A was given up", "slot A is bad" in why,
                 next((ln for ln in why.splitlines() if "slot A is bad" in ln), why[-300:]))
        state = vm.sh(f"{BOOTLOADER} get-state A; {BOOTLOADER} get-primary", check=False)
        check.ok("slot A marked bad, B stays primary", state.split() == ["bad", "B"],
                 state.replace("\n", " "))
        check.ok("clean power-off", vm.poweroff(120))
    except (VmError, subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError) as exc:
        check.ok("test ran to the end", False, f"{type(exc).__name__}: {exc}")
    finally:
        if vm is not None:
            vm.close()
        shutil.rmtree(tmp, ignore_errors=True)
        for f in (disk, *disks):
            with contextlib.suppress(OSError):
                os.unlink(f)
    return check.finish(args.workdir, "update test", serial)


if __name__ == "__main__":
    sys.exit(main())
