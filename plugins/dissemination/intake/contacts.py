"""Phone numbers and e-mail addresses in a value: the one detector the contract and redaction share.

A value is folded first (Unicode NFKC, invisible format characters dropped, every script's digits
as ASCII, every kind of space as a space), so a full-width ``＠``, Arabic-Indic digits or a
zero-width space hide nothing. Then one search, in RE2 (pyarrow), finds:

- a phone number: 7 or more digits, written as digits or spelled out in English or French
  (``zero eight zero three ...``), separated by any spaces and up to three of ``( ) . / , _ * :
  ; | ~ ' " # ·`` or a dash between two digits (``0803 - 555 - 0199``, ``0803_555_0199``);
- an e-mail address: ``@`` or ``at`` (bare or bracketed), ``.`` or ``dot``, its labels written
  whole or letter by letter (``m u s a @ g m a i l . c o m``).

The contract blocks a key, admin or round value where ``found`` says so; redaction replaces
what ``found`` finds in free text, and a value it cannot cut apart is redacted whole, so the two
never disagree. Both search in RE2, in time linear in a value's length.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .columns import as_arrow

REDACTED = "[redacted]"

_WORD = "a-z0-9_"  # a word's characters (ASCII, case-insensitive): what a match may not touch
_SPACE = r"[ \t\n\r\f\v]"
_SEPARATOR = "[().\\/,_*:;|~'\"#\u00b7\u2010-\u2015\u2212-]"
#: Between two digits: any spaces, and at most three separators.
_GAP = f"{_SPACE}*(?:{_SEPARATOR}{_SPACE}*){{0,3}}"
#: A digit, or its name (``z.ro``: zero and zéro, the accent written in any case or form).
_DIGIT = ("(?:[0-9]|z.ro|oh|one|two|three|four|five|six|seven|eight|nine|"
          "un|deux|trois|quatre|cinq|sept|huit|neuf)")
_PHONE = f"\\+?{_DIGIT}(?:{_GAP}{_DIGIT}){{6,}}"
#: ``at`` and ``dot`` as words, or spelled out letter by letter like the address around them.
_AT_WORD = f"(?:at|a{_SPACE}+t)"
_DOT_WORD = f"(?:dot|d{_SPACE}+o{_SPACE}+t)"
_AT = f"(?:@|[\\[(<{{]{_SPACE}*{_AT_WORD}{_SPACE}*[\\])>}}]|{_SPACE}{_AT_WORD}{_SPACE})"
_DOT = f"(?:\\.|[\\[(<{{]{_SPACE}*{_DOT_WORD}{_SPACE}*[\\])>}}]|{_SPACE}{_DOT_WORD}{_SPACE})"
#: A name or a domain label written whole, or letter by letter with spaces between.
_LABEL = f"(?:[a-z0-9-](?:{_SPACE}+[a-z0-9-])+|[a-z0-9-]+)"
_TLD = f"(?:[a-z](?:{_SPACE}+[a-z]){{1,23}}|[a-z]{{2,24}})"
_LOCAL = f"(?:\\b[a-z0-9](?:{_SPACE}+[a-z0-9._%+-])+|[a-z0-9._%+-]+)"
_EMAIL = (f"{_LOCAL}{_SPACE}*{_AT}{_SPACE}*{_LABEL}"
          f"(?:{_SPACE}*{_DOT}{_SPACE}*{_LABEL})*?{_SPACE}*{_DOT}{_SPACE}*{_TLD}\\b")
#: The search, without look-arounds (RE2 has none): a phone number stands apart from words.
SCAN = f"(?i)(?:^|[^{_WORD}]){_PHONE}(?:[^{_WORD}]|$)|{_EMAIL}"
#: The same, for cutting a phone number out of a value: the characters around it are kept.
_PHONE_CUT = f"(?i)(^|[^{_WORD}]){_PHONE}([^{_WORD}]|$)"
#: ID-like tokens: a short prefix and 6+ digits (national ID, passport, registration numbers).
#: Redacted from free text with the contacts; no contract blocks them.
ID_LIKE = r"(?i)\b[a-z]{0,4}[-/:#]?[0-9]{6,}\b"
_DIGITS = re.compile(r"\d")
#: Spaces NFKC leaves as they are (the others it writes as " ").
_SPACES = re.compile("[\u0085\u1680\u2028\u2029]")


def fold(cells: pa.Array, normalised: bool = False) -> pa.Array:
    """The cells as the search reads them (``normalised``: the caller has applied NFKC).

    NFKC runs in Arrow; only the cells left with other than ASCII go through Python, to drop
    format characters (zero-width spaces, direction marks) and write digits and spaces in
    ASCII, which RE2's classes would not match otherwise."""
    if not normalised:  # (a million cells: 0.3 s, which the contract has spent already)
        cells = pc.utf8_normalize(cells, "NFKC")
    other = pc.invert(pc.fill_null(pc.string_is_ascii(cells), True))
    if not pc.any(other).as_py():
        return cells
    folded = [None if v is None else fold_text(v) for v in pc.filter(cells, other).to_pylist()]
    return pc.replace_with_mask(cells, other, pa.array(folded, pa.string()))


