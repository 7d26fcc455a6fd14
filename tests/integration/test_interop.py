"""The interoperability matrix (issue 11, part 5): real files, real senders, real PACS.

Each case sends the same files twice with the same sender: straight to a PACS (the
reference), and through the box to a second PACS of the same kind. The box is faithful
when the second PACS holds what the first holds: the same data set bytes, or, where the
box had to change an uncompressed encoding (README: As sent), the same values. dciodvfy
then shows the box never made a data set less conformant than it was on arrival: every
delivered file, re-encoded ones included, against the file the sender sent.

The whole corpus (`tests/corpus.py`) goes storescu -> box -> storescp, round by round (a
round holds each SOP Instance UID once), malformed files included, which must be refused.
A representative subset goes through every other sender and every other PACS, one of
which accepts Implicit VR Little Endian only (the box re-encodes for it). Every file is
delivered but the ones `EXCLUDED` names, each with the reason and how far it gets.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pydicom
import pytest
from pynetdicom.dsutils import encode

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
DEFLATED = str(pydicom.uid.DeflatedExplicitVRLittleEndian)


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


def _implicit_only_pair() -> Iterator[PacsPair]:
    """storescp accepting Implicit VR Little Endian only: the box re-encodes every other
    uncompressed syntax for it (the sender, going straight, does the same)."""
    with StoreSCP(aet="DIRECT", extra_args=["--implicit"]) as direct, \
            StoreSCP(aet="PACS", extra_args=["--implicit"]) as via:
        yield PacsPair(StoreSCPPacs(direct), StoreSCPPacs(via))


PACS_KINDS: dict[str, Callable[[], Iterator[PacsPair]]] = {
    "storescp": _storescp_pair, "orthanc": _orthanc_pair, "pynetdicom": _pynetdicom_pair,
    "dcmqrscp": _dcmqrscp_pair, "storescp-implicit": _implicit_only_pair,
}
# PACS that accept the uncompressed syntaxes only: they get the uncompressed files (the box
# never decompresses: PRODUCT.md, compressed data reaches the PACS as the modality sent it).
UNCOMPRESSED_ONLY = ("dcmqrscp", "storescp-implicit")


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
    """Every value as Implicit VR Little Endian shows it, less group lengths and Data Set
    Trailing Padding at any depth (no meaning, PS3.10 7.2; DCMTK's senders drop them even
    inside items). A private element's VR is unknown in implicit VR, so only the bytes of
    its value count: a change to implicit VR keeps them."""
    ds = pydicom.dcmread(io.BytesIO(part10))
    if ds.original_encoding[1] is not False:  # big endian stays as read (words unswapped)
        ds = pydicom.dcmread(io.BytesIO(encode(ds, True, True, False)), force=True)
    _drop_meaningless(ds)
    return {e.tag: e.value for e in ds}


def _drop_meaningless(ds: pydicom.Dataset) -> None:
    for element in list(ds):
        if element.tag.element == 0 or element.tag == 0xFFFCFFFC:
            del ds[element.tag]
        elif element.VR == "SQ":
            for item in element.value:
                _drop_meaningless(item)


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
    sent = _syntax(source) if source is not None else direct.transfer_syntax
    if via.transfer_syntax == direct.transfer_syntax == sent:
        return "data set bytes differ"  # neither the sender nor the box re-encoded it
    if not {via.transfer_syntax, direct.transfer_syntax} <= set(UNCOMPRESSED):
        return f"re-encoded {direct.transfer_syntax} -> {via.transfer_syntax}"
    if _values(via.part10) != _values(direct.part10):
        return "a value changed with the encoding"
    return None


def _syntax(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


# dciodvfy errors a change of encoding brings by itself, the values untouched (README: As
# sent); no other new error is allowed. (None so far: dciodvfy reads each encoding alike.)
REENCODING_ERRORS: tuple[str, ...] = ()
# dciodvfy of dicom3tools as Debian ships it reads no deflated data set ("Dicom dataset read
# failed"): such a file on arrival is judged by the same values inflated, in Explicit VR
# Little Endian, which it can read.
UNREADABLE = "Dicom dataset read failed"


def _errors(path: Path, tmp: Path) -> frozenset[str]:
    """dciodvfy errors of a file; of the same values inflated if it cannot read them."""
    errors = dciodvfy(path)
    if any(UNREADABLE in e for e in errors) and _syntax(path) == DEFLATED:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        inflated = tmp / "inflated.dcm"
        ds.save_as(inflated, enforce_file_format=True)
        errors = dciodvfy(inflated)
    return frozenset(errors)


_errors_on_arrival = cache(_errors)


def conformance_lost(source: Path, via: Stored, tmp: Path) -> set[str]:
    """dciodvfy errors of the delivered file that the file as sent (`source`) does not
    have, less the ones REENCODING_ERRORS expects where the box changed the encoding."""
    path = tmp / "via.dcm"
    path.write_bytes(via.part10)
    lost = _errors(path, tmp) - _errors_on_arrival(source, tmp)
    if via.dataset != dataset_part(source.read_bytes()):
        lost = {e for e in lost if not any(known in e for known in REENCODING_ERRORS)}
    return lost


@dataclass
class RoundResult:
    problems: list[str]
    delivered: int
    refused: int
    duplicates: int = 0
    missing: dict[str, str] = field(default_factory=dict)  # name -> how far it got
    reencoded: int = 0  # delivered in another syntax than sent, values kept


NOT_SENT = "never reached the box"


def _settled(box: BoxProcess) -> list[dict] | None:
    rows = box.studies()
    return rows if all(r["state"] in ("complete", "failed") for r in rows) else None


def _how_far(rows: list[dict], item: Item) -> str:
    """Where a file that never reached the PACS through the box stopped. Every study is
    settled, so one the box held was delivered or failed with a reason: no reason on its
    study means it never reached the box."""
    study_uid = str(pydicom.dcmread(item.path, stop_before_pixels=True).StudyInstanceUID)
    row = next((r for r in rows if r["study_uid"] == study_uid), None)
    reasons = sorted({reason for d in (row or {}).get("destinations", [])
                      for reason in d["reasons"]})
    return f"failed: {'; '.join(reasons)}" if reasons else NOT_SENT


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
    rows = box.wait_for(lambda: _settled(box), 120, "every study complete or failed",
                        poll_s=0.2)
    direct, via = pacs.direct.held(), pacs.via_box.held()
    result = RoundResult([], 0, 0)
    problems = result.problems
    for item in round_items:
        answer = answers.get(item.path)
        reference = direct.get(item.sop_instance)
        if item.expect == "refuse":
            result.refused += 1
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
            result.duplicates += 1
            continue
        if reference is not None:
            history[item.sop_instance] = reference.content
        delivered = via.get(item.sop_instance)
        problem = faithfulness(reference, delivered, item.path)
        if problem:
            problems.append(f"{item.name}: {problem}")
        elif delivered is None:
            result.missing[item.name] = _how_far(rows, item)
        else:
            result.delivered += 1
            result.reencoded += delivered.transfer_syntax != item.transfer_syntax
            if verify and (lost := conformance_lost(item.path, delivered, tmp)):
                problems.append(f"{item.name}: less conformant than on arrival "
                                f"({item.transfer_syntax} -> {delivered.transfer_syntax}): "
                                f"{sorted(lost)[:3]}")
    pacs.direct.clear()
    pacs.via_box.clear()
    return result


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
            missing: dict[str, str] = {}
            for n in range(max(i.round for i in items) + 1):
                result = run_round(_by_storescu, box, pacs, [i for i in items if i.round == n],
                                   tmp_path, verify=True, history=history)
                problems += result.problems
                delivered += result.delivered + result.duplicates
                refused += result.refused
                missing.update(result.missing)
        finally:
            pairs.close()
    assert problems == [], "\n".join(problems)
    assert missing == dict.fromkeys(SENDER_CANNOT["storescu"], NOT_SENT), missing
    assert delivered >= 200
    assert refused == sum(i.expect == "refuse" for i in items)


SENDERS = ["pynetdicom", "gdcmscu", "orthanc"]
RECEIVERS = ["orthanc", "pynetdicom", "dcmqrscp", "storescp-implicit"]
PAIRS = [(s, "storescp") for s in SENDERS] + [("storescu", r) for r in RECEIVERS]

_DCMTK_ODD_OW = ("DCMTK cannot read it (encapsulated Pixel Data as OW of odd length): "
                 "{} sends nothing, to the box or straight to the PACS")
_GDCMSCU_CLASS = "gdcmscu 3.0 does not know its SOP class and sends nothing"
# The only files a pair does not carry end to end (the whole corpus for storescu, the
# representative subset for the others), and why: sender -> file -> why; the box never
# gets these.
SENDER_CANNOT: dict[str, dict[str, str]] = {
    "storescu": dict.fromkeys(("pydicom:rtdose_rle_1frame.dcm", "pydicom:rtdose_rle.dcm",
                               "pydicom-data:explicit_VR-UN.dcm"),
                              _DCMTK_ODD_OW.format("storescu")),
    "orthanc": {"pydicom:rtdose_rle_1frame.dcm": _DCMTK_ODD_OW.format("Orthanc")},
    "gdcmscu": {"made:hd_parametric_map.dcm": _GDCMSCU_CLASS,
                "made:hd_sr_Comprehensive3DSR.dcm": _GDCMSCU_CLASS},
}
# PACS -> file -> (the start of the reason the box gives in `studies`, why).
PACS_REFUSES: dict[str, dict[str, tuple[str, str]]] = {
    "pynetdicom": {"pydicom-data:color-pl.dcm": (
        "failed: PACS accepts none of the presentation contexts",
        "the retired Ultrasound Image Storage class is not among pynetdicom's storage "
        "classes: that PACS refuses it, and the box fails it with that reason")},
}


def _expected_missing(sender: str, receiver: str, subset: list[Item]) -> dict[str, str]:
    """File name -> how far it gets (NOT_SENT, or the start of the box's reason)."""
    names = {i.name for i in subset}
    expected = dict.fromkeys(SENDER_CANNOT.get(sender, {}), NOT_SENT)
    expected.update({name: how for name, (how, _) in PACS_REFUSES.get(receiver, {}).items()})
    return {name: how for name, how in expected.items() if name in names}


@pytest.mark.parametrize(("sender", "receiver"), PAIRS)
def test_representative_files_through_every_sender_and_pacs(sender, receiver, make_box, items,
                                                            tmp_path):
    """Every file delivered faithfully and no less conformant, but the ones EXCLUDED names
    for this sender or PACS, which stop where EXCLUDED says."""
    subset = representative(items)
    if receiver in UNCOMPRESSED_ONLY:
        subset = [i for i in subset if i.transfer_syntax in UNCOMPRESSED]
    pairs = PACS_KINDS[receiver]()
    pacs = next(pairs)
    try:
        box = _box(make_box, pacs).start()
        if sender == "orthanc":
            # a shared machine may be slow: Orthanc's default 10 s DIMSE time-out is short
            with Orthanc(aet="MODALITY", extra_config={"DicomScuTimeout": 120}) as modality:
                result = run_round(_OrthancModality(modality), box, pacs, subset, tmp_path,
                                   verify=True)
        else:
            send = {"storescu": _by_storescu, "pynetdicom": _by_pynetdicom,
                    "gdcmscu": _by_gdcmscu}[sender]
            result = run_round(send, box, pacs, subset, tmp_path, verify=True)
    finally:
        pairs.close()
    assert result.problems == [], "\n".join(result.problems)
    expected = _expected_missing(sender, receiver, subset)
    assert result.missing.keys() == expected.keys(), result.missing
    for name, how in expected.items():
        assert result.missing[name].startswith(how), (name, result.missing[name])
    assert result.delivered == len(subset) - len(expected)
    if receiver == "storescp-implicit":  # the re-encoded path was taken
        assert result.reencoded == sum(
            i.transfer_syntax != pydicom.uid.ImplicitVRLittleEndian for i in subset)


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


def test_the_conformance_check_sees_an_error_a_reencoding_brought(items, tmp_path):
    """dciodvfy on a re-encoded file: the same values in another syntax lose nothing; one
    Type 1 attribute dropped on the way is seen."""
    ct = next(i for i in items if i.path.name == "CT_small.dcm")

    def reencoded(drop: str | None) -> Stored:
        ds = pydicom.dcmread(ct.path)
        if drop:
            delattr(ds, drop)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return Stored(pydicom.uid.ImplicitVRLittleEndian, out.getvalue())

    assert conformance_lost(ct.path, reencoded(None), tmp_path) == set()
    lost = conformance_lost(ct.path, reencoded("SeriesInstanceUID"), tmp_path)
    assert any("SeriesInstanceUID" in error for error in lost), lost
