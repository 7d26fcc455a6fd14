"""The PDU limits (issue 11, part 2), and the pynetdicom internals they replace."""

from __future__ import annotations

import inspect
import socketserver
import struct

import pynetdicom
import pynetdicom.association
import pynetdicom.dimse
import pynetdicom.dul
import pynetdicom.fsm
import pytest
from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import StateMachine

from appliance import dimse, receiving, upper_layer
from appliance.upper_layer import (
    ASSOCIATION_PDU_MAX,
    COMMAND_SET_MAX,
    DEFAULT_MAX_PDU,
    MAX_MAX_PDU,
    MESSAGE_DATA_SET_MAX,
    PROPOSED_CONTEXTS_MAX,
    SEND_MAX_PDU,
    SYNTAXES_PER_CONTEXT_MAX,
    PduRefused,
    association_problem,
    check_message,
    pdu_limit,
    send_pdu_size,
)
from tests import rawpdu


def test_p_data_may_be_as_long_as_this_side_announced():
    assert pdu_limit(0x04, 16384) == 16384
    assert pdu_limit(0x04, DEFAULT_MAX_PDU) == DEFAULT_MAX_PDU


def test_a_side_announcing_unlimited_still_reads_a_bounded_p_data():
    assert pdu_limit(0x04, 0) == MAX_MAX_PDU
    assert pdu_limit(0x04, 2**32 - 1) == MAX_MAX_PDU


@pytest.mark.parametrize("pdu_type", [0x01, 0x02, 0x03, 0x05, 0x06, 0x07])
def test_other_pdus_are_bounded_whatever_was_negotiated(pdu_type):
    assert pdu_limit(pdu_type, 16384) == ASSOCIATION_PDU_MAX
    assert pdu_limit(pdu_type, 0) == ASSOCIATION_PDU_MAX


def test_the_box_honours_a_smaller_peer_maximum_and_caps_a_larger_or_unlimited_one():
    assert send_pdu_size(16384) == 16384
    assert send_pdu_size(0) == SEND_MAX_PDU
    assert send_pdu_size(2**32 - 1) == SEND_MAX_PDU


def test_dimse_messages_held_in_memory_are_capped():
    check_message(COMMAND_SET_MAX, MESSAGE_DATA_SET_MAX)
    with pytest.raises(PduRefused):
        check_message(COMMAND_SET_MAX + 1, 0)
    with pytest.raises(PduRefused):
        check_message(0, MESSAGE_DATA_SET_MAX + 1)


def test_the_default_fits_the_bounds_the_config_allows():
    assert upper_layer.MIN_MAX_PDU <= DEFAULT_MAX_PDU <= MAX_MAX_PDU
    # room for 128 presentation contexts of every known syntax (under 200 KB), little more
    assert 200_000 < ASSOCIATION_PDU_MAX <= 262_144


def _variable_field(contexts, user_items: bytes = b"") -> bytes:
    """An A-ASSOCIATE-RQ's variable field with (abstract, syntaxes) `contexts` (all with
    ID 1, so there may be more than PS3.8 allows) and `user_items` in its user information."""
    body = rawpdu.associate_rq(contexts=[])[6:]
    user = 68 + 4 + len(rawpdu.APPLICATION_CONTEXT)  # fixed fields, application context
    items = b"".join(rawpdu.presentation_context(1, a, ts) for a, ts in contexts)
    return body[:user] + items + rawpdu.item(0x50, body[user + 4:] + user_items)


def test_a_request_proposing_every_known_syntax_in_128_contexts_is_decoded():
    every = [*ALL_TRANSFER_SYNTAXES, *receiving.RETIRED_JPEG]
    assert len(every) <= SYNTAXES_PER_CONTEXT_MAX
    role = rawpdu.item(0x54, struct.pack(">H", 17) + rawpdu.VERIFICATION.encode() + b"\1\1")
    body = _variable_field([(rawpdu.VERIFICATION, every)] * 128, role * 128)
    assert len(body) < ASSOCIATION_PDU_MAX
    assert association_problem(body) is None


