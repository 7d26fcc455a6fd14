"""The A/B update test: install a signed RAUC bundle on the test image in QEMU and boot it.

    .venv/bin/python image/updatetest.py [--image build/image/fluxbox-test.img]
                                         [--bundle build/image/fluxbox.raucb]

1. boot slot A; store a study; hand the bundle to the guest (as a second disk) and
   `rauc install` it into slot B; RAUC's custom backend makes B the one-shot next boot;
2. boot again (same UEFI variables): slot B must come up, the appliance must run with the
   study it had, and fluxbox-mark-good.service must make B the default;
3. boot a third time: still slot B.

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

from qemu import OVMF_VARS, Vm, VmError  # noqa: E402
from vmtest import Check, wait_box_active  # noqa: E402

from appliance.synthetic import write_ct_study  # noqa: E402
from tests.peers import free_port, peer_env, storescu_profile  # noqa: E402


class BundleVm(Vm):
    """A Vm with the bundle attached as a second, read-only disk (/dev/vdb in the guest)."""

    def __init__(self, *a, bundle_disk: Path, **kw) -> None:
        super().__init__(*a, **kw)
        self.bundle_disk = bundle_disk

    def start(self) -> BundleVm:
        import qemu

        orig = qemu.qemu_command

        def cmd(*a, **kw):
            return orig(*a, **kw) + [
                "-drive",
                f"file={self.bundle_disk},format=raw,if=virtio,readonly=on",
            ]

        qemu.qemu_command = cmd
        try:
            return super().start()
        finally:
            qemu.qemu_command = orig


def booted_slot(vm: Vm) -> str:
    return vm.sh("sed -n 's/.*rauc\\.slot=\\([A-Z]\\).*/\\1/p' /proc/cmdline").strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=REPO / "build/image/fluxbox-test.img")
    ap.add_argument("--bundle", type=Path, default=REPO / "build/image/fluxbox-test.raucb")
    ap.add_argument("--workdir", type=Path, default=REPO / "build/image/update-test")
    args = ap.parse_args()
    for f in (args.image, args.bundle):
        if not f.exists():
            print(
                f"updatetest: {f} missing: run `make image-test` and `make bundle` first",
                file=sys.stderr,
            )
            return 2
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    serial = args.workdir / "serial.log"
    check = Check()
    vm: Vm | None = None
    tmp = Path(tempfile.mkdtemp(prefix="fluxbox-updatetest-"))
    try:
        disk = args.workdir / "disk.qcow2"
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                str(args.image.resolve()),
                str(disk),
            ],
            check=True,
            timeout=60,
        )
        bundle_size = args.bundle.stat().st_size
        bundle_disk = args.workdir / "bundle.disk"
        shutil.copyfile(args.bundle, bundle_disk)
        os.truncate(bundle_disk, (bundle_size + (1 << 20) - 1) // (1 << 20) * (1 << 20))
        vars_fd = args.workdir / "vars.fd"  # the UEFI variables live on across the boots
        shutil.copy(OVMF_VARS, vars_fd)
        box_port = free_port()
        study = write_ct_study(
            tmp / "study", slices=3, rows=64, cols=64, seed=21, patient_id="UPD1"
        )

        def boot(name: str) -> Vm:
            v = BundleVm(
                disk, log=serial, box_port=box_port, vars_fd=vars_fd, bundle_disk=bundle_disk
            ).start()
            check.time(f"{name}: shell on the serial console", v.login(300))
            wait_box_active(v, 240)
            check.time(f"{name}: fluxbox.service active", v.elapsed())
            return v

        # ------------------------------------------------------------ 1. slot A, install
        vm = boot("boot 1")
        check.ok("boot 1 runs slot A", booted_slot(vm) == "A")
        profile = tmp / "p.cfg"
        profile.write_text(storescu_profile(study))
        r = subprocess.run(
            [
                "storescu",
                "--aetitle",
                "MODALITY",
                "--call",
                "FLUXBOX",
                "--config-file",
                str(profile),
                "Default",
                "127.0.0.1",
                str(box_port),
                *map(str, study),
            ],
            env=peer_env(),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        check.ok("a study stored before the update", r.returncode == 0, r.stderr[-300:])
        t = time.monotonic()
        vm.sh(f"head -c {bundle_size} /dev/vdb > /data/update.raucb", 300)
        out = vm.sh("rauc install /data/update.raucb", 900, check=False)
        check.ok("rauc install into slot B", out.rstrip().endswith("succeeded"), out[-600:])
        check.time("rauc install", time.monotonic() - t)
        primary = vm.sh("/usr/lib/fluxbox/rauc-bootloader get-primary").strip()
        check.ok("next boot: slot B (one-shot)", primary == "B", primary)
        vm.sh("rm -f /data/update.raucb")
        check.ok("clean power-off", vm.poweroff(120))
        vm.close()

        # ------------------------------------------------------------ 2. slot B on trial
        vm = boot("boot 2")
        check.ok("boot 2 runs slot B", booted_slot(vm) == "B")
        count = "python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'"
        n = vm.sh(f"fluxbox studies --json | {count}")
        check.ok("the study is still there after the update", n.strip().splitlines()[-1] == "1", n)
        vm.sh(
            "timeout 120 sh -c 'until systemctl is-active -q fluxbox-mark-good.service || "
            "systemctl is-failed -q fluxbox-mark-good.service; do sleep 1; done'",
            130,
            check=False,
        )
        good = vm.sh(
            "systemctl is-active fluxbox-mark-good.service; "
            "/usr/lib/fluxbox/rauc-bootloader get-primary; "
            "/usr/lib/fluxbox/rauc-bootloader get-state B; "
            "grep ^default /run/fluxbox-esp/loader/loader.conf",
            check=False,
        )
        check.ok(
            "slot B marked good and made the default",
            good.split() == ["inactive", "B", "good", "default", "fluxbox-b.conf"]
            or good.split() == ["active", "B", "good", "default", "fluxbox-b.conf"],
            good.replace("\n", " "),
        )
        status = vm.sh("rauc status --detailed --output-format=json", 120, check=False)
        with contextlib.suppress(ValueError):
            st = json.loads(status[status.index("{") : status.rindex("}") + 1])
            check.ok(
                "rauc status: booted B",
                st.get("booted") == "B",
                f"booted={st.get('booted')} boot_primary={st.get('boot_primary')}",
            )
        check.ok("clean power-off", vm.poweroff(120))
        vm.close()

        # ------------------------------------------------------------ 3. still slot B
        vm = boot("boot 3")
        check.ok("boot 3 runs slot B (committed)", booted_slot(vm) == "B")
        check.ok("clean power-off", vm.poweroff(120))
    except (VmError, subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError) as exc:
        check.ok("test ran to the end", False, f"{type(exc).__name__}: {exc}")
    finally:
        if vm is not None:
            vm.close()
        shutil.rmtree(tmp, ignore_errors=True)
        for f in ("disk.qcow2", "bundle.disk"):
            with contextlib.suppress(OSError):
                os.unlink(args.workdir / f)
    return check.finish(args.workdir, "update test", serial)


if __name__ == "__main__":
    sys.exit(main())
