"""Closed to strangers (issue 12, item 7): the box as a real process in a network namespace
of its own, with two sides, each a namespace joined to it by a veth pair:

    LAN  (the modality)    192.168.77.2  <->  lan0  192.168.77.1   box
    Wi-Fi (hospital host)  10.77.0.2     <->  wifi0 10.77.0.1      box

The Wi-Fi side also routes the LAN's addresses through the box, as a stranger would. The
box listens on `lan0` only and refuses unknown calling AE titles; the modality's services
(C-ECHO, C-STORE, worklist C-FIND, MPPS) are asked for with pynetdicom from each side.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    Verification,
)

from appliance.config import load_config
from appliance.keystore import FileKeystore
from appliance.statuses import NOT_AUTHORIZED
from appliance.store import Store
from appliance.worklist.entries import encode_entry
from tests.boxproc import BoxProcess, box_toml, site_toml
from tests.contract.conftest import in_netns, unavailable

REPO = Path(__file__).resolve().parents[2]
BASE_RULESET = REPO / "image" / "rootfs" / "etc" / "nftables.conf"
BOX_LAN, MODALITY = "192.168.77.1", "192.168.77.2"
BOX_WIFI, STRANGER = "10.77.0.1", "10.77.0.2"
PORT = 11112
METRICS_PORT = 9100
UNREACHABLE, REJECTED = "unreachable", "rejected"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


@pytest.fixture
def vehicle() -> Iterator[dict[str, str]]:
    """The three namespaces by role; lan0 gets its address only if the test asks."""
    if not shutil.which("ip"):
        unavailable("ip is not installed (Debian package: iproute2)")
    names = {role: f"fxs-{os.getpid()}-{role}" for role in ("box", "lan", "wifi")}
    made = []
    try:
        for name in names.values():
            if _ip("netns", "add", name, check=False).returncode != 0:
                unavailable("cannot create a network namespace (root needed)")
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        box, lan, wifi = names["box"], names["lan"], names["wifi"]
        _ip("-n", box, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
            "netns", lan)
        _ip("-n", box, "link", "add", "wifi0", "type", "veth", "peer", "name", "eth0",
            "netns", wifi)
        _ip("-n", lan, "addr", "add", f"{MODALITY}/24", "dev", "eth0")
        _ip("-n", box, "addr", "add", f"{BOX_WIFI}/24", "dev", "wifi0")
        _ip("-n", wifi, "addr", "add", f"{STRANGER}/24", "dev", "eth0")
        for ns, dev in ((box, "lan0"), (box, "wifi0"), (lan, "eth0"), (wifi, "eth0")):
            _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", wifi, "route", "add", "192.168.77.0/24", "via", BOX_WIFI)
        yield names
    finally:
        for name in made:
            _ip("netns", "del", name, check=False)


def give_lan_its_address(names: dict[str, str]) -> None:
    _ip("-n", names["box"], "addr", "add", f"{BOX_LAN}/24", "dev", "lan0")


def _worklist_entry() -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "Doe^Jane", "PID-77", "ACC-77"
    ds.PatientBirthDate = "19700101"
    step = Dataset()
    step.Modality, step.ScheduledStationAETitle = "CT", "CT1"
    step.ScheduledProcedureStepStartDate = time.strftime("%Y%m%d")
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def start_box(tmp_path: Path, names: dict[str, str]) -> BoxProcess:
    """The box in its namespace: listens on lan0, admits CT1 (a modality) and PACS (its
    reports only); its worklist cache already holds one order of site a."""
    data_dir = tmp_path / "data"
    store = Store(data_dir, FileKeystore(Path(f"{data_dir}-key")).load_or_create())
    store.replace_worklist("a", [encode_entry(_worklist_entry(), [])], time.time(), "ok")
    store.close()
    sites = site_toml("a", [{"name": "pacs", "ae_title": "PACS", "host": "192.168.77.9",
                             "port": 104, "commitment": True}])
    box = ('listen = ["lan0"]\nunknown_callers = "refuse"\n'
           f'allowed_calling_aets = ["CT1"]\nmetrics_listen = "127.0.0.1:{METRICS_PORT}"')
    config = box_toml(data_dir, PORT, sites, box=box)
    command = ["ip", "netns", "exec", names["box"], sys.executable, "-m", "appliance"]
    return BoxProcess(config, tmp_path, command=command)  # `with` starts it


def ask(ns: str, host: str, calling_aet: str, service: str, timeout_s: float = 3.0):
    """One request from namespace `ns` as `calling_aet`: UNREACHABLE, REJECTED, or the
    final status (for "find": the status and the number of entries)."""
    ae = AE(ae_title=calling_aet)
    ae.connection_timeout = ae.acse_timeout = timeout_s
    ae.dimse_timeout = ae.network_timeout = 10
    for context in (Verification, CTImageStorage, ModalityWorklistInformationFind,
                    ModalityPerformedProcedureStep):
        ae.add_requested_context(context)
    with in_netns(ns):
        assoc = ae.associate(host, PORT, ae_title="FLUXBOX")
        if assoc.is_rejected:
            return REJECTED
        if not assoc.is_established:
            return UNREACHABLE
        try:
            return _request(assoc, service)
        finally:
            assoc.release()


def _request(assoc, service: str):
    if service == "echo":
        return assoc.send_c_echo().Status
    if service == "store":
        return assoc.send_c_store(_ct_instance()).Status
    if service == "mpps":
        ds = Dataset()
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, generate_uid())
        return status.Status
    query = Dataset()
    query.PatientName, query.PatientID = "", ""
    query.ScheduledProcedureStepSequence = [Dataset()]
    answers = list(assoc.send_c_find(query, ModalityWorklistInformationFind))
    entries = sum(1 for status, ds in answers if status and status.Status in (0xFF00, 0xFF01))
    return answers[-1][0].Status, entries


def _ct_instance() -> Dataset:
    """pydicom's small CT, as a new instance each time."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    return ds


