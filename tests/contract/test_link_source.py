"""LinkSource contract: the fake, the kernel's view and NetworkManager (dbusmock) alike.

Each implementation's test class provides a `rig` fixture: the source and the links its
stand-in is known to have ({interface: link class}). Implementation-specific behaviour
(namespaces, sysfs, NetworkManager scenes) follows in classes of their own.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from appliance.signals import CELLULAR, LINK_CLASSES, WIFI, WIRED, Link, Links
from hw.network import (
    KernelLinks,
    NetworkManagerLinks,
    StaticLinks,
    best_link_source,
    class_map,
    default_routes,
    neighbour_mac,
    route_interface,
)
from hw.network.kernel import _parse_route_get

ROOT = Path(__file__).resolve().parents[2]


def by_interface(links: Links) -> dict[str, Link]:
    return {link.interface: link for link in links.links}


class LinkSourceContract:
    """What every LinkSource promises."""

    @pytest.fixture
    def rig(self) -> tuple[Any, dict[str, str]]:
        raise NotImplementedError

    def test_links_are_well_formed(self, rig):
        source, _ = rig
        links = source.links()
        assert isinstance(links, Links)
        assert abs(links.observed_at - time.time()) < 5
        for link in links.links:
            assert isinstance(link, Link)
            assert link.interface and isinstance(link.interface, str)
            assert link.link_class in LINK_CLASSES
            for address in link.addresses:
                ipaddress.ip_interface(address)
            if link.gateway is not None:
                ipaddress.ip_address(link.gateway)

    def test_known_links_have_their_class(self, rig):
        source, expected = rig
        found = {name: link.link_class for name, link in by_interface(source.links()).items()}
        assert {name: found.get(name) for name in expected} == expected

    def test_interfaces_unique_and_one_primary_at_most(self, rig):
        source, _ = rig
        links = source.links().links
        assert len({link.interface for link in links}) == len(links)
        assert sum(link.primary for link in links) <= 1

    def test_repeated_reads_agree(self, rig):
        source, _ = rig
        assert by_interface(source.links()) == by_interface(source.links())

    def test_loopback_routes_to_lo(self, rig):
        source, _ = rig
        assert source.route_interface("127.0.0.1") == "lo"

    @pytest.mark.parametrize("bad", ["", "pacs.example", "999.1.2.3", "10.0.0.0/8", "::g"])
    def test_route_of_a_non_address_is_none(self, rig, bad):
        source, _ = rig
        assert source.route_interface(bad) is None


# --------------------------------------------------------------------------- the fake


ETH = Link("eth0", WIRED, ("198.51.100.10/24",), gateway="198.51.100.1", primary=True)
WLAN = Link("wlan0", WIFI, ("203.0.113.57/24",), gateway="203.0.113.1", ssid="HOSPITAL-A")
WWAN = Link("wwan0", CELLULAR, ("100.64.12.34/32",), metered=True)


class TestStaticLinks(LinkSourceContract):
    @pytest.fixture
    def rig(self):
        return StaticLinks([ETH, WLAN]), {"eth0": WIRED, "wlan0": WIFI}

    def test_set_changes_the_links(self):
        source = StaticLinks([ETH, WLAN])
        source.set(WWAN)
        assert list(by_interface(source.links())) == ["wwan0"]

    def test_route_by_table_then_network_then_primary(self):
        source = StaticLinks([ETH, WLAN], routes={"192.0.2.0/24": "wwan0"})
        assert source.route_interface("192.0.2.9") == "wwan0"
        assert source.route_interface("203.0.113.200") == "wlan0"
        assert source.route_interface("8.8.8.8") == "eth0"
        assert source.route_interface("::1") == "lo"
        source.set(WLAN)
        assert source.route_interface("8.8.8.8") is None


# --------------------------------------------------------------------------- the kernel


class TestKernelLinks(LinkSourceContract):
    """This machine's own namespace: loopback is all that is certain."""

    @pytest.fixture
    def rig(self):
        return KernelLinks({}), {"lo": WIRED}

    def test_loopback_is_wired_with_its_address(self):
        lo = by_interface(KernelLinks({}).links())["lo"]
        assert lo.link_class == WIRED and "127.0.0.1/8" in lo.addresses
        assert route_interface("127.0.0.1") == "lo"

    def test_configured_class_wins(self):
        assert by_interface(KernelLinks({"lo": CELLULAR}).links())["lo"].link_class == CELLULAR

    def test_broken_proc_gives_links_without_gateways(self, tmp_path):
        links = KernelLinks({}, proc_root=tmp_path / "nothing").links()
        assert "lo" in by_interface(links)
        assert all(link.gateway is None and not link.primary for link in links.links)


