"""Where am I: the running box follows real signals (gpsd replaying a drive, PACS echoes),
and each hospital gets exactly its own studies."""

from __future__ import annotations

import time

import pydicom
import pytest

from appliance.demo.synthetic import write_ct_study
from tests.boxproc import BoxProcess, box_toml
from tests.gpsfake import HOSPITAL_A, HOSPITAL_B, MISSING, GpsFake, drive
from tests.peers import CountingSCP, free_port, storescu


def two_sites(port_a: int, port_b: int, *, geofences: bool = False) -> str:
    out = []
    for site_id, port, place in (("a", port_a, HOSPITAL_A), ("b", port_b, HOSPITAL_B)):
        fence = (f"geofence = {{ lat = {place[0]}, lon = {place[1]}, radius_m = 400 }}\n"
                 if geofences else "")
        out.append(f'[[site]]\nid = "{site_id}"\n{fence}\n[[site.destination]]\n'
                   f'name = "pacs"\nae_title = "PACS_{site_id.upper()}"\n'
                   f'host = "127.0.0.1"\nport = {port}\n')
    return "\n".join(out)


def auto(**detect) -> str:
    return "\n".join(['mode = "auto"', *(f"{k} = {v}" for k, v in detect.items())])


def _site(box: BoxProcess) -> str | None:
    return box.status()["site"]["id"]


@pytest.mark.skipif(bool(MISSING), reason=MISSING or "")

def _wait_for_a_round(box, dest_id: str) -> None:
    """Until the destination's worker has looked at its queue once more from now."""
    def round_at() -> float:
        (dest,) = [d for d in box.status()["destinations"] if d["id"] == dest_id]
        return dest["last_round_at"] or 0.0

    since = time.time()
    box.wait_for(lambda: round_at() > since, 30, f"a delivery round of {dest_id}")

def test_site_follows_a_drive_from_a_to_b_with_hysteresis(tmp_path):
    with GpsFake(drive(period_s=0.5), period_s=0.5) as gps:
        text = box_toml(tmp_path / "data", free_port(), two_sites(9, 9, geofences=True),
                        detect=auto(hold_s=1, node_interval_s=3600,
                                    gpsd=f'"127.0.0.1:{gps.port}"'))
        with BoxProcess(text, tmp_path) as box:
            seen: list[str | None] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and seen[-1:] != ["b"]:
                site = _site(box)
                if not seen or seen[-1] != site:
                    seen.append(site)
                time.sleep(0.1)
            assert seen == [None, "a", None, "b"] or seen == ["a", None, "b"], seen
            assert box.status()["site"] == {"id": "b", "source": "gps"}


def _uids(files) -> set[str]:
    return {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}


