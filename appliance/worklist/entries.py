"""A cached worklist entry: how the store keeps it (explicit VR little endian, the notes
of its corrections inside as one private element, never answered), and as JSON."""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any, cast

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.dsutils import decode, encode

# The notes of an entry's corrections: one private element, never part of an answer.
_NOTES_GROUP = 0x0099
_NOTES_CREATOR = "FLUXBOX WORKLIST"
_NOTES_ELEMENT = 0x10


def encode_entry(entry: Dataset, notes: list[str]) -> bytes:
    """An entry as the store keeps it: explicit VR little endian, its notes inside."""
    stored = Dataset()
    stored.update(entry)
    block = stored.private_block(_NOTES_GROUP, _NOTES_CREATOR, create=True)
    block.add_new(_NOTES_ELEMENT, "LT", json.dumps(notes))
    # pynetdicom answers None for a dataset it cannot write; the store refuses that entry
    # (sealing raises) and the whole sync fails, keeping the last good list.
    return cast(bytes, encode(stored, False, True))


def decode_entry(raw: bytes) -> tuple[Dataset, list[str]]:
    """The entry and its correction notes (the notes' element removed)."""
    entry = decode(BytesIO(raw), False, True)
    notes: list[str] = []
    try:
        block = entry.private_block(_NOTES_GROUP, _NOTES_CREATOR)
        notes = json.loads(block[_NOTES_ELEMENT].value)
    except (KeyError, ValueError):
        pass
    for tag in [e.tag for e in entry if e.tag.group == _NOTES_GROUP]:
        del entry[tag]
    return entry, notes


def prune(ds: Dataset) -> None:
    """Drop empty elements and sequences: the server's echo of keys it has no value for.
    An answer still carries every key asked for, empty where unknown."""
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value or []:
                prune(item)
            if not any(len(item) for item in elem.value or []):
                del ds[elem.tag]
        elif elem.is_empty:
            del ds[elem.tag]


def entry_json(entry: Dataset, notes: list[str] | None = None) -> dict[str, Any]:
    """An entry keyed by DICOM keywords (sequences as lists of objects), with its
    correction notes as "_corrections" when given."""
    out: dict[str, Any] = {}
    for elem in entry:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.is_private or (
                elem.keyword == "SpecificCharacterSet"):
            continue
        out[elem.keyword or str(elem.tag)] = _json_value(elem)
    if notes is not None:
        out["_corrections"] = notes
    return out


JsonValue = str | int | float | list[Any]


def _json_value(elem: DataElement) -> JsonValue:
    value = elem.value
    if elem.VR == "SQ":
        return [entry_json(item) for item in value or []]
    if value is None or isinstance(value, bytes):
        return "" if value is None else value.hex()
    if isinstance(value, MultiValue | list | tuple):
        return [v if isinstance(v, int | float) and elem.VR not in ("DS", "IS") else str(v)
                for v in value]
    return value if isinstance(value, int | float) and elem.VR not in ("DS", "IS") else str(value)