def fake_sysfs(root: Path, interfaces: dict[str, dict[str, str]]) -> Path:
    """A sysfs tree: {interface: {relative file or dir/: content}}."""
    for name, files in interfaces.items():
        dev = root / "class" / "net" / name
        dev.mkdir(parents=True)
        for rel, content in files.items():
            if rel.endswith("/"):
                (dev / rel).mkdir(parents=True)
            else:
                (dev / rel).write_text(content)
    return root


class TestKernelClassification:
    @pytest.mark.parametrize("name, files, expected", [
        ("wlp2s0", {"wireless/": ""}, WIFI),
        ("wlan1", {"phy80211/": ""}, WIFI),
        ("mlan0", {"uevent": "DEVTYPE=wlan\nINTERFACE=mlan0\n"}, WIFI),
        ("usb0", {"uevent": "DEVTYPE=wwan\nINTERFACE=usb0\n"}, CELLULAR),
        ("rmnet_data0", {"type": "519\n"}, CELLULAR),
        ("qmapmux0", {"type": "512\n"}, CELLULAR),
        ("wwan0", {}, CELLULAR),
        ("ppp0", {}, CELLULAR),
        ("cdc-wdm0", {}, CELLULAR),
        ("enp1s0", {"type": "1\n", "speed": "1000\n"}, WIRED),
        ("tun0", {"type": "65534\n"}, WIRED),
        ("br0", {"bridge/": ""}, WIRED),
        ("veth3", {}, WIRED),
    ])
    def test_class_from_sysfs_and_name(self, tmp_path, name, files, expected):
        sysfs = fake_sysfs(tmp_path, {name: files})
        assert KernelLinks({}, sysfs_root=sysfs).classify(name) == expected

    def test_configured_classes_override_detection(self, tmp_path):
        sysfs = fake_sysfs(tmp_path, {"wlan0": {"wireless/": ""}})
        kernel = KernelLinks({"wlan0": CELLULAR, "tun0": CELLULAR}, sysfs_root=sysfs)
        assert kernel.classify("wlan0") == CELLULAR
        assert kernel.classify("tun0") == CELLULAR

    def test_class_map_takes_pairs_and_drops_unknown_classes(self):
        assert class_map((("wwan0", "cellular"), ("x", "satellite"))) == {"wwan0": CELLULAR}
        assert class_map(None) == {}

    def test_default_route_and_neighbour_tables(self, tmp_path):
        (tmp_path / "net").mkdir()
        (tmp_path / "net" / "route").write_text(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
            "wwan0\t00000000\t01400C64\t0003\t0\t0\t700\t00000000\t0\t0\t0\n"
            "eth0\t00000000\t016433C6\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
            "eth0\t006433C6\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n")
        (tmp_path / "net" / "arp").write_text(
            "IP address       HW type     Flags       HW address            Mask     Device\n"
            "198.51.100.1     0x1         0x2         AA:BB:CC:DD:EE:01     *        eth0\n"
            "198.51.100.9     0x1         0x0         00:00:00:00:00:00     *        eth0\n")
        routes = default_routes(tmp_path)
        assert {n: (r.gateway, r.metric) for n, r in routes.items()} == {
            "wwan0": ("100.12.64.1", 700), "eth0": ("198.51.100.1", 100)}
        assert neighbour_mac("198.51.100.1", "eth0", tmp_path) == "aa:bb:cc:dd:ee:01"
        assert neighbour_mac("198.51.100.9", "eth0", tmp_path) is None
        eth = KernelLinks({}, proc_root=tmp_path, sysfs_root=tmp_path).link("eth0", ())
        assert eth.primary and eth.gateway_mac == "aa:bb:cc:dd:ee:01"

    def test_route_get_output_parses(self):
        assert _parse_route_get('[{"dst":"8.8.8.8","dev":"wwan0"}]') == "wwan0"
        assert _parse_route_get("local 127.0.0.1 dev lo table local src 127.0.0.1") == "lo"
        assert _parse_route_get("") is None

    def test_route_interface_loopback(self):
        assert route_interface("127.0.0.1") == "lo"
        assert route_interface("[::1]") in ("lo", None)  # None where IPv6 is off