def test_the_lan_is_served_and_the_hospital_wifi_reaches_nothing(vehicle, tmp_path):
    give_lan_its_address(vehicle)
    lan, wifi = vehicle["lan"], vehicle["wifi"]
    with start_box(tmp_path, vehicle) as box:
        # the modality on the LAN: every service
        assert ask(lan, BOX_LAN, "CT1", "echo") == 0x0000
        assert ask(lan, BOX_LAN, "CT1", "store") == 0x0000
        assert ask(lan, BOX_LAN, "CT1", "find") == (0x0000, 1)
        assert ask(lan, BOX_LAN, "CT1", "mpps") == 0x0000
        # a stranger's AE title, even on the LAN: A-ASSOCIATE-RJ
        assert ask(lan, BOX_LAN, "STRANGER", "find") == REJECTED
        # the PACS's AE title is admitted for its commitment reports, and only for those
        assert ask(lan, BOX_LAN, "PACS", "find") == (NOT_AUTHORIZED, 0)
        assert ask(lan, BOX_LAN, "PACS", "store") == NOT_AUTHORIZED
        assert ask(lan, BOX_LAN, "PACS", "mpps") == NOT_AUTHORIZED
        # the hospital Wi-Fi: nothing listens on the box's address there
        for service in ("echo", "store", "find", "mpps"):
            assert ask(wifi, BOX_WIFI, "CT1", service) == UNREACHABLE, service
        # metrics on the box's loopback only; the control socket is for the box's user only
        assert not _tcp_connects(lan, BOX_LAN, METRICS_PORT)
        assert _tcp_connects(vehicle["box"], "127.0.0.1", METRICS_PORT)
        assert stat.S_IMODE((box.data_dir / "control.sock").stat().st_mode) == 0o600
        status = box.status()
        assert status["listening"]["dicom"] == {"addresses": [BOX_LAN], "waiting": []}
        assert status["listening"]["metrics"] == {"addresses": ["127.0.0.1"], "waiting": []}
        assert status["receiving"]["stored"] == 1  # the one instance the modality sent
        (study,) = box.studies()
        assert study["instances"] == 1


def test_a_lan_without_an_address_is_waited_for_with_attention(vehicle, tmp_path):
    with start_box(tmp_path, vehicle) as box:
        status = box.wait_for(lambda: box.status()["listening"]["dicom"]["waiting"], 20,
                              "lan0 reported without an address")
        status = box.status()
        assert status["health"] == "attention"
        assert status["listening"]["dicom"] == {"addresses": [], "waiting": ["lan0"]}
        assert any("lan0" in error for error in status["errors"])
        give_lan_its_address(vehicle)
        box.wait_for(lambda: box.status()["listening"]["dicom"]["addresses"] == [BOX_LAN],
                     30, "the box listening on lan0's new address")
        assert ask(vehicle["lan"], BOX_LAN, "CT1", "echo") == 0x0000
        assert box.status()["listening"]["dicom"]["waiting"] == []