@pytest.mark.parametrize(("contexts", "problem"), [
    ([(rawpdu.VERIFICATION, ["1.2"])] * (PROPOSED_CONTEXTS_MAX + 1), "presentation contexts"),
    ([(rawpdu.VERIFICATION, ["1.2"] * (SYNTAXES_PER_CONTEXT_MAX + 1))], "transfer syntaxes"),
    ([(rawpdu.VERIFICATION, ["1.2"] * SYNTAXES_PER_CONTEXT_MAX)] * PROPOSED_CONTEXTS_MAX,
     "items"),
], ids=["contexts", "syntaxes-in-a-context", "items"])
def test_a_request_holding_more_is_refused_before_it_is_decoded(contexts, problem):
    assert problem in association_problem(_variable_field(contexts))


def test_items_are_counted_in_user_information_too():
    role = rawpdu.item(0x54, b"\0\1" + b"1" + b"\1\1")  # SCP/SCU role selection
    contexts = [(rawpdu.VERIFICATION, ["1.2"] * 10)] * 128  # 1,536 items
    assert association_problem(_variable_field(contexts, role * 6_000)) is None
    assert "items" in association_problem(_variable_field(contexts, role * 7_000))


def test_a_truncated_request_is_left_to_the_decoder():
    body = _variable_field([(rawpdu.VERIFICATION, [rawpdu.IMPLICIT_LE])])
    assert association_problem(body[:-3]) is None


# The limits replace pynetdicom internals; these fail loudly when pynetdicom changes them.

def test_pynetdicom_is_the_version_the_limits_were_written_for():
    assert pynetdicom.__version__.startswith("3.0."), (
        "appliance/upper_layer.py replaces DULServiceProvider._read_pdu_data: "
        "check it against this pynetdicom before moving the pin")


def test_the_limits_are_in_place_once_dimse_is_configured():
    dimse.configure()
    assert DULServiceProvider._read_pdu_data is upper_layer.read_pdu
    assert getattr(DULServiceProvider, "fluxbox_upper_layer", False)
    assert "guarded_receive_primitive" in DIMSEServiceProvider.receive_primitive.__qualname__
    assert isinstance(DIMSEServiceProvider.maximum_pdu_size, property)
    assert "guarded_do_action" in StateMachine.do_action.__qualname__


def test_the_pynetdicom_internals_the_limits_use_are_still_there():
    dul_init = inspect.getsource(pynetdicom.dul)
    assert "self.event_queue" in dul_init and "self._recv_pdu" in dul_init
    assert callable(DULServiceProvider._decode_pdu)
    # Message parts are counted by the position of these BytesIO objects.
    source = inspect.getsource(DIMSEMessage.decode_msg)
    assert "self.encoded_command_set.write(" in source
    assert "cast(BytesIO, self.data_set).write(" in source
    assert "self._data_set_file" in source
    # A waiting acceptor is woken by a None on to_user_queue (its time-out path).
    reactor = inspect.getsource(pynetdicom.association.Association.run_reactor)
    assert "primitive = self.dul.receive_pdu(wait=True, timeout=self.acse_timeout)" in reactor
    assert "if primitive is None:" in reactor
    # Connections are admitted by socketserver's verify_request, on the server's thread.
    serve = inspect.getsource(socketserver.BaseServer._handle_request_noblock)
    assert "if self.verify_request(request, client_address):" in serve
    assert issubclass(pynetdicom.transport.AssociationServer, socketserver.BaseServer)
    # An N-EVENT-REPORT request is served on a thread of its own, made by make_target.
    receive = inspect.getsource(pynetdicom.dimse)
    assert "target=make_target(self.assoc._serve_request)" in receive
    assert "self.msg_queue.put((context_id" in receive
    assert "counting" in pynetdicom.dimse.make_target.__qualname__


def test_the_pynetdicom_internals_a_request_on_an_accepted_association_uses_are_still_there():
    # dimse.request_unless_releasing pauses the reactor as pynetdicom's send_n_* do, and
    # reads the state of an acceptor that received the peer's A-RELEASE-RQ.
    send = inspect.getsource(pynetdicom.association.Association.send_n_event_report)
    assert "self._reactor_checkpoint.clear()" in send and "while not self._is_paused:" in send
    assert "self.dimse.send_msg(req" in send
    reactor = inspect.getsource(pynetdicom.association.Association._run_reactor)
    assert "self.acse.is_release_requested()" in reactor
    assert pynetdicom.fsm.TRANSITION_TABLE[("Evt12", "Sta6")] == "AR-2"
    assert pynetdicom.fsm.ACTIONS["AR-2"][2] == dimse.RELEASE_REQUESTED_STATE
    dimse_init = inspect.getsource(DIMSEServiceProvider.__init__)
    assert "self.msg_queue" in dimse_init
