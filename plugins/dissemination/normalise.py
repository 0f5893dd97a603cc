"""How headers, values and HXL hashtags are compared: the one normal form used everywhere.

Exports are typed by people and spreadsheet programs: ``Yes``, ``YES``, ``yes `` and a full-width
``ｙｅｓ`` are the same answer, ``Total IDP  individuals`` the same header. Values are compared in
their normal form (Unicode NFKC, case folded, surrounding whitespace dropped, inner runs of
whitespace as one space); what the pipeline keeps is the value as the contract declares it.
Pure and dependency-free: the policy models use it at load time, the contract on every round.
"""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")
#: HXL's hashtag and attribute syntax (hxlstandard.org: a letter, then letters, digits, "_").
_HXL_TAG = re.compile(r"#[a-z][a-z0-9_]*", re.ASCII)
_HXL_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)


def token(value: object) -> str:
    """The normal form of a header or a value. Numbers that are whole read as integers, so an
    XLSX ``1.0`` matches a declared ``1``; booleans read as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = unicodedata.normalize("NFKC", str(value))
    return _SPACE.sub(" ", text).strip().casefold()


def hxl(tag: str) -> str:
    """An HXL hashtag with its attributes in a fixed order: ``#affected+ind+idps`` and
    ``#Affected +idps +ind`` are the same column."""
    parts = [p for p in token(tag).replace(" ", "").split("+") if p]
    if not parts or not _HXL_TAG.fullmatch(parts[0]) or not all(
            _HXL_ATTRIBUTE.fullmatch(a) for a in parts[1:]):
        return ""  # (a spreadsheet's "#N/A", "#REF!" or "#DIV/0!" is no hashtag)
    return "+".join([parts[0], *sorted(set(parts[1:]))])


def is_hxl(value: object) -> bool:
    return isinstance(value, str) and bool(hxl(value))
