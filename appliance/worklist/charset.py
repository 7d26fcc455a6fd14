"""Specific Character Set both ways: worklist entries are kept in UTF-8 (ISO_IR 192),
answers go out in a character set the modality can read.

A character the answer's set cannot hold is replaced by the site's rule:
``transliterate`` (a Latin letter for a ligature or stroked letter, else the letter
without its accents by Unicode NFKD, else "?") or ``replace`` ("?"). In a person
name, an ideographic or phonetic group the set cannot hold is left out whole, so
the alphabetic group reaches the modality readable.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable

from pydicom.charset import python_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import CUSTOMIZABLE_CHARSET_VR, PersonName

UTF8 = "ISO_IR 192"
LATIN1 = "ISO_IR 100"
RULES = ("transliterate", "replace")
_ASCII_TERMS = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
# Letters NFKD does not take apart.
_LETTERS = {
    "ß": "ss", "Æ": "AE", "æ": "ae", "Ø": "O", "ø": "o", "Œ": "OE", "œ": "oe", "Ł": "L",
    "ł": "l", "Đ": "D", "đ": "d", "Ð": "D", "ð": "d", "Þ": "TH", "þ": "th", "ı": "i",
    "Ħ": "H", "ħ": "h",
}
_SKIPPED_GROUPS = (0x0000, 0x0002)
SPECIFIC_CHARACTER_SET = 0x00080005

TextFn = Callable[[str, str], str]  # (VR, text) -> text


def is_known(term: str) -> bool:
    """Whether `term` is a Specific Character Set defined term this box can encode."""
    return term in python_encoding


def terms_of(value: object) -> tuple[str, ...]:
    """The defined terms of a Specific Character Set value ("" for the default)."""
    if value is None:
        return ("",)
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    found = tuple(str(item).strip() for item in items)
    return found or ("",)


def answer_terms(configured: str, query: Dataset) -> tuple[str, ...]:
    """The character set of an answer: the site's setting, else what the query was
    written in, else Latin-1. A set the box cannot encode falls back to Latin-1."""
    if configured:
        return terms_of(configured.split("\\"))
    asked = terms_of(query.get("SpecificCharacterSet"))
    if asked == ("",) or not all(is_known(term) for term in asked):
        return (LATIN1,)
    return asked


def to_utf8(ds: Dataset, assume: str = "") -> Dataset:
    """A copy of `ds` decoded from its own character set (`assume` when it names none)
    and marked ISO_IR 192; private and group-length elements are left out."""
    if assume and not ds.get("SpecificCharacterSet"):
        ds.SpecificCharacterSet = assume
    out = rebuild(ds, lambda vr, text: text)
    out.SpecificCharacterSet = UTF8
    return out


def render(ds: Dataset, terms: tuple[str, ...], rule: str) -> Dataset:
    """A copy of `ds` whose text fits the character sets `terms`, by `rule`.
    The copy has no Specific Character Set: the caller sets it on the answer."""
    if UTF8 in terms:
        return rebuild(ds, lambda vr, text: text)
    return rebuild(ds, lambda vr, text: fit_name(text, terms, rule) if vr == "PN"
                   else fit(text, terms, rule))


def fit(text: str, terms: tuple[str, ...], rule: str) -> str:
    """`text` with each character `terms` cannot hold replaced by `rule`."""
    if all(_holds(ch, terms) for ch in text):
        return text
    return "".join(ch if _holds(ch, terms) else _substitute(ch, terms, rule) for ch in text)


def fit_name(name: str, terms: tuple[str, ...], rule: str) -> str:
    groups = name.split("=")
    kept = [groups[0]] + [g for g in groups[1:] if all(_holds(ch, terms) for ch in g)]
    return "=".join(fit(group, terms, rule) for group in kept)


def rebuild(ds: Dataset, text_fn: TextFn) -> Dataset:
    """A fresh copy of `ds` with plain Python values, `text_fn` applied to the text of
    every character-set-dependent element (nested ones too)."""
    out = Dataset()
    for elem in ds:
        if elem.tag.group in _SKIPPED_GROUPS or elem.tag.is_private or (
                elem.tag == SPECIFIC_CHARACTER_SET):
            continue
        out.add(_copy_element(elem, text_fn))
    return out


def _copy_element(elem: DataElement, text_fn: TextFn) -> DataElement:
    if elem.VR == "SQ":
        return DataElement(elem.tag, "SQ", Sequence([rebuild(item, text_fn)
                                                     for item in elem.value or []]))
    if elem.VR not in CUSTOMIZABLE_CHARSET_VR or elem.value is None:
        return DataElement(elem.tag, elem.VR, elem.value)
    if isinstance(elem.value, MultiValue | list):
        return DataElement(elem.tag, elem.VR, [text_fn(elem.VR, _text(v)) for v in elem.value])
    return DataElement(elem.tag, elem.VR, text_fn(elem.VR, _text(elem.value)))


def _text(value: object) -> str:
    if isinstance(value, PersonName):
        return str(value)
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


@functools.lru_cache(maxsize=4096)
def _holds(ch: str, terms: tuple[str, ...]) -> bool:
    if ch.isascii():
        return True
    for term in terms:
        if term in _ASCII_TERMS or term not in python_encoding:
            continue
        try:
            ch.encode(python_encoding[term])
            return True
        except UnicodeEncodeError:
            continue
    return False


def _substitute(ch: str, terms: tuple[str, ...], rule: str) -> str:
    if rule == "transliterate":
        plain = _LETTERS.get(ch) or "".join(
            c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        if plain and all(_holds(c, terms) for c in plain):
            return plain
    return "?"
