"""The PDU limits (issue 11, part 2), and the pynetdicom internals they replace."""

from __future__ import annotations

import inspect

import pynetdicom
import pynetdicom.association
import pynetdicom.dul
import pynetdicom.fsm
import pytest
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import StateMachine

from appliance import dimse, upper_layer
from appliance.upper_layer import (
    ASSOCIATION_PDU_MAX,
    COMMAND_SET_MAX,
    DEFAULT_MAX_PDU,
    MAX_MAX_PDU,
    MESSAGE_DATA_SET_MAX,
    SEND_MAX_PDU,
    PduRefused,
    check_message,
    pdu_limit,
    send_pdu_size,
)


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


# The limits replace pynetdicom internals; these fail loudly when pynetdicom changes them.

def test_pynetdicom_is_the_version_the_limits_were_written_for():
    assert pynetdicom.__version__.startswith("3.0."), (
        "appliance/upper_layer.py replaces DULServiceProvider._read_pdu_data: "
        "check it against this pynetdicom before moving the pin")


def test_the_limits_are_in_place_once_dimse_is_imported():
    assert dimse  # imported for its settings
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