VIEW_SCRIPT = """
import json, sys
from dataclasses import asdict
from pathlib import Path
from hw.network import KernelLinks, route_interface
job = json.loads(sys.argv[1])
out = {name: [asdict(link) for link in KernelLinks(v["classes"], Path(v["sysfs"])).links().links]
       for name, v in job["views"].items()}
out["routes"] = {a: route_interface(a) for a in job["routes"]}
print(json.dumps(out))
"""


class TestKernelLinksInNamespace:
    """A veth pair in a namespace of the test's own: addresses, default route, classes."""

    @pytest.fixture
    def ns(self, netns):
        for cmd in (["link", "add", "va", "type", "veth", "peer", "name", "vb"],
                    ["addr", "add", "198.51.100.2/24", "dev", "va"],
                    ["addr", "add", "203.0.113.2/24", "dev", "vb"],
                    ["link", "set", "va", "up"], ["link", "set", "vb", "up"],
                    ["route", "add", "default", "via", "198.51.100.1", "dev", "va"]):
            made = subprocess.run(["ip", "-n", netns, *cmd], capture_output=True, text=True,
                                  timeout=10, check=False)
            assert made.returncode == 0, f"ip {' '.join(cmd)}: {made.stderr.strip()}"
        return netns

    def view(self, ns: str, views: dict[str, dict], routes: list[str]) -> dict[str, Any]:
        job = {"views": {name: {"classes": {}, "sysfs": "/sys", **v} for name, v in views.items()},
               "routes": routes}
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", VIEW_SCRIPT,
                               json.dumps(job)], capture_output=True, text=True, timeout=30,
                              env=env, cwd=ROOT, check=False)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        for name in views:
            result[name] = {link["interface"]: link for link in result[name]}
        return result

    def test_veth_pair(self, ns, tmp_path):
        sysfs = fake_sysfs(tmp_path / "sys", {"va": {"wireless/": ""},
                                              "vb": {"uevent": "DEVTYPE=wwan\n"}})
        out = self.view(ns, {"plain": {}, "mapped": {"classes": {"vb": CELLULAR}},
                             "sysfs": {"sysfs": str(sysfs)}},
                        ["198.51.100.77", "203.0.113.9", "127.0.0.1", "192.0.2.1"])
        plain = out["plain"]
        assert set(plain) == {"lo", "va", "vb"}
        assert {n: lk["link_class"] for n, lk in plain.items()} == {
            "lo": WIRED, "va": WIRED, "vb": WIRED}
        assert plain["va"]["addresses"] == ["198.51.100.2/24"]
        assert plain["va"]["gateway"] == "198.51.100.1" and plain["va"]["primary"]
        assert not plain["vb"]["primary"] and plain["vb"]["gateway"] is None
        assert out["mapped"]["vb"]["link_class"] == CELLULAR and out["mapped"]["vb"]["metered"]
        assert out["mapped"]["va"]["link_class"] == WIRED
        assert out["sysfs"]["va"]["link_class"] == WIFI
        assert out["sysfs"]["vb"]["link_class"] == CELLULAR
        assert out["routes"] == {"198.51.100.77": "va", "203.0.113.9": "vb",
                                 "127.0.0.1": "lo", "192.0.2.1": "va"}

    def test_interfaces_down_or_without_carrier_leave(self, ns):
        subprocess.run(["ip", "-n", ns, "link", "set", "vb", "down"], check=True, timeout=10)
        out = self.view(ns, {"plain": {}}, [])
        assert set(out["plain"]) == {"lo"}  # vb is down; va, still up, lost its carrier (vb)


# --------------------------------------------------------------------------- NetworkManager


