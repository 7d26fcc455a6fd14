"""The interoperability matrix (issue 11, part 5): real files, real senders, real PACS.

Each case sends the same files twice with the same sender: straight to a PACS (the
reference), and through the box to a second PACS of the same kind. The box is faithful
when the second PACS holds what the first holds: the same data set bytes, or, where the
box had to change an uncompressed encoding (README: As sent), the same values. dciodvfy
then shows the box never made a data set less conformant than it was.

The whole corpus (`tests/corpus.py`) goes storescu -> box -> storescp, round by round (a
round holds each SOP Instance UID once), malformed files included, which must be refused.
A representative subset goes through every other sender and every other PACS.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from appliance.encoding import UNCOMPRESSED
from tests.boxproc import BoxProcess
from tests.corpus import Item, corpus, coverage, make_objects, representative
from tests.integration.conftest import dest
from tests.peers import (
    LOOPBACK,
    CountingSCP,
    DcmQRSCP,
    Orthanc,
    StoreSCP,
    dataset_part,
    dciodvfy,
    gdcmscu,
    pynetdicom_store,
    store_responses,
    storescu,
)

pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings("ignore::UserWarning")]

BOX_AET = "FLUXBOX"


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[Item]:
    made = tmp_path_factory.mktemp("made")
    make_objects(made)
    found, _skipped = corpus(made)
    return found


# --------------------------------------------------------------------------- what a PACS holds


@dataclass(frozen=True)
class Stored:
    """One instance as a PACS stored it."""

    transfer_syntax: str
    part10: bytes

    @property
    def dataset(self) -> bytes:
        return dataset_part(self.part10)

    @property
    def content(self) -> str:
        """What the box de-duplicates on: transfer syntax and data set bytes."""
        return hashlib.sha256(self.transfer_syntax.encode() + b"\0" + self.dataset).hexdigest()


def _stored(part10: bytes) -> tuple[str, Stored]:
    meta = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta
    return str(meta.MediaStorageSOPInstanceUID), Stored(str(meta.TransferSyntaxUID), part10)


class Pacs:
    """A PACS peer seen the same way whatever it is: what it holds, by SOP Instance UID."""

    aet: str
    port: int

    def held(self) -> dict[str, Stored]:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError


class StoreSCPPacs(Pacs):
    def __init__(self, peer: StoreSCP) -> None:
        self.peer, self.aet, self.port = peer, peer.aet, peer.port

    def held(self) -> dict[str, Stored]:
        return dict(_stored(f.read_bytes()) for f in self.peer.files())

    def clear(self) -> None:
        for f in self.peer.files():
            f.unlink()


class DcmQRSCPPacs(StoreSCPPacs):
    def clear(self) -> None:  # one round only: dcmqrscp keeps an index of its files
        pass


class OrthancPacs(Pacs):
    def __init__(self, peer: Orthanc) -> None:
        self.peer, self.aet, self.port = peer, peer.aet, peer.dicom_port

    def held(self) -> dict[str, Stored]:
        return dict(_stored(self.peer.instance_file(i)) for i in self.peer.instances())

    def clear(self) -> None:
        self.peer.delete_all()


class CountingPacs(Pacs):
    def __init__(self, peer: CountingSCP) -> None:
        self.peer, self.aet, self.port = peer, peer.ae_title, peer.port
        self._seen = 0

    def held(self) -> dict[str, Stored]:
        held = {}
        for record in self.peer.records[self._seen:]:
            if record.status == 0 and record.sop_instance_uid in self.peer.data:
                held[record.sop_instance_uid] = Stored(
                    record.transfer_syntax, _part10(self.peer.data[record.sop_instance_uid],
                                                    record))
        return held

    def clear(self) -> None:
        self._seen = len(self.peer.records)
        self.peer.data.clear()


def _part10(dataset: bytes, record) -> bytes:
    """A Part 10 file around a data set as pynetdicom received it (for dciodvfy)."""
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom.dsutils import create_file_meta

    meta = io.BytesIO()
    write_file_meta_info(meta, create_file_meta(
        sop_class_uid=record.sop_class_uid, sop_instance_uid=record.sop_instance_uid,
        transfer_syntax=record.transfer_syntax))
    return b"\0" * 128 + b"DICM" + meta.getvalue() + dataset


@dataclass
class PacsPair:
    direct: Pacs
    via_box: Pacs


def _storescp_pair() -> Iterator[PacsPair]:
    with StoreSCP(aet="DIRECT") as direct, StoreSCP(aet="PACS") as via:
        yield PacsPair(StoreSCPPacs(direct), StoreSCPPacs(via))


def _orthanc_pair() -> Iterator[PacsPair]:
    with Orthanc(aet="DIRECT") as direct, Orthanc(aet="PACS") as via:
        yield PacsPair(OrthancPacs(direct), OrthancPacs(via))


def _pynetdicom_pair() -> Iterator[PacsPair]:
    with CountingSCP(ae_title="DIRECT", keep_data=True) as direct, \
            CountingSCP(ae_title="PACS", keep_data=True) as via:
        yield PacsPair(CountingPacs(direct), CountingPacs(via))


def _dcmqrscp_pair() -> Iterator[PacsPair]:
    with DcmQRSCP(aet="DIRECT") as direct, DcmQRSCP(aet="PACS") as via:
        yield PacsPair(DcmQRSCPPacs(direct), DcmQRSCPPacs(via))


PACS_KINDS: dict[str, Callable[[], Iterator[PacsPair]]] = {
    "storescp": _storescp_pair, "orthanc": _orthanc_pair, "pynetdicom": _pynetdicom_pair,
    "dcmqrscp": _dcmqrscp_pair,
}


# --------------------------------------------------------------------------- senders

# Each sender sends files to (aet, port) and returns what it was told per file: True for
# success or warning, False for a failure status, None where it cannot tell.
Sender = Callable[[str, int, list[Path]], dict[Path, bool | None]]


def _by_storescu(aet: str, port: int, files: list[Path]) -> dict[Path, bool | None]:
    done = storescu(LOOPBACK, port, files, called_aet=aet, extra_args=["--no-halt"])
    answers = dict(store_responses(done))
    return {f: (answers[str(f)] == "Success" or answers[str(f)].startswith("Warning"))
            if str(f) in answers else None for f in files}


def _by_pynetdicom(aet: str, port: int, files: list[Path]) -> dict[Path, bool | None]:
    statuses = pynetdicom_store(LOOPBACK, port, files, called_aet=aet)
    return {f: None if s is None else (s == 0 or (s & 0xF000) == 0xB000)
            for f, s in statuses.items()}


def _by_gdcmscu(aet: str, port: int, files: list[Path]) -> dict[Path, bool | None]:
    # One association per file: gdcmscu 3.0 dies on a file it cannot handle (a SOP class
    # it does not know, a deflated data set) and would take the rest with it.
    for f in files:
        gdcmscu(LOOPBACK, port, [f], called_aet=aet)
    return dict.fromkeys(files)  # gdcmscu tells no status per file


class _OrthancModality:
    """Orthanc as the modality: files uploaded over REST, sent with /modalities/{id}/store."""

    def __init__(self, orthanc: Orthanc) -> None:
        self.orthanc = orthanc
        self.ids: dict[Path, str] = {}

    def __call__(self, aet: str, port: int, files: list[Path]) -> dict[Path, bool | None]:
        for f in files:
            if f not in self.ids:
                self.ids[f] = self.orthanc.upload(f.read_bytes())
        name = f"to-{aet.lower()}"
        self.orthanc.rest("PUT", f"/modalities/{name}",
                          {"AET": aet, "Host": LOOPBACK, "Port": port})
        self.orthanc.send_to(name, [self.ids[f] for f in files])
        return dict.fromkeys(files)


# --------------------------------------------------------------------------- the check


def _values(part10: bytes) -> dict:
    """Every value, less group lengths and trailing padding (senders may drop them)."""
    ds = pydicom.dcmread(io.BytesIO(part10))
    return {e.tag: e.value for e in ds if e.tag.element != 0 and e.tag != 0xFFFCFFFC}


def faithfulness(direct: Stored | None, via: Stored | None,
                 source: Path | None = None) -> str | None:
    """What is wrong with the instance the box delivered, compared with the one the same
    sender delivered straight to the same kind of PACS (or, where the PACS took nothing
    from the sender, with the values of the `source` file); None if nothing."""
    if via is None:
        return None if direct is None else "not delivered through the box"
    if direct is None:
        if source is not None and _values(via.part10) == _values(source.read_bytes()):
            return None
        return "the PACS got through the box what it never got from the sender"
    if via.dataset == direct.dataset:
        return None
    if via.transfer_syntax == direct.transfer_syntax:
        return "data set bytes differ"
    if not {via.transfer_syntax, direct.transfer_syntax} <= set(UNCOMPRESSED):
        return f"re-encoded {direct.transfer_syntax} -> {via.transfer_syntax}"
    if _values(via.part10) != _values(direct.part10):
        return "a value changed with the encoding"
    return None


def _conformance_lost(direct: Stored, via: Stored, tmp: Path) -> set[str]:
    """dciodvfy errors of the delivered file that the reference file does not have."""
    paths = []
    for name, stored in (("direct", direct), ("via", via)):
        path = tmp / f"{name}.dcm"
        path.write_bytes(stored.part10)
        paths.append(path)
    return dciodvfy(paths[1]) - dciodvfy(paths[0])


@dataclass
class RoundResult:
    problems: list[str]
    delivered: int
    refused: int
    duplicates: int = 0


def _settled(box: BoxProcess) -> list[dict] | None:
    rows = box.studies()
    return rows if all(r["state"] in ("complete", "failed") for r in rows) else None


def run_round(send: Sender, box: BoxProcess, pacs: PacsPair, round_items: list[Item],
              tmp: Path, *, verify: bool = False,
              history: dict[str, str] | None = None) -> RoundResult:
    """Send one round both ways, compare what the two PACS hold, then clear them.

    `history` (SOP Instance UID -> content the box took in an earlier round) tells a file
    that is an earlier one again: the box acknowledges it and sends it no second time
    (PRODUCT.md, Guarantees)."""
    history = {} if history is None else history
    files = [i.path for i in round_items]
    send(pacs.direct.aet, pacs.direct.port, files)
    answers = send(BOX_AET, box.port, files)
    box.wait_for(lambda: _settled(box), 120, "every study complete or failed", poll_s=0.2)
    direct, via = pacs.direct.held(), pacs.via_box.held()
    problems, delivered, refused, duplicates = [], 0, 0, 0
    for item in round_items:
        answer = answers.get(item.path)
        reference = direct.get(item.sop_instance)
        if item.expect == "refuse":
            refused += 1
            if answer is True or item.sop_instance in via:
                problems.append(f"{item.name}: accepted, but {item.why}")
            continue
        if answer is False:
            why = [line.split(" ", 3)[-1] for line in box.log().splitlines()
                   if "instance refused" in line or "instance not stored" in line]
            problems.append(f"{item.name}: refused by the box ({why[-3:]})")
            continue
        again = reference is not None and history.get(item.sop_instance) == reference.content
        if again and item.sop_instance not in via:
            duplicates += 1
            continue
        if reference is not None:
            history[item.sop_instance] = reference.content
        problem = faithfulness(reference, via.get(item.sop_instance), item.path)
        if problem:
            problems.append(f"{item.name}: {problem}")
        elif item.sop_instance in via:
            delivered += 1
            if verify:
                lost = _conformance_lost(direct[item.sop_instance], via[item.sop_instance], tmp)
                if lost:
                    problems.append(f"{item.name}: less conformant: {sorted(lost)[:3]}")
    pacs.direct.clear()
    pacs.via_box.clear()
    return RoundResult(problems, delivered, refused, duplicates)


def _box(make_box, pacs: PacsPair) -> BoxProcess:
    return make_box([dest("pacs", pacs.via_box.aet, pacs.via_box.port)],
                    transmit='forward = "streaming"')


# --------------------------------------------------------------------------- tests


def test_corpus_has_200_files_of_many_classes_and_syntaxes(items):
    classes, syntaxes = coverage(items)
    assert sum(i.source != "made" for i in items) >= 200  # files the project did not write
    assert len(classes) >= 20 and len(syntaxes) >= 12
    assert sum(i.expect == "refuse" for i in items) >= 5
    assert all(i.why for i in items)


def test_whole_corpus_storescu_to_box_to_storescp(make_box, items, tmp_path):
    """Every file: delivered byte for byte and no less conformant, or refused if malformed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs = _storescp_pair()
        pacs = next(pairs)
        try:
            box = _box(make_box, pacs).start()
            problems, delivered, refused, history = [], 0, 0, {}
            for n in range(max(i.round for i in items) + 1):
                result = run_round(_by_storescu, box, pacs, [i for i in items if i.round == n],
                                   tmp_path, verify=True, history=history)
                problems += result.problems
                delivered += result.delivered + result.duplicates
                refused += result.refused
        finally:
            pairs.close()
    assert problems == [], "\n".join(problems)
    assert delivered >= 200
    assert refused == sum(i.expect == "refuse" for i in items)


