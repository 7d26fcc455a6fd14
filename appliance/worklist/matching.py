"""Modality Worklist matching (PS3.4 C.2.2.2) and the response identifier it yields.

Pure functions over decoded pydicom datasets: no I/O, no character set work (the
caller hands in the entry already rendered in the answer's character set, so the
modality matches on the text it will see).

Matching kinds, per key of the query:
- universal: an empty value, or a value of only ``*`` (C.2.2.2.3, C.2.2.2.4);
- single value: equal after removing insignificant trailing and leading spaces;
  person names case-insensitively when asked (C.2.2.2.1);
- wildcard: ``*`` any run of characters, ``?`` one character; not for DA, TM, DT, UI;
- list of UIDs: a backslash-separated list matches any of its UIDs (C.2.2.2.2);
- range: DA, TM, DT values ``a-b``, ``-b``, ``a-``, inclusive; a partial time is the
  whole span it names, so ``-10`` includes 10:59 (C.2.2.2.5). Date and time are
  matched independently: the box offers no combined date-time matching (that needs
  extended negotiation);
- sequence: the query's item matches an entry item when every key in it matches;
  the entry matches when any of its items does, and only matching items are
  returned (C.2.2.2.6).

Private keys are answered empty and never restrict the match: the box has no
private data for a modality.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

RANGE_VRS = frozenset({"DA", "TM", "DT"})
NO_WILDCARD_VRS = RANGE_VRS | {"UI"}
# Lower and upper ends of the span a partial value names, filled in from its length on.
_LOW = {"DA": "00000101", "TM": "000000.000000", "DT": "00000101000000.000000"}
_HIGH = {"DA": "99991231", "TM": "235959.999999", "DT": "99991231235959.999999"}
_SKIPPED_GROUPS = (0x0000, 0x0002)
SPECIFIC_CHARACTER_SET = 0x00080005


def answer(query: Dataset, entry: Dataset, *, names_ignore_case: bool = True) -> Dataset | None:
    """The response identifier for `entry`: every key of `query` (empty where the
    entry has no value, Specific Character Set left to the caller), or None if the
    entry does not match. Neither dataset is changed."""
    response = Dataset()
    for q_elem in _keys(query):
        e_elem = entry.get(q_elem.tag) if not q_elem.tag.is_private else None
        if q_elem.VR == "SQ" or (e_elem is not None and e_elem.VR == "SQ"):
            items = _match_sequence(q_elem, e_elem, names_ignore_case)
            if items is None:
                return None
            response.add_new(q_elem.tag, "SQ", Sequence(items))
            continue
        if not q_elem.tag.is_private and not element_matches(q_elem, e_elem, names_ignore_case):
            return None
        response.add(_returned(q_elem, e_elem))
    return response


def element_matches(q_elem: DataElement, e_elem: DataElement | None,
                    names_ignore_case: bool = True) -> bool:
    """Whether one entry element matches one (non-sequence) query key."""
    wanted = _values(q_elem.value)
    if _is_universal(wanted):
        return True
    have = _values(e_elem.value) if e_elem is not None else []
    if not have:
        return False
    vr = _vr(q_elem)
    if vr == "UI":
        return any(v in wanted for v in have)
    if vr in RANGE_VRS:
        return any(_in_range(vr, w, v) for w in wanted for v in have)
    if vr == "PN":
        return any(_name_matches(w, v, names_ignore_case) for w in wanted for v in have)
    return any(_text_matches(w, v, vr) for w in wanted for v in have)


# -- sequences ------------------------------------------------------------------------


def _match_sequence(q_elem: DataElement, e_elem: DataElement | None,
                    names_ignore_case: bool) -> list[Dataset] | None:
    """The response items of a sequence key, or None when the entry does not match.

    Zero query items (or an entry value that is not a sequence) is universal: every
    entry item comes back whole. An item of only universal keys also matches an entry
    without the sequence (its response is then empty)."""
    have = list(e_elem.value) if e_elem is not None and e_elem.VR == "SQ" else []
    q_items = list(q_elem.value) if q_elem.VR == "SQ" and q_elem.value else []
    if not q_items:
        return [_copy(item) for item in have]
    q_item = q_items[0]
    matched = [r for r in (answer(q_item, item, names_ignore_case=names_ignore_case)
                           for item in have) if r is not None]
    if matched or _all_universal(q_item):
        return matched
    return None


def _all_universal(item: Dataset) -> bool:
    for elem in _keys(item):
        if elem.VR == "SQ":
            if any(not _all_universal(sub) for sub in elem.value or []):
                return False
        elif not elem.tag.is_private and not _is_universal(_values(elem.value)):
            return False
    return True


def _copy(item: Dataset) -> Dataset:
    out = Dataset()
    for elem in item:
        if elem.VR == "SQ":
            out.add_new(elem.tag, "SQ", Sequence([_copy(sub) for sub in elem.value]))
        else:
            out.add_new(elem.tag, elem.VR, elem.value)
    return out


# -- values ---------------------------------------------------------------------------


def _keys(ds: Dataset) -> Iterable[DataElement]:
    return (e for e in ds if e.tag.group not in _SKIPPED_GROUPS
            and e.tag != SPECIFIC_CHARACTER_SET)


def _vr(elem: DataElement) -> str:
    if elem.VR in ("UN", "OB or OW", "US or SS") and not elem.tag.is_private:
        try:
            return dictionary_VR(elem.tag)
        except KeyError:
            return elem.VR
    return elem.VR


def _returned(q_elem: DataElement, e_elem: DataElement | None) -> DataElement:
    if e_elem is None:
        return DataElement(q_elem.tag, _vr(q_elem), None)
    return DataElement(q_elem.tag, e_elem.VR, e_elem.value)


def _values(value: object) -> list[str]:
    """A value as a list of strings, insignificant spaces gone; [] when empty."""
    if value is None:
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    out = (v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in items
           if v is not None)
    return [v for v in (v.strip(" \0") for v in out) if v]


def _is_universal(wanted: list[str]) -> bool:
    return not wanted or all(set(w) == {"*"} for w in wanted)


def _pattern(wanted: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in wanted)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _text_matches(wanted: str, have: str, vr: str, ignore_case: bool = False) -> bool:
    if vr not in NO_WILDCARD_VRS and ("*" in wanted or "?" in wanted):
        return _pattern(wanted, ignore_case).fullmatch(have) is not None
    if ignore_case:
        return wanted.casefold() == have.casefold()
    return wanted == have


def _name_forms(name: str) -> list[str]:
    """A person name as written and its alphabetic group alone, trailing empty
    components and groups dropped, so DOE^JOHN matches DOE^JOHN^^^=..."""
    groups = [g.rstrip("^ ") for g in name.split("=")]
    while len(groups) > 1 and not groups[-1]:
        groups.pop()
    full = "=".join(groups)
    return [full] if len(groups) == 1 else [full, groups[0]]


def _name_matches(wanted: str, have: str, ignore_case: bool) -> bool:
    pattern = wanted if ("*" in wanted or "?" in wanted) else _name_forms(wanted)[0]
    return any(_text_matches(pattern, form, "PN", ignore_case) for form in _name_forms(have))


def _span(vr: str, value: str, *, high: bool) -> str:
    """The first (or last) instant a DA, TM or DT value names, in fixed width."""
    if vr == "DT":  # the offset is dropped: a site's orders and its modalities share a clock
        text = re.split(r"[&+]", value, maxsplit=1)[0]
    else:  # ACR-NEMA style "2026.11.28" and "10:15:00" still occur
        text = value.replace(".", "") if vr == "DA" else value.replace(":", "")
    template = (_HIGH if high else _LOW)[vr]
    return text + template[len(text):]


def _in_range(vr: str, wanted: str, have: str) -> bool:
    if "-" in wanted:
        start, _, end = wanted.partition("-")
    else:
        start = end = wanted
    instant = _span(vr, have, high=False)
    low = _span(vr, start.strip(), high=False) if start.strip() else ""
    high = _span(vr, end.strip(), high=True) if end.strip() else "~"
    return low <= instant <= high
