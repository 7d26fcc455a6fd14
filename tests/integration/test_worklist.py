"""The worklist end to end: a hospital's worklist server (DCMTK wlmscpfs, Orthanc's
worklists plugin), the box as a real process, DCMTK findscu as the modality.

The box answers the modality's queries with the same orders the server would have
given directly (those in the sync window); keeps answering with the server gone; and
follows the server's list when it changes. Corrections come out as configured.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.boxproc import BoxProcess, box_toml, site_toml
from tests.peers import free_port
from tests.wlm import OrthancWorklists, WlmServer, answer_set, findscu

TODAY = date.today()
UTF8 = "SpecificCharacterSet=ISO_IR 192"
SPS = "ScheduledProcedureStepSequence[0]"
RETURN_KEYS = [
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyInstanceUID", "RequestedProcedureID", "RequestedProcedureDescription",
    "RequestedProcedureCodeSequence", f"{SPS}.Modality", f"{SPS}.ScheduledStationAETitle",
    f"{SPS}.ScheduledProcedureStepStartDate", f"{SPS}.ScheduledProcedureStepStartTime",
    f"{SPS}.ScheduledProcedureStepID", f"{SPS}.ScheduledProcedureStepDescription",
]


def day(offset: int) -> str:
    return f"{TODAY + timedelta(days=offset):%Y%m%d}"


def order(n: int, name: str, modality: str, station: str, offset: int, time: str,
          **extra) -> dict:
    return {
        "AccessionNumber": f"ACC{n:03d}", "PatientName": name, "PatientID": f"PID{n:03d}",
        "PatientBirthDate": "19700101", "PatientSex": "O",
        "StudyInstanceUID": f"1.2.826.0.1.3680043.10.1386.{n}",
        "RequestedProcedureID": f"RP{n}", "RequestedProcedureDescription": f"{modality} exam",
        "RequestedProcedureCodeSequence": [{"CodeValue": f"{modality}X", "CodingSchemeDesignator":
                                            "LOCAL", "CodeMeaning": f"{modality} exam"}],
        "ScheduledProcedureStepSequence": [{
            "Modality": modality, "ScheduledStationAETitle": station,
            "ScheduledProcedureStepStartDate": day(offset),
            "ScheduledProcedureStepStartTime": time, "ScheduledProcedureStepID": f"SPS{n}",
            "ScheduledProcedureStepDescription": f"{modality} step",
        }],
        **extra,
    }


ORDERS = {
    "o1": order(1, "Müller^Jürgen", "CT", "CT1", 0, "091500"),
    "o2": order(2, "Łukasz^Wróbel", "MR", "MR1", 1, "130000"),
    "o3": order(3, "Doe^Jane", "CT", "CT2", -1, "080000"),
    "o4": order(4, "Smith^John", "US", "US1", 2, "113000"),
    "o5": order(5, "Müller^Anna", "CT", "CT1", 10, "100000"),  # beyond days_ahead
}
OUT_OF_WINDOW = {"ACC005"}

# The modality's queries: every order, by name, by date range, by modality, by station
# and by accession.
QUERIES = {
    "all": [],
    "name": ["PatientName=Mül*"],
    "dates": [f"{SPS}.ScheduledProcedureStepStartDate={day(0)}-{day(1)}"],
    "modality": [f"{SPS}.Modality=MR"],
    "station": [f"{SPS}.ScheduledStationAETitle=CT2"],
    "accession": ["AccessionNumber=ACC004"],
}


def query(port: int, aet: str, filters: list[str], *, charset: str | None = UTF8) -> list:
    """A modality's query: the usual return keys, then the filters (they replace the
    plain keys of the same attribute)."""
    keys = {key.split("=")[0]: key for key in RETURN_KEYS}
    keys.update({key.split("=")[0]: key for key in filters})
    extra = [charset] if charset else []
    return findscu(port, aet, [*extra, *keys.values()])


def in_window(answers: list[dict]) -> list[dict]:
    return [a for a in answers if a["AccessionNumber"] not in OUT_OF_WINDOW]


def worklist_toml(server, *, interval_s: float = 1, extra: str = "") -> str:
    return (f'\n[site.worklist]\nae_title = "{server.aet}"\nhost = "127.0.0.1"\n'
            f"port = {server.port}\nsync_interval_s = {interval_s}\nretry_interval_s = 1\n"
            f"days_ahead = 2\n{extra}\n")


def dest() -> dict:
    return {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}


def start_box(tmp_path: Path, sites: str, *,
              detect: str = 'mode = "fixed"\nfixed_site = "a"') -> BoxProcess:
    workdir = tmp_path / "box"
    workdir.mkdir()
    text = box_toml(workdir / "data", free_port(), sites, detect=detect)
    return BoxProcess(text, workdir).start()


def wait_synced(box: BoxProcess, site: str, entries: int, after: float = 0.0) -> dict:
    def synced():
        state = box.status()["worklist"]
        good = state["site"] == site and state["result"] == "ok"
        return state if good and state["entries"] == entries and (
            state["synced_at"] or 0) > after else None

    return box.wait_for(synced, 15, f"worklist of site {site} with {entries} entries")


@pytest.fixture
def wlm():
    server = WlmServer(aet="RIS")
    for name, entry in ORDERS.items():
        server.put(name, entry)
    with server:
        yield server


def test_box_answers_as_the_server_does_keeps_answering_offline_and_follows_changes(
        tmp_path, wlm):
    box = start_box(tmp_path, site_toml("a", [dest()]) + worklist_toml(
        wlm, extra='name_matching = "case-sensitive"'))
    try:
        first = wait_synced(box, "a", 4)
        expected = {}
        for name, filters in QUERIES.items():
            expected[name] = in_window(answer_set(query(wlm.port, wlm.aet, filters)))
            assert expected[name], f"query {name!r} should find orders"
            assert answer_set(query(box.port, "FLUXBOX", filters)) == expected[name], name

        wlm.stop()
        box.wait_for(lambda: box.status()["worklist"]["result"] == "unreachable", 15,
                     "a failed sync")
        for name, filters in QUERIES.items():
            assert answer_set(query(box.port, "FLUXBOX", filters)) == expected[name], name

        wlm.remove("o3")
        wlm.put("o6", order(6, "Núñez^José", "CT", "CT2", 0, "140000"))
        wlm.start()
        wait_synced(box, "a", 4, after=first["synced_at"])
        now = answer_set(query(box.port, "FLUXBOX", []))
        assert now == in_window(answer_set(query(wlm.port, wlm.aet, [])))
        assert {a["AccessionNumber"] for a in now} == {"ACC001", "ACC002", "ACC004", "ACC006"}
    finally:
        box.stop()


def test_answers_come_in_the_character_set_the_modality_reads(tmp_path, wlm):
    box = start_box(tmp_path, site_toml("a", [dest()]) + worklist_toml(wlm))
    try:
        wait_synced(box, "a", 4)
        [latin1] = query(box.port, "FLUXBOX", ["AccessionNumber=ACC002"], charset=None)
        assert latin1.SpecificCharacterSet == "ISO_IR 100"
        assert str(latin1.PatientName) == "Lukasz^Wróbel"
        [utf8] = query(box.port, "FLUXBOX", ["AccessionNumber=ACC002"])
        assert str(utf8.PatientName) == "Łukasz^Wróbel"
        assert len(query(box.port, "FLUXBOX", ["PatientName=mül*"])) == 1  # case-insensitive

        rows = {row["AccessionNumber"]: row for row in box.call("worklist")}
        assert set(rows) == {"ACC001", "ACC002", "ACC003", "ACC004"}
        assert rows["ACC002"]["PatientName"] == "Łukasz^Wróbel"
        step = rows["ACC002"]["ScheduledProcedureStepSequence"][0]
        assert (step["Modality"], step["ScheduledStationAETitle"]) == ("MR", "MR1")
        state = box.status()["worklist"]
        assert state["entries"] == 4 and state["age_s"] >= 0 and state["result"] == "ok"
        assert "Wróbel" not in box.log() and "PID002" not in box.log()
    finally:
        box.stop()


def test_the_current_sites_list_only_and_none_without_a_site(tmp_path, wlm):
    with OrthancWorklists() as orthanc:
        for name, entry in {"b1": order(11, "Berg^Åsa", "MG", "MG1", 0, "090000"),
                            "b2": order(12, "Østergaard^Ida", "MG", "MG2", 1, "100000"),
                            "b3": order(13, "Dupont^Zoé", "CT", "CT9", 2, "110000")}.items():
            orthanc.put(name, entry)
        sites = (site_toml("a", [dest()]) + worklist_toml(wlm)
                 + site_toml("b", [dest()]) + worklist_toml(orthanc))
        box = start_box(tmp_path, sites, detect='mode = "auto"')
        try:
            assert box.status()["site"]["id"] is None
            assert query(box.port, "FLUXBOX", []) == []

            box.call("site", action="set", id="a")
            wait_synced(box, "a", 4)
            assert {a["AccessionNumber"] for a in answer_set(query(box.port, "FLUXBOX", []))} == {
                "ACC001", "ACC002", "ACC003", "ACC004"}

            box.call("site", action="set", id="b")
            wait_synced(box, "b", 3)
            orthanc_queries = {
                "all": [], "name": ["PatientName=berg*"], "modality": [f"{SPS}.Modality=MG"],
                "dates": [f"{SPS}.ScheduledProcedureStepStartDate={day(1)}-"],
                "accession": ["AccessionNumber=ACC013"],
            }
            for name, filters in orthanc_queries.items():
                direct = answer_set(query(orthanc.port, orthanc.aet, filters))
                assert direct, f"query {name!r} should find orders"
                assert answer_set(query(box.port, "FLUXBOX", filters)) == direct, name
        finally:
            box.stop()


CORRECTIONS = """
[site.worklist.corrections]
person_names = "upper"
unknown_codes = "remove"
defaults = { Modality = "CT", ScheduledStationAETitle = "CT1" }
copy = { RequestedProcedureDescription = "ScheduledProcedureStepDescription" }

