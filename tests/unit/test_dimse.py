"""The pynetdicom boundary (`appliance.dimse`): the settings it applies, and the pynetdicom
internals it patches. A pynetdicom release that renames or reshapes one of them fails
here, by name, instead of silently dropping a limit of the box."""

from __future__ import annotations

import inspect
import time

import pynetdicom.acse
import pynetdicom.association
import pynetdicom.dimse_messages
import pynetdicom.dul
import pynetdicom.service_class
import pynetdicom.transport
from pynetdicom import _config
from pynetdicom.transport import AssociationSocket

from appliance import dimse


def test_configure_applies_the_settings_and_can_be_called_again():
    dimse.configure()
    dimse.configure()
    assert _config.STORE_RECV_CHUNKED_DATASET and _config.STORE_SEND_CHUNKED_DATASET
    assert not _config.LOG_REQUEST_IDENTIFIERS and not _config.LOG_RESPONSE_IDENTIFIERS
    assert AssociationSocket._fluxbox_nodelay
    assert pynetdicom.association.time.sleep is not time.sleep  # polling shortened


def test_the_pynetdicom_internals_the_settings_patch_are_still_there():
    # Read from pynetdicom's own modules: the classes' methods are the patched ones now.
    transport = inspect.getsource(pynetdicom.transport)
    dul = inspect.getsource(pynetdicom.dul)
    # TCP_NODELAY: outgoing sockets are made by _create_socket, accepted ones arrive in
    # __init__ as `socket`.
    assert "def _create_socket(self, address" in transport
    assert "self.socket = " in transport
    # The bounded send queue wraps send_pdu, which puts on to_provider_queue.
    assert "def send_pdu(self, primitive" in dul and "self.to_provider_queue.put(" in dul
    # Shorter polling: the association's reactor sleeps through the module's `time`, the
    # DUL through _run_loop_delay.
    assert "time.sleep(" in inspect.getsource(pynetdicom.association)
    assert "self._run_loop_delay" in dul
    # The spool of a received C-STORE data set is a NamedTemporaryFile of dimse_messages.
    # The file a received C-STORE data set goes to is a NamedTemporaryFile of dimse_messages,
    # written with .write and .file.flush(), handed to the handler on the request as
    # _dataset_file; after the handler pynetdicom closes it and unlinks its .name.
    messages = inspect.getsource(pynetdicom.dimse_messages)
    assert "NamedTemporaryFile(delete=False" in messages
    assert "self._data_set_file.write(data[1:])" in messages
    assert "self._data_set_file.file.flush()" in messages
    assert "primitive._dataset_file = self._data_set_file" in messages
    storage = inspect.getsource(pynetdicom.service_class.StorageServiceClass.SCP)
    assert "req._dataset_file.close()" in storage
    assert "os.unlink(req._dataset_file.name)" in storage
    # The storage preference wraps the two negotiations of the acceptor.
    acse = inspect.getsource(pynetdicom.acse)
    assert "negotiate_unrestricted(" in acse and "negotiate_as_acceptor(" in acse


def test_p_data_tf_is_encoded_as_pynetdicom_encodes_it_one_pdu_per_pdv():
    from pynetdicom.pdu import P_DATA_TF, PDU
    from pynetdicom.pdu_primitives import P_DATA

    def pdu(*pdvs):
        primitive = P_DATA()
        primitive.presentation_data_value_list.extend(pdvs)
        return P_DATA_TF(primitive)

    one, two = (1, b"\x03" + b"x" * 99), (3, b"\x00abc")
    assert dimse.encode_p_data_tf(pdu(one)) == PDU.encode(pdu(one))  # pynetdicom's encoder
    assert dimse.encode_p_data_tf(pdu(one, two)) == PDU.encode(pdu(one)) + PDU.encode(pdu(two))
    assert "def send(self, bytestream" in inspect.getsource(pynetdicom.transport)
    assert 'event_queue.put("Evt17")' in inspect.getsource(pynetdicom.transport)