def test_each_hospital_gets_exactly_its_own_studies(tmp_path):
    studies = [write_ct_study(tmp_path / f"s{n}", slices=3, rows=64, cols=64, seed=n)
               for n in range(3)]
    pacs_a, pacs_b = CountingSCP(ae_title="PACS_A"), CountingSCP(ae_title="PACS_B")
    pacs_a.port, pacs_b.port = free_port(), free_port()
    text = box_toml(tmp_path / "data", free_port(), two_sites(pacs_a.port, pacs_b.port),
                    detect=auto(hold_s=1, node_interval_s=0.5))
    box = BoxProcess(text, tmp_path)
    try:
        pacs_a.start()  # parked at A: its PACS answers
        box.start()
        box.wait_for(lambda: _site(box) == "a", 30, "site a from its PACS answering")
        storescu("127.0.0.1", box.port, studies[0], called_aet="FLUXBOX")
        box.wait_for(lambda: len(pacs_a.uids()) == 3, 30, "study 0 at PACS A")

        pacs_a.stop()  # the vehicle drives to B
        pacs_b.start()
        box.wait_for(lambda: _site(box) == "b", 60, "site b from its PACS answering")
        storescu("127.0.0.1", box.port, studies[1], called_aet="FLUXBOX")
        box.wait_for(lambda: len(pacs_b.uids()) == 3, 30, "study 1 at PACS B")

        pacs_b.stop()  # on the road: nobody answers
        box.wait_for(lambda: _site(box) is None, 60, "site unknown")
        storescu("127.0.0.1", box.port, studies[2], called_aet="FLUXBOX")
        uid2 = pydicom.dcmread(studies[2][0]).StudyInstanceUID
        box.wait_for(lambda: any(r["study_uid"] == uid2 and r["state"] == "held"
                                 for r in box.studies()), 30, "study 2 held")
        (held,) = [r for r in box.studies() if r["study_uid"] == uid2]
        assert held["held_reason"] == "site-unknown" and held["site"] is None

        pacs_a.start()  # back at A: the held study is still not guessed
        box.wait_for(lambda: _site(box) == "a", 60, "site a again")
        _wait_for_a_round(box, "a/pacs")  # nothing may move without an assignment
        assert len(pacs_a.uids()) == 3
        assert box.call("assign", study_uid=uid2, site_id="a")["site"] == "a"
        box.wait_for(lambda: len(pacs_a.uids()) == 6, 30, "study 2 at PACS A after assign")

        assert pacs_a.uids() == _uids(studies[0]) | _uids(studies[2])
        assert pacs_b.uids() == _uids(studies[1])
        states = {r["study_uid"]: (r["site"], r["state"]) for r in box.studies()}
        assert sorted(states.values()) == [("a", "complete"), ("a", "complete"),
                                           ("b", "complete")]
    finally:
        box.kill9()
        pacs_a.stop()
        pacs_b.stop()


def test_a_study_assigned_to_another_site_never_reaches_the_first_sites_pacs(tmp_path):
    """Acquired at A while A's PACS was down, then assigned to B: only B may receive it, even
    once A's PACS answers again (its pending positions for A must not survive the assign)."""
    study = write_ct_study(tmp_path / "s", slices=3, rows=64, cols=64, seed=7)
    pacs_a, pacs_b = CountingSCP(ae_title="PACS_A"), CountingSCP(ae_title="PACS_B")
    pacs_a.port, pacs_b.port = free_port(), free_port()
    text = box_toml(tmp_path / "data", free_port(), two_sites(pacs_a.port, pacs_b.port),
                    detect=auto(hold_s=1, node_interval_s=3600))
    box = BoxProcess(text, tmp_path)
    try:
        box.start()
        box.call("site", action="set", id="a")
        storescu("127.0.0.1", box.port, study, called_aet="FLUXBOX")
        uid = pydicom.dcmread(study[0]).StudyInstanceUID
        box.wait_for(lambda: any(r["study_uid"] == uid and r["state"] in ("queued", "sending")
                                 for r in box.studies()), 30, "study queued for A's PACS")
        assert box.call("assign", study_uid=uid, site_id="b")["site"] == "b"
        box.call("site", action="set", id="b")  # the vehicle is at B now
        pacs_a.start()
        pacs_b.start()
        box.call("retry")
        box.wait_for(lambda: len(pacs_b.uids()) == 3, 30, "the study at PACS B")
        (row,) = [r for r in box.studies() if r["study_uid"] == uid]
        assert row["site"] == "b"
        assert len(row["destinations"]) == 1, "only B's PACS is the study's destination now"
        box.wait_for(lambda: row_state(box, uid) == "complete", 30, "study complete at B")
        box.call("retry")  # every worker gets another round: A's must find nothing to send
        _wait_for_a_round(box, "a/pacs")
        assert pacs_a.uids() == set(), "a study assigned to B reached hospital A"
    finally:
        box.kill9()
        pacs_a.stop()
        pacs_b.stop()


def row_state(box: BoxProcess, study_uid: str) -> str | None:
    return next((r["state"] for r in box.studies() if r["study_uid"] == study_uid), None)