def _tcp_connects(ns: str, host: str, port: int) -> bool:
    with in_netns(ns), socket.socket() as sock:
        sock.settimeout(3)
        return sock.connect_ex((host, port)) == 0


def _nft(ns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=stdin,
                          capture_output=True, text=True, timeout=20)


def _firewall_rules(box: BoxProcess) -> str:
    return subprocess.run([sys.executable, "-m", "appliance", "firewall", "--config",
                           str(box.config_path)], capture_output=True, text=True,
                          timeout=60, check=True).stdout


def test_the_image_firewall_drops_the_wifi_even_routed_to_the_lan_address(vehicle, tmp_path):
    if not shutil.which("nft"):
        unavailable("nft is not installed (Debian package: nftables)")
    give_lan_its_address(vehicle)
    lan, wifi, box_ns = vehicle["lan"], vehicle["wifi"], vehicle["box"]
    with start_box(tmp_path, vehicle) as box:
        # Without the firewall Linux answers a LAN address on any interface: a stranger who
        # guessed a modality's AE title gets in. This is what the firewall is for.
        assert ask(wifi, BOX_LAN, "CT1", "echo") == 0x0000
        loaded = _nft(box_ns, "-f", str(BASE_RULESET))
        if loaded.returncode != 0:
            unavailable(f"nftables cannot load in a namespace here: {loaded.stderr.strip()}")
        applied = _nft(box_ns, "-f", "-", stdin=_firewall_rules(box))
        assert applied.returncode == 0, applied.stderr
        for service in ("echo", "store", "find", "mpps"):
            assert ask(wifi, BOX_LAN, "CT1", service, timeout_s=2) == UNREACHABLE, service
        assert ask(lan, BOX_LAN, "CT1", "echo") == 0x0000
        assert ask(lan, BOX_LAN, "CT1", "find") == (0x0000, 1)


def test_the_image_ruleset_and_the_rules_of_its_default_config_parse(tmp_path):
    """`nft -c` (check only) on the shipped ruleset and on the rules `fluxbox firewall`
    makes from the image's default config, in a namespace of the test's own."""
    if not shutil.which("nft"):
        unavailable("nft is not installed (Debian package: nftables)")
    config = tmp_path / "fluxbox.toml"
    subprocess.run([sys.executable, str(REPO / "image" / "imagetool.py"), "default-config",
                    str(REPO / "appliance" / "default.toml")], stdout=config.open("w"),
                   check=True, timeout=60)
    rules = subprocess.run([sys.executable, "-m", "appliance", "firewall", "--config",
                            str(config)], capture_output=True, text=True, timeout=60,
                           check=True).stdout
    assert 'iifname "lan0" tcp dport 104 accept' in rules
    image_box = load_config(config).box
    assert image_box.listen == ("lan0",) and image_box.refuses_unknown
    ns = f"fxs-{os.getpid()}-nft"
    if _ip("netns", "add", ns, check=False).returncode != 0:
        unavailable("cannot create a network namespace (root needed)")
    try:
        checked = _nft(ns, "-c", "-f", "-", stdin=BASE_RULESET.read_text() + rules)
        assert checked.returncode == 0, checked.stderr
        broken = _nft(ns, "-c", "-f", "-", stdin=BASE_RULESET.read_text() + "add rule x\n")
        assert broken.returncode != 0  # the check can fail
    finally:
        _ip("netns", "del", ns, check=False)


def test_refusing_unknown_callers_with_none_named_admits_nobody(make_box):
    """pynetdicom takes an empty list for "anyone": the box must not (loopback, no root)."""
    box = make_box([{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 9}],
                   box='unknown_callers = "refuse"').start()
    ae = AE(ae_title="CT1")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", box.port, ae_title="FLUXBOX")
    assert assoc.is_rejected
    assert "open to any caller" not in box.log()


def test_an_open_box_says_so_once_at_start(make_box):
    """The embedded default (PRODUCT.md: an empty list lets any modality in, every address)
    stays open, and the log tells an installer so, naming the settings that close it."""
    box = make_box([{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1",
                     "port": 9}]).start()
    warnings = [line for line in box.log().splitlines() if "open to any caller" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], warnings
    assert "box.listen,box.unknown_callers" in warnings[0]