SENDERS = ["pynetdicom", "gdcmscu", "orthanc"]
RECEIVERS = ["orthanc", "pynetdicom", "dcmqrscp"]
PAIRS = [(s, "storescp") for s in SENDERS] + [("storescu", r) for r in RECEIVERS]


@pytest.mark.parametrize(("sender", "receiver"), PAIRS)
def test_representative_files_through_every_sender_and_pacs(sender, receiver, make_box, items,
                                                            tmp_path):
    subset = representative(items)
    if receiver == "dcmqrscp":  # it accepts uncompressed syntaxes only
        subset = [i for i in subset if i.transfer_syntax in UNCOMPRESSED]
    pairs = PACS_KINDS[receiver]()
    pacs = next(pairs)
    try:
        box = _box(make_box, pacs).start()
        if sender == "orthanc":
            # a shared machine may be slow: Orthanc's default 10 s DIMSE time-out is short
            with Orthanc(aet="MODALITY", extra_config={"DicomScuTimeout": 120}) as modality:
                result = run_round(_OrthancModality(modality), box, pacs, subset, tmp_path)
        else:
            send = {"storescu": _by_storescu, "pynetdicom": _by_pynetdicom,
                    "gdcmscu": _by_gdcmscu}[sender]
            result = run_round(send, box, pacs, subset, tmp_path)
    finally:
        pairs.close()
    assert result.problems == [], "\n".join(result.problems)
    assert result.delivered >= len(subset) * 0.8, f"{result.delivered} of {len(subset)}"


