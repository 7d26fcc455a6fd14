"""Worklist corrections: the site's rules applied to each entry at sync.

Every change is noted on the entry ("PatientName: trimmed"), so `fluxbox worklist`
shows what the box changed and why. Rules run in this order, each on the result of
the one before: clean characters, person names, procedure codes, move, copy,
defaults, truncate (last, so copied values fit too).

An attribute is named by keyword. A keyword that belongs in a Scheduled Procedure
Step (PS3.4 Table K.6-1, such as Modality) means that attribute in every item of
ScheduledProcedureStepSequence; 'Sequence.Keyword' names any other place.

Pure: the entry is a decoded dataset in UTF-8 (see charset.to_utf8) and is
changed in place. Applying the rules again to a corrected entry changes nothing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from appliance.config import CodeMapping, CorrectionsConfig
from appliance.worklist.config import keyword_tag

SPS = "ScheduledProcedureStepSequence"
SPS_KEYWORDS = frozenset({
    "Modality", "ScheduledStationAETitle", "ScheduledStationName",
    "ScheduledProcedureStepLocation", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription", "ScheduledProtocolCodeSequence",
    "ScheduledProcedureStepID", "ScheduledProcedureStepStatus",
    "CommentsOnTheScheduledProcedureStep", "PreMedication", "RequestedContrastAgent",
})
CODE_SEQUENCES = ("RequestedProcedureCodeSequence", f"{SPS}.ScheduledProtocolCodeSequence")
# Maximum value lengths in characters, PS3.5 Table 6.2-1 (PN: per component group). Only
# text is cut: a cut number, date or UID would be a different value, not a shorter one.
MAX_LENGTH = {"AE": 16, "CS": 16, "LO": 64, "LT": 10240, "PN": 64, "SH": 16, "ST": 1024}
STRING_VRS = frozenset(MAX_LENGTH) | {"AS", "DA", "DS", "DT", "IS", "TM", "UC", "UI", "UR", "UT"}
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT"})  # may hold line breaks and leading spaces
_FREE_TEXT_CONTROLS = frozenset("\t\n\r\f")
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_CS_ALLOWED = re.compile(r"[^A-Z0-9 _]")
_LOOSE_DATE = re.compile(r"(\d{4})[-./](\d{2})[-./](\d{2})")
_LOOSE_TIME = re.compile(r"(\d{2}):(\d{2})(?::(\d{2}(?:\.\d{1,6})?))?")

Note = str


def correct(entry: Dataset, rules: CorrectionsConfig) -> list[Note]:
    """Apply `rules` to `entry` in place; the notes of what changed, in order."""
    notes: list[Note] = []
    if rules.clean_characters:
        notes += _each_value(entry, _clean)
    if rules.person_names != "keep":
        upper = rules.person_names == "upper"
        notes += _each_value(entry, lambda vr, text: _person_name(vr, text, upper))
    notes += _codes(entry, rules.procedure_codes, rules.unknown_codes)
    for target, source in rules.move:
        notes += _copy(entry, target, source, move=True)
    for target, source in rules.copy:
        notes += _copy(entry, target, source, move=False)
    for target, value in rules.defaults:
        notes += _default(entry, target, value)
    if rules.truncate:
        notes += _each_value(entry, _truncate)
    return notes


# -- per-value rules -----------------------------------------------------------------

ValueRule = Callable[[str, str], tuple[str, str]]  # (VR, text) -> (text, what changed)


def _clean(vr: str, text: str) -> tuple[str, str]:
    whats = []
    kept = "".join(ch for ch in text if ch != "\ufffd" and (
        unicodedata.category(ch) not in _DROPPED_CATEGORIES
        or (vr in _FREE_TEXT_VRS and ch in _FREE_TEXT_CONTROLS)))
    if kept != text:
        whats.append("control characters removed")
    if vr not in _FREE_TEXT_VRS and kept != kept.strip():
        kept = kept.strip()
        whats.append("trimmed")
    fixed = _format(vr, kept)
    if fixed != kept:
        whats.append("upper-cased" if fixed == kept.upper() else "reformatted")
    return fixed, ", ".join(whats)


def _format(vr: str, text: str) -> str:
    """Code strings in capitals and their own characters; dates and times without
    separators."""
    if vr == "CS":
        return _CS_ALLOWED.sub("", text.upper())
    if vr == "DA" and (m := _LOOSE_DATE.fullmatch(text)):
        return "".join(m.groups())
    if vr == "TM" and (m := _LOOSE_TIME.fullmatch(text)):
        return "".join(part or "" for part in m.groups())
    return text


def _person_name(vr: str, text: str, upper: bool) -> tuple[str, str]:
    if vr != "PN":
        return text, ""
    groups = [_name_group(group) for group in text.split("=")]
    while len(groups) > 1 and not groups[-1]:
        groups.pop()
    name = "=".join(groups)
    if upper and name != name.upper():
        return name.upper(), "normalized" if name != text else "upper-cased"
    return name, "normalized" if name != text else ""


def _name_group(group: str) -> str:
    """'Doe , John ^' -> 'Doe^John': a lone comma is a component separator, spaces
    around components and empty trailing components go."""
    if "^" not in group and group.count(",") == 1:
        group = group.replace(",", "^")
    components = [" ".join(c.split()) for c in group.split("^")]
    while components and not components[-1]:
        components.pop()
    return "^".join(components)


def _truncate(vr: str, text: str) -> tuple[str, str]:
    limit = MAX_LENGTH.get(vr)
    if limit is None:
        return text, ""
    parts = text.split("=") if vr == "PN" else [text]
    cut = "=".join(part[:limit] for part in parts)
    return cut, f"truncated to {limit} characters" if cut != text else ""


def _each_value(ds: Dataset, rule: ValueRule) -> list[Note]:
    notes = []
    for path, elem in _string_elements(ds, ""):
        values = list(elem.value) if isinstance(elem.value, MultiValue | list) else [elem.value]
        changed = [rule(elem.VR, str(v)) for v in values]
        whats = sorted({what for _, what in changed if what})
        if whats:
            texts = [text for text, _ in changed]
            elem.value = texts if len(texts) > 1 else texts[0]
            notes += [f"{path}: {what}" for what in whats]
    return notes


def _string_elements(ds: Dataset, prefix: str) -> Iterator[tuple[str, DataElement]]:
    for elem in ds:
        path = f"{prefix}{elem.keyword or elem.tag}"
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from _string_elements(item, f"{path}.")
        elif elem.VR in STRING_VRS and elem.value not in (None, ""):
            yield path, elem


# -- procedure codes ------------------------------------------------------------------


def _codes(entry: Dataset, table: tuple[CodeMapping, ...], unknown: str) -> list[Note]:
    if not table and unknown == "keep":
        return []
    by_key = {(row.code, row.scheme): row for row in table}
    answered = {(row.to_code, row.to_scheme) for row in table}  # known, so a repeat keeps them
    notes = []
    for path in CODE_SEQUENCES:
        sequence, keyword = _place(path)
        for holder in _holders(entry, sequence):
            items = holder.get(keyword)
            if not items:
                continue
            kept = Sequence()
            for item in items:
                key = (item.get("CodeValue", ""), item.get("CodingSchemeDesignator", ""))
                row = by_key.get(key)
                if row is not None and (row.to_code, row.to_scheme, row.to_meaning) != (
                        *key, item.get("CodeMeaning", "")):
                    item.CodeValue, item.CodingSchemeDesignator = row.to_code, row.to_scheme
                    item.CodeMeaning = row.to_meaning
                    notes.append(f"{path}: code mapped")
                elif row is None and key not in answered and unknown == "remove" and key[0]:
                    notes.append(f"{path}: unknown code removed")
                    continue
                kept.append(item)
            holder[keyword].value = kept
    return notes


# -- attributes -----------------------------------------------------------------------


def _place(path: str) -> tuple[str | None, str]:
    """(the sequence holding the attribute, or None for the top level; its keyword)."""
    if "." in path:
        sequence, keyword = path.split(".", 1)
        return sequence, keyword
    return (SPS, path) if path in SPS_KEYWORDS else (None, path)


def _holders(entry: Dataset, sequence: str | None, *, create: bool = False) -> list[Dataset]:
    """The datasets that hold an attribute of `sequence` (the entry itself for None)."""
    if sequence is None:
        return [entry]
    items = entry.get(sequence)
    if not items and create:
        entry.add_new(keyword_tag(sequence), "SQ", Sequence([Dataset()]))
        items = entry.get(sequence)
    return list(items or [])


def _is_empty(ds: Dataset, keyword: str) -> bool:
    return ds.get(keyword) in (None, "", [])


def _set(ds: Dataset, keyword: str, value: object) -> None:
    tag = keyword_tag(keyword)
    ds.add(DataElement(tag, dictionary_VR(tag), value))


def _source_value(entry: Dataset, holder: Dataset, target_seq: str | None,
                  source: str) -> tuple[object, Dataset | None]:
    """The source's value seen from `holder`: the same item when both live in the same
    sequence, else the first non-empty one found. Returns (value, dataset it is in)."""
    sequence, keyword = _place(source)
    candidates = [holder] if sequence == target_seq else _holders(entry, sequence)
    for ds in candidates:
        if not _is_empty(ds, keyword):
            return ds[keyword].value, ds
    return None, None


def _copy(entry: Dataset, target: str, source: str, *, move: bool) -> list[Note]:
    sequence, keyword = _place(target)
    notes = []
    for holder in _holders(entry, sequence):
        if not move and not _is_empty(holder, keyword):
            continue
        value, found_in = _source_value(entry, holder, sequence, source)
        if found_in is None:
            continue
        _set(holder, keyword, _plain(value))
        if move:
            del found_in[_place(source)[1]]
        notes.append(f"{target}: {'moved' if move else 'copied'} from {source}")
    return notes


def _default(entry: Dataset, target: str, value: str) -> list[Note]:
    sequence, keyword = _place(target)
    notes = []
    for holder in _holders(entry, sequence, create=True):
        if _is_empty(holder, keyword):
            _set(holder, keyword, value)
            notes.append(f"{target}: default set")
    return notes


def _plain(value: object) -> str | list[str]:
    if isinstance(value, MultiValue | list):
        return [str(v) for v in value]
    return str(value)
