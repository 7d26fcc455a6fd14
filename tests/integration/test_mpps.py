"""MPPS: relayed to the RIS in order after an outage; COMPLETED closes the study exactly."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, ModalityPerformedProcedureStep

from tests.boxproc import BoxProcess, box_toml
from tests.peers import CountingSCP, free_port


class RecordingRis:
    """A pynetdicom MPPS SCP that records (message, status) in arrival order. Like a real
    RIS it is slow to create a step and refuses an N-SET for a step it does not know
    (0x0112, No such SOP Instance)."""

    def __init__(self, port: int, create_s: float = 0.0) -> None:
        self.port = port
        self.create_s = create_s
        self.messages: list[tuple[str, str]] = []
        self.steps: set[str] = set()
        self.refuse_creates: set[str] = set()  # steps whose N-CREATE it refuses (0x0110)
        self._lock = threading.Lock()
        self.server = None

    def start(self) -> None:
        ae = AE(ae_title="RIS")
        ae.add_supported_context(ModalityPerformedProcedureStep)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_N_CREATE, self._create), (evt.EVT_N_SET, self._set)])

    def _create(self, event):
        ds = event.attribute_list
        time.sleep(self.create_s)
        with self._lock:
            if str(event.request.AffectedSOPInstanceUID) in self.refuse_creates:
                self.messages.append(("refused create", "0x0110"))
                return 0x0110, None
            self.messages.append(("create", str(ds.PerformedProcedureStepStatus)))
            self.steps.add(str(event.request.AffectedSOPInstanceUID))
        return 0x0000, ds

    def _set(self, event):
        ds = event.modification_list
        with self._lock:
            if str(event.request.RequestedSOPInstanceUID) not in self.steps:
                self.messages.append(("refused set", "0x0112"))
                return 0x0112, None
            self.messages.append(("set", str(ds.get("PerformedProcedureStepStatus", ""))))
        return 0x0000, ds

    def forget(self) -> None:
        """Lose every step it knew (a RIS restored from backup, or another RIS)."""
        with self._lock:
            self.steps.clear()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def _config(tmp_path, pacs_port: int, ris_port: int, transmit: str) -> str:
    sites = (f'[[site]]\nid = "a"\n[site.mpps]\nae_title = "RIS"\nhost = "127.0.0.1"\n'
             f'port = {ris_port}\n[[site.destination]]\nname = "pacs"\nae_title = "PACS"\n'
             f'host = "127.0.0.1"\nport = {pacs_port}\n')
    return box_toml(tmp_path / "data", free_port(), sites, transmit=transmit)


def _modality(port: int):
    ae = AE(ae_title="CT1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="FLUXBOX")
    assert assoc.is_established
    return assoc


def _create_request(study_uid: str) -> Dataset:
    ds = Dataset()
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.AccessionNumber = "ACC1"
    ds.ScheduledStepAttributesSequence = [step]
    ds.PatientID = "FLX0001"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    return ds


def _completed(files) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    series = Dataset()
    series.SeriesInstanceUID = pydicom.dcmread(files[0]).SeriesInstanceUID
    refs = []
    for path in files:
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = pydicom.dcmread(path).SOPInstanceUID
        refs.append(item)
    series.ReferencedImageSequence = refs
    ds.PerformedSeriesSequence = [series]
    return ds


@pytest.mark.parametrize("associations", [1, 4])
def test_mpps_reaches_the_ris_in_order_after_an_outage_and_completed_closes_the_study(
        tmp_path, ct_study, associations):
    ris = RecordingRis(free_port(), create_s=0.5)  # down at first, then slow to create
    with CountingSCP(ae_title="PACS") as pacs:
        transmit = f"study_quiet_s = 600\nassociations = {associations}\nadaptive = false"
        text = _config(tmp_path, pacs.port, ris.port, transmit)
        with BoxProcess(text, tmp_path) as box:
            study_uid = pydicom.dcmread(ct_study[0]).StudyInstanceUID
            assoc = _modality(box.port)
            step_uid = generate_uid()
            status, _ = assoc.send_n_create(_create_request(study_uid),
                                            ModalityPerformedProcedureStep, step_uid)
            assert status.Status == 0
            for path in ct_study:
                assert assoc.send_c_store(path).Status == 0
            status, _ = assoc.send_n_set(_completed(ct_study), ModalityPerformedProcedureStep,
                                         step_uid)
            assert status.Status == 0
            assoc.release()
            # quiet time is 10 minutes: only the MPPS COMPLETED can close the study now
            (row,) = box.wait_states("complete", timeout_s=30)
            assert row["findings"] == []
            assert len(pacs.uids()) == len(ct_study)
            ris.start()
            try:
                box.wait_for(lambda: len(ris.messages) == 2, 30, "both messages at the RIS")
                assert ris.messages == [("create", "IN PROGRESS"), ("set", "COMPLETED")]
            finally:
                ris.stop()


def test_an_instance_listed_by_mpps_but_missing_holds_the_study_then_is_a_finding(
        tmp_path, ct_study):
    ris = RecordingRis(free_port())
    ris.start()
    try:
        with CountingSCP(ae_title="PACS") as pacs:
            text = _config(tmp_path, pacs.port, ris.port, "study_quiet_s = 600\nmpps_wait_s = 3")
            with BoxProcess(text, tmp_path) as box:
                study_uid = pydicom.dcmread(ct_study[0]).StudyInstanceUID
                assoc = _modality(box.port)
                step_uid = generate_uid()
                assoc.send_n_create(_create_request(study_uid), ModalityPerformedProcedureStep,
                                    step_uid)
                for path in ct_study[:-1]:  # the last image never comes
                    assert assoc.send_c_store(path).Status == 0
                assoc.send_n_set(_completed(ct_study), ModalityPerformedProcedureStep, step_uid)
                assoc.release()
                assert box.studies()[0]["state"] == "receiving", "held for the missing image"
                (row,) = box.wait_states("complete", timeout_s=30)
                assert any("1 of 12 instances" in f for f in row["findings"]), row["findings"]
                assert len(pacs.uids()) == len(ct_study) - 1
    finally:
        ris.stop()


def _set_completed() -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    return ds


def _step_created_then_forgotten(box: BoxProcess, ris: RecordingRis, assoc) -> str:
    """An N-CREATE relayed to the RIS, which then loses it."""
    step_uid = generate_uid()
    status, _ = assoc.send_n_create(_create_request(generate_uid()),
                                    ModalityPerformedProcedureStep, step_uid)
    assert status.Status == 0
    box.wait_for(lambda: ris.messages == [("create", "IN PROGRESS")], 30, "the N-CREATE")
    ris.forget()
    return step_uid


@contextmanager
def _box_and_ris(tmp_path):
    """A box relaying MPPS to a recording RIS (its PACS a counting SCP), studies kept open."""
    ris = RecordingRis(free_port())
    ris.start()
    try:
        with CountingSCP(ae_title="PACS") as pacs, BoxProcess(
                _config(tmp_path, pacs.port, ris.port, "study_quiet_s = 600"), tmp_path) as box:
            yield box, ris
    finally:
        ris.stop()


def test_an_n_set_of_a_step_the_ris_lost_goes_again_after_its_n_create(tmp_path):
    """Issue 8: the RIS answers an N-SET with 0x0112 (No such SOP Instance: it lost the
    step, or the N-CREATE went to another RIS). The box sends the step's N-CREATE again,
    then the N-SET, and the step reaches the RIS whole."""
    with _box_and_ris(tmp_path) as (box, ris):
        assoc = _modality(box.port)
        step_uid = _step_created_then_forgotten(box, ris, assoc)
        status, _ = assoc.send_n_set(_set_completed(), ModalityPerformedProcedureStep,
                                     step_uid)
        assert status.Status == 0
        assoc.release()
        box.wait_for(lambda: len(ris.messages) >= 4, 30, "the step sent again")
        assert ris.messages == [("create", "IN PROGRESS"), ("refused set", "0x0112"),
                                ("create", "IN PROGRESS"), ("set", "COMPLETED")]
        assert not [e for e in box.status()["errors"] if e.startswith("MPPS")]


def test_an_n_set_the_ris_still_does_not_know_fails_with_a_reason_and_later_steps_go_on(
        tmp_path):
    """Issue 8: when the RIS refuses the N-CREATE sent again too, the N-SET fails once, with
    a reason `fluxbox status` shows, and the next procedure step still reaches the RIS."""
    with _box_and_ris(tmp_path) as (box, ris):
        assoc = _modality(box.port)
        step_uid = _step_created_then_forgotten(box, ris, assoc)
        ris.refuse_creates.add(step_uid)
        assoc.send_n_set(_set_completed(), ModalityPerformedProcedureStep, step_uid)
        reason = ("MPPS to a/ris failed: RIS does not know this procedure step (0x0112) "
                  "and refused its N-CREATE sent again: status 0x0110")
        box.wait_for(lambda: reason in box.status()["errors"], 30, "the reason shown")
        status, _ = assoc.send_n_create(_create_request(generate_uid()),
                                        ModalityPerformedProcedureStep, generate_uid())
        assert status.Status == 0
        assoc.release()
        box.wait_for(lambda: len(ris.messages) >= 4, 30, "the next step at the RIS")
        assert ris.messages == [("create", "IN PROGRESS"), ("refused set", "0x0112"),
                                ("refused create", "0x0110"), ("create", "IN PROGRESS")]