class TestNetworkManagerLinks(LinkSourceContract):
    """NetworkManager's API from python-dbusmock (tests/dbusmock_nm.py: NMScene)."""

    @pytest.fixture
    def rig(self, nm):
        return NetworkManagerLinks({}), {"eth0": WIRED, "wlan0": WIFI}

    def test_scene(self, nm):
        source = NetworkManagerLinks({})
        links = by_interface(source.links())
        assert source.last_error is None
        eth, wlan = links["eth0"], links["wlan0"]
        assert eth.addresses == ("198.51.100.10/24",) and eth.gateway == "198.51.100.1"
        assert eth.primary and not eth.metered and not eth.vpn
        assert wlan.ssid == nm.SSID and wlan.addresses == ("203.0.113.57/24",)
        assert not wlan.primary and wlan.expected_kbps == 5400
        assert "wwan0" not in links  # the modem is there, its connection is not active
        assert links["lo"].link_class == WIRED  # unknown to this NetworkManager: the kernel's

    def test_leaving_the_site_switches_to_cellular(self, nm):
        source = NetworkManagerLinks({})
        nm.drive_away()
        links = by_interface(source.links())
        assert "eth0" not in links and "wlan0" not in links
        wwan = links["wwan0"]
        assert wwan.link_class == CELLULAR and wwan.primary and wwan.metered
        assert wwan.addresses == ("100.64.12.34/32",) and wwan.gateway == "100.64.12.1"
        assert [link.interface for link in links.values() if link.primary] == ["wwan0"]

    def test_metered_flag_follows_the_device(self, nm):
        source = NetworkManagerLinks({})
        assert not by_interface(source.links())["wlan0"].metered
        nm.set_metered(nm.wlan, 1)  # a phone's hotspot
        assert by_interface(source.links())["wlan0"].metered

    def test_primary_follows_networkmanager(self, nm):
        source = NetworkManagerLinks({})
        nm.set_primary(nm.wifi_ac, "802-11-wireless")
        links = by_interface(source.links())
        assert links["wlan0"].primary and not links["eth0"].primary

    def test_configured_class_wins(self, nm):
        links = by_interface(NetworkManagerLinks({"wlan0": CELLULAR}).links())
        assert links["wlan0"].link_class == CELLULAR and links["eth0"].link_class == WIRED

    def test_wireguard_is_a_vpn_link_of_its_carriers_class(self, nm):
        source = NetworkManagerLinks({})
        nm.add_wireguard()
        wg = by_interface(source.links())["wg0"]
        assert wg.vpn and wg.link_class == WIRED and wg.addresses == ("100.96.0.2/24",)
        assert not by_interface(source.links())["eth0"].vpn
        nm.drive_away()
        wg = by_interface(source.links())["wg0"]
        assert wg.vpn and wg.link_class == CELLULAR and wg.metered

    def test_plugin_vpn_without_tunnel_interface_marks_its_carrier(self, nm):
        source = NetworkManagerLinks({})
        nm.add_plugin_vpn()
        links = by_interface(source.links())
        assert links["eth0"].vpn and not links["wlan0"].vpn

    def test_device_type_unknown_to_python_networkmanager(self, nm):
        source = NetworkManagerLinks({})
        nm.add_loopback()  # type 32, as NetworkManager 1.42 shows lo
        links = by_interface(source.links())
        assert source.last_error is None
        assert links["lo"].link_class == WIRED and links["lo"].addresses == ("127.0.0.1/8",)

    def test_best_link_source_prefers_networkmanager(self, nm):
        assert isinstance(best_link_source((("wwan0", CELLULAR),)), NetworkManagerLinks)


class TestNetworkManagerGone:
    def test_falls_back_to_the_kernel_and_recovers(self, system_bus, tmp_path, need):
        need("NetworkManager")
        from tests.dbusmock_nm import spawn_nm

        source = NetworkManagerLinks({})
        with spawn_nm(tmp_path / "nm.log"):
            assert "wlan0" in by_interface(source.links())
        links = by_interface(source.links())  # NetworkManager has stopped
        assert "wlan0" not in links and links["lo"].link_class == WIRED
        assert source.last_error and "NetworkManager" in source.last_error
        assert isinstance(best_link_source({}), KernelLinks)
        with spawn_nm(tmp_path / "nm2.log"):
            assert "wlan0" in by_interface(source.links())
            assert source.last_error is None

    def test_no_networkmanager_from_the_start(self, system_bus):
        source = NetworkManagerLinks({"lo": CELLULAR})
        links = by_interface(source.links())
        assert links["lo"].link_class == CELLULAR
        assert source.last_error


def test_links_serialise():
    """Links are plain data: what the control socket and `status --json` pass on."""
    assert asdict(ETH)["interface"] == "eth0"
