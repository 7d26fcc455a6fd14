"""Who may call the box, and for what (issue 12, item 7): `appliance.callers`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pynetdicom import evt

from appliance.callers import NOBODY, Callers
from appliance.config import parse_config
from appliance.statuses import NOT_AUTHORIZED

CONFIG = """
[box]
unknown_callers = "refuse"
allowed_calling_aets = ["CT1"]
modalities = { US2 = { host = "10.0.0.22", port = 104 } }

[[site]]
id = "a"

[[site.destination]]
name = "pacs"
ae_title = "PACS_A"
host = "10.20.1.5"
port = 104
commitment = true

[[site.destination]]
name = "archive"
ae_title = "ARCHIVE_A"
host = "10.20.1.6"
port = 104
"""


def _event(calling_aet: str) -> SimpleNamespace:
    return SimpleNamespace(assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title=calling_aet)))


def test_modalities_and_committing_pacs_are_the_callers_the_config_admits():
    callers = Callers.from_config(parse_config(CONFIG))
    assert callers.modalities == {"CT1", "US2"}
    assert callers.reporters == {"PACS_A"}  # the archive is not asked for commitment
    assert callers.association_titles() == ["CT1", "PACS_A", "US2"]


def test_an_empty_list_admits_anyone_unless_unknown_callers_are_refused():
    assert Callers(refuse_unknown=False).association_titles() == []
    assert Callers(refuse_unknown=False).may("ANYONE", "find")
    nobody = Callers(refuse_unknown=True)
    assert nobody.association_titles() == [NOBODY] and len(NOBODY) > 16
    assert not nobody.may("ANYONE", "echo")


@pytest.mark.parametrize(("event_type", "refusal"), [
    (evt.EVT_C_ECHO, NOT_AUTHORIZED),
    (evt.EVT_C_STORE, NOT_AUTHORIZED),
    (evt.EVT_N_CREATE, (NOT_AUTHORIZED, None)),
    (evt.EVT_N_SET, (NOT_AUTHORIZED, None)),
    (evt.EVT_N_ACTION, (NOT_AUTHORIZED, None)),
    (evt.EVT_N_EVENT_REPORT, (NOT_AUTHORIZED, None)),
])
def test_a_refused_caller_never_reaches_the_handler(event_type, refusal):
    calls = []
    guarded = Callers(refuse_unknown=True).guard(event_type, calls.append)
    assert guarded(_event("STRANGER")) == refusal
    assert calls == []


def test_a_pacs_gets_its_commitment_reports_and_echo_but_no_worklist_or_images():
    callers = Callers.from_config(parse_config(CONFIG))
    answered = []

    def find(ev):
        answered.append(ev)
        yield 0xFF00, "an entry"

    guarded_find = callers.guard(evt.EVT_C_FIND, find)
    assert list(guarded_find(_event("PACS_A"))) == [(NOT_AUTHORIZED, None)]  # no entries
    assert answered == []
    assert list(guarded_find(_event("CT1"))) == [(0xFF00, "an entry")]
    report = callers.guard(evt.EVT_N_EVENT_REPORT, lambda ev: (0x0000, None))
    assert report(_event("PACS_A")) == (0x0000, None)
    store = callers.guard(evt.EVT_C_STORE, lambda ev: 0x0000)
    assert store(_event("PACS_A")) == NOT_AUTHORIZED
    assert store(_event("US2")) == 0x0000


def test_notifications_pass_unguarded():
    handler = object()
    assert Callers(refuse_unknown=True).guard(evt.EVT_ACCEPTED, handler) is handler
