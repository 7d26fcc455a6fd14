"""The site's worklist settings: their dataclasses and the spec tables that check them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, keyword_dict, tag_for_keyword

from appliance.config.values import (
    PORT,
    SECONDS,
    Bad,
    Convert,
    Spec,
    ae_title,
    bad,
    boolean,
    choice,
    did_you_mean,
    host_address,
    integer_in,
    join_key,
    list_of,
    show,
    subtable,
    text,
)


@dataclass(frozen=True)
class CodeMapping:
    """One row of the procedure code table: (code, scheme) -> the code to answer."""

    code: str
    scheme: str
    to_code: str
    to_scheme: str
    to_meaning: str


@dataclass(frozen=True)
class CorrectionsConfig:
    """Rules applied to every worklist entry at sync (see appliance/worklist/corrections.py)."""

    clean_characters: bool = True  # remove control and disallowed characters
    person_names: str = "keep"  # "keep" | "normalize" | "upper"
    truncate: bool = True  # cut values to their VR's maximum length
    procedure_codes: tuple[CodeMapping, ...] = ()
    unknown_codes: str = "keep"  # "keep" | "remove": codes procedure_codes does not list
    defaults: tuple[tuple[str, str], ...] = ()  # (attribute, value): where missing or empty
    copy: tuple[tuple[str, str], ...] = ()  # (target, source): where the target is empty
    move: tuple[tuple[str, str], ...] = ()  # (target, source): the source's value replaces
    # the target's, and the source goes


@dataclass(frozen=True)
class WorklistConfig:
    ae_title: str
    host: str
    port: int
    sync_interval_s: float = 300.0
    days_ahead: int = 2
    retry_interval_s: float = 30.0  # after a failed sync, try again this soon
    modality: str = ""  # sync only orders for this modality; "": any
    station_ae_title: str = ""  # sync only orders for this station; "": any
    name_matching: str = "case-insensitive"  # or "case-sensitive": PN keys of queries
    answer_character_set: str = ""  # "": the query's Specific Character Set, else ISO_IR 100
    server_character_set: str = ""  # for server answers that name none; "": ISO_IR 100
    unrepresentable: str = "transliterate"  # or "replace" ("?")
    corrections: CorrectionsConfig = field(default_factory=CorrectionsConfig)


def keyword_tag(keyword: str) -> int:
    """The tag of a DICOM keyword; KeyError for one pydicom does not know."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag


def _charset(value: Any) -> str:
    terms = value.split("\\") if isinstance(value, str) else None
    if terms is not None and (value == "" or all(t.strip() in python_encoding for t in terms)):
        charset: str = value
        return charset
    hint = did_you_mean(value, python_encoding) if isinstance(value, str) else ""
    raise bad(f"must be a Specific Character Set defined term such as 'ISO_IR 100' or "
              f"'ISO_IR 192', or \"\" for the default, got {show(value)}{hint}")


def _attribute_path(value: Any) -> str:
    """'Keyword' or 'SequenceKeyword.Keyword': DICOM keywords, sequences before the dot,
    not a sequence at the end."""
    parts = value.split(".") if isinstance(value, str) else []
    unknown = next((p for p in parts if tag_for_keyword(p) is None), None)
    if parts and unknown is None:
        kinds = [dictionary_VR(keyword_tag(part)) == "SQ" for part in parts]
        if all(kinds[:-1]) and not kinds[-1]:
            path: str = value
            return path
    hint = did_you_mean(unknown, keyword_dict) if unknown else ""
    raise bad("must be a DICOM keyword such as 'Modality', or a sequence keyword and a "
              "keyword such as 'ScheduledProcedureStepSequence.Modality', got "
              f"{show(value)}{hint}")


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{a = {b = 1}} (TOML's dotted keys) as {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        path = join_key(prefix, key)
        flat.update(_flatten(value, path) if isinstance(value, dict) else {path: value})
    return flat


def _attribute_map(value_of: Convert, example: str) -> Convert:
    def convert(value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict):
            raise bad(f"must be an inline table such as {example}, got {show(value)}")
        problems: list[tuple[str, str]] = []
        pairs = []
        for path, item in _flatten(value).items():
            try:
                pairs.append((_attribute_path(path), value_of(item)))
            except Bad as error:
                problems += [(f".{path}", message) for _, message in error.items]
        if problems:
            raise Bad(*problems)
        return tuple(pairs)

    return convert


_CODE_MAPPING: Spec = {
    "code": (text, '"CTHD"'),
    "scheme": (text, '"LOCAL"'),
    "to_code": (text, '"CT-HEAD"'),
    "to_scheme": (text, '"99FLX"'),
    "to_meaning": (text, '"CT head"'),
}
_CODE_EXAMPLE = ('{ code = "CTHD", scheme = "LOCAL", to_code = "CT-HEAD", to_scheme = "99FLX", '
                 'to_meaning = "CT head" }')
_CORRECTIONS: Spec = {
    "clean_characters": (boolean, None),
    "person_names": (choice("keep", "normalize", "upper"), None),
    "truncate": (boolean, None),
    "procedure_codes": (list_of(subtable(_CODE_MAPPING, CodeMapping, _CODE_EXAMPLE),
                                f"[{_CODE_EXAMPLE}]"), None),
    "unknown_codes": (choice("keep", "remove"), None),
    "defaults": (_attribute_map(text, '{ Modality = "CT" }'), None),
    "copy": (_attribute_map(_attribute_path, '{ RequestedProcedureDescription = '
                                             '"ScheduledProcedureStepDescription" }'), None),
    "move": (_attribute_map(_attribute_path, '{ PatientComments = "MedicalAlerts" }'), None),
}
WORKLIST: Spec = {
    "ae_title": (ae_title, '"RIS"'),
    "host": (host_address, '"10.20.1.6"'),
    "port": (PORT, "104"),
    "sync_interval_s": (SECONDS, None),
    "days_ahead": (integer_in(0, 365), None),
    "retry_interval_s": (SECONDS, None),
    "modality": (text, None),
    "station_ae_title": (lambda v: v if v == "" else ae_title(v), None),
    "name_matching": (choice("case-insensitive", "case-sensitive"), None),
    "answer_character_set": (_charset, None),
    "server_character_set": (_charset, None),
    "unrepresentable": (choice("transliterate", "replace"), None),
    "corrections": (subtable(_CORRECTIONS, CorrectionsConfig, "[site.worklist.corrections]"),
                    None),
}