def fold_text(text: str) -> str:
    """One value as ``fold`` writes it.

    NFKC again once format characters are gone: one between a letter and its accent kept
    them apart, and the search must read what a person reads."""
    text = unicodedata.normalize("NFKC", text)
    text = unicodedata.normalize(
        "NFKC", "".join(c for c in text if unicodedata.category(c) != "Cf"))
    text = _SPACES.sub(" ", text)
    return _DIGITS.sub(lambda m: str(unicodedata.digit(m[0])), text)


def _search(cells: pa.Array, pattern: str) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(cells, pattern), False).to_numpy(
        zero_copy_only=False)


def found(cells: pa.Array, normalised: bool = False) -> np.ndarray:
    """Per cell: does it hold a phone number or an e-mail address (empty cells: no)?

    The one judgement the contract and redaction share, so they cannot disagree.
    ``normalised``: the cells are in NFKC already."""
    return _search(fold(cells, normalised), SCAN)


def redact(values: pd.Series) -> tuple[pd.Series, int]:
    """Free text with contacts and ID-like tokens replaced by ``[redacted]``; values changed.

    Only the values that hold one are rewritten (in folded form, as the search read them); one
    whose match cannot be cut apart is redacted whole, so nothing ``found`` would flag is left."""
    text = values.astype("string")
    cells = fold(as_arrow(text))
    hit = _search(cells, SCAN) | _search(cells, ID_LIKE)
    if not hit.any():
        return text, 0
    # In RE2, whose time grows with a value's length (Python's backtracking search took
    # seconds over 10,000 crafted characters).
    cut = pc.replace_substring_regex(pc.filter(cells, pa.array(hit)), _PHONE_CUT,
                                     f"\\1{REDACTED}\\2")
    for pattern in (f"(?i){_EMAIL}", ID_LIKE):
        cut = pc.replace_substring_regex(cut, pattern, REDACTED)
    cut = pc.if_else(pa.array(found(cut)), REDACTED, cut)  # still there: nothing of it leaves
    out = pc.replace_with_mask(as_arrow(text), pa.array(hit), cut)
    return pd.Series(out, index=values.index, dtype="string[pyarrow]"), int(hit.sum())


def phone_shaped(numbers: np.ndarray) -> np.ndarray:
    """Per number: 9 or more digits before the point (NaN: no)?

    No site counts a hundred million; a phone number typed into a count does."""
    with np.errstate(invalid="ignore"):
        return np.abs(numbers) >= 1e8


def leading_zero(text: str) -> bool:
    """Does a number as the export wrote it start with 0 and another digit, with no point?

    What a phone number keeps (``08035550103``), and no count or coordinate is written with."""
    return re.match(r"[+-]?0[0-9]", text) is not None and "." not in text
