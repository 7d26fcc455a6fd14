"""The worklist: matching (PS3.4 C.2.2.2), character sets, corrections, sync and answers.

Pure where the code is: datasets in, datasets out. Sync runs against a fake server
(a function that returns what a C-FIND would have) and the real store on disk.
"""

from __future__ import annotations

import io
from datetime import date
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import ModalityWorklistInformationFind

from appliance.config import (
    CodeMapping,
    ConfigError,
    CorrectionsConfig,
    WorklistConfig,
    parse_config,
)
from appliance.keystore import FileKeystore
from appliance.statuses import CANCEL, PENDING
from appliance.store import Store
from appliance.worklist.cache import Worklist
from appliance.worklist.charset import answer_terms, render, to_utf8
from appliance.worklist.corrections import correct
from appliance.worklist.entries import decode_entry, encode_entry, entry_json
from appliance.worklist.matching import answer
from appliance.worklist.sync import Fetched, _collect, sync_query


def ds(**values) -> Dataset:
    """A dataset from keywords; a list of dicts is a sequence."""
    out = Dataset()
    for keyword, value in values.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = Sequence([ds(**item) for item in value])
        setattr(out, keyword, value)
    return out


def order(name="Müller^Jürgen", pid="PID1", acc="ACC1", modality="CT", station="CT1",
          day="20261128", time="101500", **extra) -> Dataset:
    return ds(PatientName=name, PatientID=pid, AccessionNumber=acc, **extra,
              ScheduledProcedureStepSequence=[dict(
                  Modality=modality, ScheduledStationAETitle=station,
                  ScheduledProcedureStepStartDate=day, ScheduledProcedureStepStartTime=time)])


def step_query(**keys) -> list[dict]:
    return [{"Modality": "", "ScheduledStationAETitle": "",
             "ScheduledProcedureStepStartDate": "", **keys}]


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize("wanted", ["", "*", "**"])
def test_universal_matching_matches_every_entry(wanted):
    assert answer(ds(PatientName=wanted), order()) is not None
    assert answer(ds(PatientComments=wanted), order()) is not None  # not in the entry


@pytest.mark.parametrize(("wanted", "hit"), [
    ("Müller^Jürgen", True), ("Müller^Jürgen^^", True), ("Müller", False),
    ("Mül*", True), ("M?ller^J*", True), ("*Jürgen", True), ("*^Jö*", False),
    ("müller^jürgen", True), ("MÜL*", True),
])
def test_person_names_single_value_and_wildcards(wanted, hit):
    assert (answer(ds(PatientName=wanted), order()) is not None) is hit


def test_person_names_case_sensitive_when_configured():
    assert answer(ds(PatientName="mül*"), order(), names_ignore_case=False) is None
    assert answer(ds(PatientName="Mül*"), order(), names_ignore_case=False) is not None