def test_the_comparison_sees_a_changed_value_and_allows_only_encoding_changes(items):
    """The check above can fail: a changed value, or a compressed file re-encoded, is seen."""
    ct = next(i for i in items if i.path.name == "CT_small.dcm")
    ds = pydicom.dcmread(ct.path)

    def stored(dataset: pydicom.Dataset, syntax: str) -> Stored:
        out = io.BytesIO()
        dataset.file_meta.TransferSyntaxUID = syntax
        dataset.save_as(out, enforce_file_format=True)
        return Stored(syntax, out.getvalue())

    original = stored(ds, pydicom.uid.ExplicitVRLittleEndian)
    assert faithfulness(original, original) is None
    assert faithfulness(original, stored(ds, pydicom.uid.ImplicitVRLittleEndian)) is None
    assert faithfulness(original, None) == "not delivered through the box"
    changed = pydicom.dcmread(ct.path)
    changed.PatientID = "CHANGED"
    assert faithfulness(original, stored(changed, pydicom.uid.ImplicitVRLittleEndian)) == (
        "a value changed with the encoding")
    assert faithfulness(original, stored(changed, pydicom.uid.ExplicitVRLittleEndian)) == (
        "data set bytes differ")
    j2k = next(i for i in items if i.transfer_syntax == pydicom.uid.JPEG2000Lossless)
    assert faithfulness(Stored(j2k.transfer_syntax, j2k.path.read_bytes()), original).startswith(
        "re-encoded")