[[site.worklist.corrections.procedure_codes]]
code = "CTHD"
scheme = "LOCAL"
to_code = "CT-HEAD"
to_scheme = "99FLX"
to_meaning = "CT head"
"""


def test_corrections_come_out_as_the_rules_say(tmp_path):
    with WlmServer(aet="RIS") as server:
        server.put("bad", {
            "AccessionNumber": "ACC100", "PatientName": "  doe ,  jane\x07",
            "PatientID": "PID\x01100", "RequestedProcedureDescription": "x" * 80,
            "RequestedProcedureCodeSequence": [
                {"CodeValue": "CTHD", "CodingSchemeDesignator": "LOCAL", "CodeMeaning": "head"},
                {"CodeValue": "ZZZ", "CodingSchemeDesignator": "LOCAL", "CodeMeaning": "?"}],
            "ScheduledProcedureStepSequence": [{"ScheduledProcedureStepStartDate": day(0)}],
        })
        server.put("fine", order(101, "Roe^Rick", "CT", "CT1", 0, "100000",
                                 RequestedProcedureDescription=""))
        box = start_box(tmp_path, site_toml("a", [dest()]) + worklist_toml(
            server, extra=CORRECTIONS))
        try:
            state = wait_synced(box, "a", 2)
            rows = {row["AccessionNumber"]: row for row in box.call("worklist")}
            bad = rows["ACC100"]
            assert (bad["PatientName"], bad["PatientID"]) == ("DOE^JANE", "PID100")
            assert bad["RequestedProcedureDescription"] == "x" * 64
            assert bad["RequestedProcedureCodeSequence"] == [
                {"CodeValue": "CT-HEAD", "CodingSchemeDesignator": "99FLX",
                 "CodeMeaning": "CT head"}]
            step = bad["ScheduledProcedureStepSequence"][0]
            assert (step["Modality"], step["ScheduledStationAETitle"]) == ("CT", "CT1")
            assert set(bad["_corrections"]) == {
                "PatientName: control characters removed, trimmed", "PatientName: normalized",
                "PatientID: control characters removed",
                "RequestedProcedureCodeSequence: code mapped",
                "RequestedProcedureCodeSequence: unknown code removed",
                "Modality: default set", "ScheduledStationAETitle: default set",
                "RequestedProcedureDescription: truncated to 64 characters"}
            fine = rows["ACC101"]
            assert fine["RequestedProcedureDescription"] == "CT step"
            assert fine["_corrections"] == [
                "PatientName: upper-cased", "RequestedProcedureCodeSequence: unknown code removed",
                "RequestedProcedureDescription: copied from ScheduledProcedureStepDescription"]
            assert state["corrections"] == len(bad["_corrections"]) + 3

            found = query(box.port, "FLUXBOX", [f"{SPS}.ScheduledStationAETitle=CT1",
                                                "PatientName=DOE^JANE"])
            assert [str(a.PatientName) for a in found] == ["DOE^JANE"]
            assert found[0].RequestedProcedureCodeSequence[0].CodeValue == "CT-HEAD"
            assert "jane" not in box.log().lower() and "x" * 20 not in box.log()
        finally:
            box.stop()