def test_a_name_matches_on_its_alphabetic_group_alone():
    entry = order(name="Yamada^Tarou=山田^太郎=やまだ^たろう")
    assert answer(ds(PatientName="Yamada^Tarou"), entry) is not None
    assert answer(ds(PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう"), entry) is not None
    assert answer(ds(PatientName="Yamada*"), entry) is not None


def test_other_text_is_case_sensitive_and_needs_a_value():
    assert answer(ds(AccessionNumber="ACC1"), order()) is not None
    assert answer(ds(AccessionNumber="acc1"), order()) is None
    assert answer(ds(AccessionNumber="AC?1"), order()) is not None
    assert answer(ds(PatientComments="x*"), order()) is None  # entry has no value


def test_uids_match_as_a_list_and_never_by_wildcard():
    entry = order(StudyInstanceUID="1.2.3.4")
    assert answer(ds(StudyInstanceUID=["1.2.3.9", "1.2.3.4"]), entry) is not None
    assert answer(ds(StudyInstanceUID="1.2.3.*"), entry) is None


@pytest.mark.parametrize(("wanted", "hit"), [
    ("20261128", True), ("20261127", False), ("20261128-20261130", True),
    ("20261129-20261130", False), ("-20261128", True), ("-20261127", False),
    ("20261128-", True), ("20261129-", False), ("20261101-20261231", True),
])
def test_date_ranges(wanted, hit):
    query = ds(ScheduledProcedureStepSequence=step_query(ScheduledProcedureStepStartDate=wanted))
    assert (answer(query, order()) is not None) is hit


def test_an_old_style_date_in_an_entry_still_matches():
    assert answer(ds(ScheduledProcedureStepSequence=step_query(
        ScheduledProcedureStepStartDate="20261128-")), order(day="2026.11.28")) is not None


@pytest.mark.parametrize(("wanted", "hit"), [
    ("101500", True), ("1015", True), ("10", True), ("1000-1100", True), ("-10", True),
    ("-09", False), ("1016-", False), ("1015-1015", True), ("101501-", False),
])
def test_time_ranges_cover_the_span_a_partial_time_names(wanted, hit):
    query = ds(ScheduledProcedureStepSequence=[dict(ScheduledProcedureStepStartTime=wanted)])
    assert (answer(query, order()) is not None) is hit


def test_sequence_matching_returns_only_the_matching_items():
    entry = order()
    entry.ScheduledProcedureStepSequence.append(ds(
        Modality="MR", ScheduledStationAETitle="MR1", ScheduledProcedureStepStartDate="20261129"))
    found = answer(ds(ScheduledProcedureStepSequence=step_query(Modality="MR")), entry)
    assert [i.Modality for i in found.ScheduledProcedureStepSequence] == ["MR"]
    assert found.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "MR1"
    assert answer(ds(ScheduledProcedureStepSequence=step_query(Modality="US")), entry) is None
    every = answer(ds(ScheduledProcedureStepSequence=step_query()), entry)
    assert [i.Modality for i in every.ScheduledProcedureStepSequence] == ["CT", "MR"]


def test_one_item_must_match_every_key_of_the_query_item():
    entry = order()
    entry.ScheduledProcedureStepSequence.append(ds(Modality="MR", ScheduledStationAETitle="CT2"))
    query = ds(ScheduledProcedureStepSequence=step_query(Modality="MR",
                                                         ScheduledStationAETitle="CT1"))
    assert answer(query, entry) is None


def test_an_empty_sequence_key_returns_the_items_whole():
    found = answer(ds(ScheduledProcedureStepSequence=Sequence()), order())
    item = found.ScheduledProcedureStepSequence[0]
    assert (item.Modality, item.ScheduledProcedureStepStartTime) == ("CT", "101500")


def test_keys_come_back_as_requested_empty_where_unknown():
    query = ds(PatientName="", PatientBirthDate="", OtherPatientNames="",
               ScheduledProcedureStepSequence=[dict(Modality="", ScheduledStationName="")])
    found = answer(query, order(PatientBirthDate="19700101"))
    assert [e.keyword for e in found] == [
        "PatientName", "PatientBirthDate", "OtherPatientNames", "ScheduledProcedureStepSequence"]
    assert found.PatientBirthDate == "19700101" and found.OtherPatientNames in ("", None)
    item = found.ScheduledProcedureStepSequence[0]
    assert item.Modality == "CT" and "ScheduledStationName" in item
    assert "PatientID" not in found and "ScheduledStationAETitle" not in item


def test_a_sequence_the_entry_lacks_matches_only_when_the_query_item_is_universal():
    assert answer(ds(RequestedProcedureCodeSequence=[dict(CodeValue="")]), order()) is not None
    assert answer(ds(RequestedProcedureCodeSequence=[dict(CodeValue="X")]), order()) is None


def test_private_keys_never_restrict_and_come_back_empty():
    query = ds(PatientName="")
    query.add_new(0x00990010, "LO", "SOMEONE")
    found = answer(query, order())
    assert found is not None and not found[0x00990010].value


# --------------------------------------------------------------------------- character sets


def test_answer_character_set_is_configured_else_the_querys_else_latin1():
    assert answer_terms("ISO_IR 192", ds(SpecificCharacterSet="ISO_IR 100")) == ("ISO_IR 192",)
    assert answer_terms("", ds(SpecificCharacterSet="ISO_IR 192")) == ("ISO_IR 192",)
    assert answer_terms("", ds(PatientName="")) == ("ISO_IR 100",)
    assert answer_terms("", ds(SpecificCharacterSet="NO SUCH SET")) == ("ISO_IR 100",)
    assert answer_terms("", ds(SpecificCharacterSet=["ISO 2022 IR 6", "ISO 2022 IR 87"])) == (
        "ISO 2022 IR 6", "ISO 2022 IR 87")


def test_entries_from_any_character_set_are_kept_in_utf8():
    sent = order(name="Größ^Jürgen", SpecificCharacterSet="ISO_IR 100")
    sent.ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName = "Ärztin^Ö"
    received = decode(io.BytesIO(encode(sent, False, True)), False, True)
    kept = to_utf8(received)
    raw = encode(kept, False, True)
    assert "Größ^Jürgen".encode() in raw and "Ärztin^Ö".encode() in raw
    back = decode(io.BytesIO(raw), False, True)
    assert back.ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName == "Ärztin^Ö"


def test_an_answer_that_names_no_character_set_is_read_as_configured():
    sent = order(name="Größ", SpecificCharacterSet="ISO_IR 100")
    raw = encode(sent, False, True).replace(b"\x08\x00\x05\x00CS\n\x00ISO_IR 100", b"")
    received = decode(io.BytesIO(raw), False, True)
    assert str(to_utf8(received, "ISO_IR 100").PatientName) == "Größ"


@pytest.mark.parametrize(("rule", "terms", "name", "shown"), [
    ("transliterate", ("ISO_IR 100",), "Łukasz^Wróbel", "Lukasz^Wróbel"),
    ("transliterate", ("ISO_IR 100",), "Ærø^Šárka", "Ærø^Sárka"),
    ("transliterate", ("",), "Ærø^Šárka", "AEro^Sarka"),
    ("transliterate", ("ISO_IR 100",), "Zoë^山田", "Zoë^??"),
    ("replace", ("ISO_IR 100",), "Łukasz^Wróbel", "?ukasz^Wróbel"),
    ("transliterate", ("ISO_IR 100",), "Yamada^Tarou=山田^太郎", "Yamada^Tarou"),
    ("transliterate", ("ISO_IR 192",), "Łukasz=山田", "Łukasz=山田"),
])
def test_characters_the_modality_cannot_read_are_replaced_by_the_rule(rule, terms, name, shown):
    assert str(render(order(name=name), terms, rule).PatientName) == shown


def test_a_rendered_answer_encodes_in_the_answer_character_set():
    shown = render(order(name="Łukasz^Müller"), ("ISO_IR 100",), "transliterate")
    shown.SpecificCharacterSet = "ISO_IR 100"
    assert b"Lukasz^M\xfcller" in encode(shown, False, True)


# --------------------------------------------------------------------------- corrections


def corrected(entry: Dataset, **rules) -> tuple[Dataset, list[str]]:
    notes = correct(entry, CorrectionsConfig(**rules))
    return entry, notes


def test_control_and_disallowed_characters_are_removed():
    entry, notes = corrected(order(name="Doe^John\x07", pid="P\x01ID\u200b", modality="ct "))
    assert (str(entry.PatientName), entry.PatientID) == ("Doe^John", "PID")
    assert entry.ScheduledProcedureStepSequence[0].Modality == "CT"
    assert "PatientName: control characters removed" in notes
    assert "ScheduledProcedureStepSequence.Modality: trimmed, upper-cased" in notes


def test_free_text_keeps_its_line_breaks():
    entry, notes = corrected(order(RequestedProcedureComments="line 1\r\nline 2\x00"))
    assert entry.RequestedProcedureComments == "line 1\r\nline 2"


def test_dates_and_times_lose_their_separators():
    entry, notes = corrected(order(day="2026-11-28", time="10:15"))
    step = entry.ScheduledProcedureStepSequence[0]
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == (
        "20261128", "1015")


@pytest.mark.parametrize(("rule", "written", "result"), [
    ("normalize", "  Doe ,  John ", "Doe^John"),
    ("normalize", "Doe^John^^^", "Doe^John"),
    ("normalize", "Doe^ John  Paul ^", "Doe^John Paul"),
    ("upper", "Doe, John", "DOE^JOHN"),
    ("keep", "Doe, John", "Doe, John"),
])
def test_person_names_are_normalized_as_configured(rule, written, result):
    entry, notes = corrected(order(name=written), person_names=rule, clean_characters=False)
    assert str(entry.PatientName) == result
    assert bool(notes) is (result != written)


def test_over_long_values_are_cut_to_their_vr_maximum():
    entry, notes = corrected(order(acc="A" * 20, RequestedProcedureDescription="x" * 80,
                                   name="N" * 70 + "=" + "M" * 70))
    assert entry.AccessionNumber == "A" * 16 and len(entry.RequestedProcedureDescription) == 64
    assert str(entry.PatientName) == "N" * 64 + "=" + "M" * 64
    assert "AccessionNumber: truncated to 16 characters" in notes


def code(value, scheme, meaning="") -> dict:
    return dict(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


TABLE = (CodeMapping("CTHD", "LOCAL", "CT-HEAD", "99FLX", "CT head"),)


def test_procedure_codes_are_mapped_through_the_table():
    entry = order(RequestedProcedureCodeSequence=[code("CTHD", "LOCAL", "head")])
    entry.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = Sequence(
        [ds(**code("CTHD", "LOCAL"))])
    entry, notes = corrected(entry, procedure_codes=TABLE)
    for item in (entry.RequestedProcedureCodeSequence[0],
                 entry.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0]):
        assert (item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning) == (
            "CT-HEAD", "99FLX", "CT head")
    assert notes == ["RequestedProcedureCodeSequence: code mapped",
                     "ScheduledProcedureStepSequence.ScheduledProtocolCodeSequence: code mapped"]


@pytest.mark.parametrize(("rule", "left"), [("keep", ["CTHD", "XYZ"]), ("remove", ["CT-HEAD"])])
def test_unknown_codes_are_kept_or_removed(rule, left):
    entry = order(RequestedProcedureCodeSequence=[code("CTHD", "LOCAL"), code("XYZ", "LOCAL")])
    table = TABLE if rule == "remove" else ()
    entry, notes = corrected(entry, procedure_codes=table, unknown_codes=rule)
    assert [i.CodeValue for i in entry.RequestedProcedureCodeSequence] == left


def test_defaults_fill_missing_attributes_where_they_belong():
    entry = ds(PatientName="Doe", ScheduledProcedureStepSequence=[dict(Modality="")])
    entry, notes = corrected(entry, defaults=(("Modality", "MG"),
                                              ("ScheduledStationAETitle", "MAMMO1"),
                                              ("InstitutionName", "Mobile Unit 3")))
    step = entry.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledStationAETitle) == ("MG", "MAMMO1")
    assert entry.InstitutionName == "Mobile Unit 3"
    assert notes == ["Modality: default set", "ScheduledStationAETitle: default set",
                     "InstitutionName: default set"]
    again, notes = corrected(ds(PatientName="Doe"), defaults=(("Modality", "MG"),))
    assert again.ScheduledProcedureStepSequence[0].Modality == "MG"


def test_defaults_never_overwrite():
    entry, notes = corrected(order(modality="CT"), defaults=(("Modality", "MG"),))
    assert entry.ScheduledProcedureStepSequence[0].Modality == "CT" and notes == []


def test_copy_fills_only_an_empty_target_and_move_takes_the_source_away():
    entry = order(PatientComments="allergic")
    entry.ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription = "Head plain"
    copy = (("RequestedProcedureDescription", "ScheduledProcedureStepDescription"),)
    move = (("MedicalAlerts", "PatientComments"),)
    entry, notes = corrected(entry, copy=copy, move=move)
    assert entry.RequestedProcedureDescription == "Head plain"
    assert entry.MedicalAlerts == "allergic" and "PatientComments" not in entry
    assert notes == ["MedicalAlerts: moved from PatientComments",
                     "RequestedProcedureDescription: copied from ScheduledProcedureStepDescription"]
    kept, _ = corrected(order(RequestedProcedureDescription="Given"), copy=copy)
    assert kept.RequestedProcedureDescription == "Given"


def test_corrections_applied_again_change_nothing():
    rules = dict(person_names="upper", procedure_codes=TABLE, unknown_codes="remove",
                 defaults=(("Modality", "MG"),),
                 copy=(("RequestedProcedureDescription", "PatientComments"),))
    entry = order(name=" doe, john\x07", acc="A" * 20, PatientComments="c",
                  RequestedProcedureCodeSequence=[code("CTHD", "LOCAL"), code("Q", "L")])
    entry, first = corrected(entry, **rules)
    assert first
    entry, second = corrected(entry, **rules)
    assert second == []


# --------------------------------------------------------------------------- config


WORKLIST_TOML = """
[[site]]
id = "a"
[[site.destination]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 104
[site.worklist]
ae_title = "RIS"
host = "127.0.0.1"
port = 104
{extra}
"""


def test_worklist_config_defaults_and_corrections_table():
    config = parse_config(WORKLIST_TOML.format(extra="""
modality = "MG"
answer_character_set = "ISO_IR 100"
[site.worklist.corrections]
person_names = "upper"
defaults = { Modality = "MG", ScheduledProcedureStepSequence.ScheduledStationAETitle = "M1" }
procedure_codes = [{ code = "A", scheme = "L", to_code = "B", to_scheme = "S", to_meaning = "M" }]
"""))
    wl = config.sites[0].worklist
    assert (wl.modality, wl.answer_character_set, wl.unrepresentable) == (
        "MG", "ISO_IR 100", "transliterate")
    assert wl.corrections.defaults == (
        ("Modality", "MG"), ("ScheduledProcedureStepSequence.ScheduledStationAETitle", "M1"))
    assert wl.corrections.procedure_codes == (CodeMapping("A", "L", "B", "S", "M"),)


@pytest.mark.parametrize(("extra", "key"), [
    ('answer_character_set = "LATIN1"', "site[0].worklist.answer_character_set"),
    ('name_matching = "fuzzy"', "site[0].worklist.name_matching"),
    ('[site.worklist.corrections]\ndefaults = { Modalty = "CT" }',
     "site[0].worklist.corrections.defaults.Modalty"),
    ('[site.worklist.corrections]\ncopy = { PatientName = "ScheduledProcedureStepSequence" }',
     "site[0].worklist.corrections.copy.PatientName"),
    ('[site.worklist.corrections]\nprocedure_codes = [{ code = "A" }]',
     "site[0].worklist.corrections.procedure_codes[0].scheme"),
])
def test_bad_worklist_settings_are_named(extra, key):
    with pytest.raises(ConfigError) as caught:
        parse_config(WORKLIST_TOML.format(extra=extra))
    assert key in {problem.key for problem in caught.value.problems}


# --------------------------------------------------------------------------- sync


DAY = 1795867200.0  # 2026-11-28 around noon (any zone from UTC-11 to UTC+11)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data", FileKeystore(tmp_path / "key").load_or_create())
    yield s
    s.close()


class FakeServer:
    """What the worklist server answers next: a list of orders, or a result string."""

    def __init__(self, *orders: Dataset) -> None:
        self.orders = list(orders)
        self.failure: str | None = None
        self.queries: list[Dataset] = []

    def __call__(self, cfg: WorklistConfig, query: Dataset) -> Fetched:
        self.queries.append(query)
        if self.failure:
            return Fetched([], self.failure)
        return Fetched([self._wire(o) for o in self.orders], "ok")

    @staticmethod
    def _wire(entry: Dataset) -> Dataset:
        """The order as a C-FIND answer arrives: encoded, in UTF-8 unless it says otherwise."""
        sent = Dataset()
        sent.SpecificCharacterSet = "ISO_IR 192"
        sent.update(entry)
        return decode(io.BytesIO(encode(sent, False, True)), False, True)


def make_worklist(store, server, *, current="a", extra="sync_interval_s = 60\n"):
    text = (WORKLIST_TOML.format(extra=extra)
            + WORKLIST_TOML.replace('id = "a"', 'id = "b"').format(extra=""))
    site = {"id": current}
    worklist = Worklist(store, parse_config(text), lambda: site["id"], calling_ae="FLUXBOX",
                        fetcher=server)
    return worklist, site


def names(worklist, query=None) -> list[str]:
    return sorted(str(r.PatientName) for r in worklist.answer(query or ds(PatientName="")))


def test_a_good_sync_replaces_the_cache_and_orders_gone_leave_it(store):
    server = FakeServer(order(name="A"), order(name="B"))
    worklist, _ = make_worklist(store, server)
    assert worklist.tick(DAY) == "ok"
    assert names(worklist) == ["A", "B"]
    server.orders = [order(name="B"), order(name="C")]
    assert worklist.tick(DAY + 60) == "ok"
    assert names(worklist) == ["B", "C"]
    status = worklist.status(DAY + 70)
    assert status == {"site": "a", "entries": 2, "synced_at": DAY + 60, "age_s": 10.0,
                      "result": "ok", "attempted_at": DAY + 60, "corrections": 0}


@pytest.mark.parametrize("failure", ["unreachable", "partial: connection lost after 1 answers",
                                     "failed: status 0xC000"])
def test_a_failed_or_partial_sync_keeps_the_last_good_list(store, failure):
    server = FakeServer(order(name="A"))
    worklist, _ = make_worklist(store, server)
    worklist.tick(DAY)
    server.orders, server.failure = [], failure
    assert worklist.tick(DAY + 60) == failure
    assert names(worklist) == ["A"]
    status = worklist.status(DAY + 61)
    assert (status["result"], status["entries"], status["synced_at"], status["attempted_at"]) == (
        failure, 1, DAY, DAY + 60)


def test_sync_runs_every_interval_sooner_after_a_failure_and_at_once_when_poked(store):
    server = FakeServer(order())
    worklist, _ = make_worklist(store, server, extra="sync_interval_s = 60\n"
                                                     "retry_interval_s = 10\n")
    assert worklist.tick(DAY) == "ok"
    assert worklist.tick(DAY + 59) is None
    worklist.poke()
    assert worklist.tick(DAY + 59.5) == "ok"
    assert worklist.tick(DAY + 119.5) == "ok"
    server.failure = "unreachable"
    assert worklist.tick(DAY + 179.5) == "unreachable"
    assert worklist.tick(DAY + 185) is None
    assert worklist.tick(DAY + 189.5) == "unreachable"


def test_observing_a_new_site_or_the_link_back_pokes(store):
    worklist, _ = make_worklist(store, FakeServer())
    worklist.observe("a", True)
    assert worklist._poked
    worklist._poked = False
    worklist.observe("a", True)
    assert not worklist._poked
    worklist.observe("a", False)
    worklist.observe("a", True)
    assert worklist._poked


def test_only_the_current_site_syncs_and_is_answered(store):
    server = FakeServer(order(name="A"))
    worklist, site = make_worklist(store, server)
    worklist.tick(DAY)
    site["id"] = "b"
    assert names(worklist) == []
    server.orders = [order(name="B")]
    worklist.tick(DAY + 1)
    assert names(worklist) == ["B"]
    assert server.queries[-1] is not None
    site["id"] = "a"
    assert names(worklist) == ["A"]


def test_no_site_known_answers_nothing_and_syncs_nothing(store):
    server = FakeServer(order(name="A"))
    worklist, site = make_worklist(store, server)
    worklist.tick(DAY)
    site["id"] = None
    assert worklist.tick(DAY + 100) is None
    assert names(worklist) == []
    assert worklist.status(DAY)["site"] is None and worklist.entries_view() == []


def test_the_sync_query_asks_for_every_order_in_the_window_with_filters():
    cfg = WorklistConfig("RIS", "h", 104, days_ahead=3, modality="MG", station_ae_title="M1")
    query = sync_query(cfg, date(2026, 11, 28))
    step = query.ScheduledProcedureStepSequence[0]
    assert step.ScheduledProcedureStepStartDate == "20261127-20261201"
    assert (step.Modality, step.ScheduledStationAETitle) == ("MG", "M1")
    assert "PatientName" in query and query.PatientName == ""
    assert "CodeValue" in query.RequestedProcedureCodeSequence[0]


def test_corrections_are_applied_at_sync_and_shown_per_entry(store):
    server = FakeServer(order(name="doe, john", modality="ct"))
    worklist, _ = make_worklist(store, server, extra="""
[site.worklist.corrections]
person_names = "upper"
defaults = { RequestedProcedureDescription = "Unknown procedure" }
""")
    worklist.tick(DAY)
    [row] = worklist.entries_view()
    assert row["PatientName"] == "DOE^JOHN"
    assert row["ScheduledProcedureStepSequence"][0]["Modality"] == "CT"
    assert row["_corrections"] == ["ScheduledProcedureStepSequence.Modality: upper-cased",
                                   "PatientName: normalized",
                                   "RequestedProcedureDescription: default set"]
    assert worklist.status(DAY)["corrections"] == 3
    answered = worklist.answer(ds(PatientName="", PatientComments=""))
    assert [e.keyword for e in answered[0]] == [
        "SpecificCharacterSet", "PatientName", "PatientComments"]


def test_entries_keep_their_notes_apart_from_the_dataset():
    entry, notes = decode_entry(encode_entry(order(), ["PatientName: trimmed"]))
    assert notes == ["PatientName: trimmed"]
    assert not any(e.tag.is_private for e in entry)
    assert entry_json(entry)["ScheduledProcedureStepSequence"][0]["Modality"] == "CT"


def test_answers_are_in_the_modalitys_character_set(store):
    worklist, _ = make_worklist(store, FakeServer(order(name="Łukasz^Müller")))
    worklist.tick(DAY)
    [latin] = worklist.answer(ds(PatientName=""))
    assert (latin.SpecificCharacterSet, str(latin.PatientName)) == ("ISO_IR 100", "Lukasz^Müller")
    [utf8] = worklist.answer(ds(SpecificCharacterSet="ISO_IR 192", PatientName="Łuk*"))
    assert str(utf8.PatientName) == "Łukasz^Müller"
    [found] = worklist.answer(ds(PatientName="Lukasz*"))  # what a Latin-1 modality sees
    assert found is not None


# --------------------------------------------------------------------------- C-FIND


def status(code: int) -> Dataset:
    return ds(Status=code)


def test_a_sync_answer_counts_only_with_its_final_success():
    pending = [(status(PENDING), order(name="A")), (status(PENDING), order(name="B"))]
    assert _collect(iter([*pending, (status(0), None)])).result == "ok"
    assert len(_collect(iter([*pending, (status(0), None)])).identifiers) == 2
    assert _collect(iter([*pending, (Dataset(), None)])).result.startswith("partial")
    assert _collect(iter([*pending, (status(0xC000), None)])).result == "failed: status 0xC000"
    assert _collect(iter([*pending, (status(CANCEL), None)])).result.startswith("partial")
    assert _collect(iter(pending)).result.startswith("partial")
    unreadable = _collect(iter([(status(PENDING), None), (status(0), None)]))
    assert (unreadable.result, unreadable.unreadable) == ("ok", 1)


def find_event(identifier: Dataset, cancel_after: int | None = None):
    asked = {"n": 0}

    def is_cancelled():
        asked["n"] += 1
        return cancel_after is not None and asked["n"] > cancel_after

    class Event(SimpleNamespace):
        @property
        def is_cancelled(self):
            return is_cancelled()

    return Event(request=SimpleNamespace(AffectedSOPClassUID=ModalityWorklistInformationFind),
                 identifier=identifier)


def test_the_c_find_handler_answers_pending_then_stops_on_cancel(store):
    worklist, _ = make_worklist(store, FakeServer(order(name="A"), order(name="B")))
    worklist.tick(DAY)
    answers = list(worklist.on_c_find(find_event(ds(PatientName=""))))
    assert [code for code, _ in answers] == [PENDING, PENDING]
    cancelled = list(worklist.on_c_find(find_event(ds(PatientName=""), cancel_after=1)))
    assert [code for code, _ in cancelled] == [PENDING, CANCEL]


def test_a_latin1_query_matches_and_is_answered_in_latin1(store):
    worklist, _ = make_worklist(store, FakeServer(order(name="Müller^Jürgen"), order(name="X")))
    worklist.tick(DAY)
    sent = ds(SpecificCharacterSet="ISO_IR 100", PatientName="Mül*")
    received = decode(io.BytesIO(encode(sent, False, True)), False, True)
    [(code, response)] = list(worklist.on_c_find(find_event(received)))
    assert code == PENDING
    assert b"M\xfcller^J\xfcrgen" in encode(response, False, True)
