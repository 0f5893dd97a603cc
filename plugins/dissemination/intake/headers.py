"""Export headers the contract did not declare: named by position, never quoted.

A header cell is free text typed by a person (``Note: KI Musa Bello +234 803 ... says ...``), so
a header no rule declares is a value: it is never shipped, logged or stored. Its column is named
by its position as a spreadsheet counts it (``column 17``), in the round's columns, the drop's
log, ``round_columns`` and every manifest. A header holding a phone number or an e-mail address
breaks the contract, named by position too.

A declared indicator no header matched may be a misspelt header (``Site-Name``, ``# of IDP
individuals``): the nearest unmatched column is named with it (``column 3, near site_name``), so
a column partners expect is not dropped without a word.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from difflib import SequenceMatcher

import pyarrow as pa

from .. import normalise
from ..intake import contacts
from ..policy import RuleSet

#: How alike a header and a declared one must be, letters and digits only, to be named nearest.
NEAR = 0.8
_LABEL = re.compile(r"column \d+(?:, near \w+)?")
_NOT_LETTERS = re.compile(r"[\W_]+")


def label(position: int, near: str = "") -> str:
    """The column at ``position`` (0-based) as people count it, and the indicator it is near."""
    return f"column {position + 1}" + (f", near {near}" if near else "")


def is_label(name: str) -> bool:
    return _LABEL.fullmatch(name) is not None


def quoted(shown: str) -> str:
    """A column as named to people, in a sentence: a declared header in quotes, a position not."""
    return shown if is_label(shown) else repr(shown)


def holds_contact(header: str) -> bool:
    """Does a header hold what looks like a phone number or an e-mail address?

    Headers are typed by people like cells: the same detector as the contract's and
    redaction's (intake/contacts.py), so a header cannot hide what a cell could not."""
    return bool(contacts.found(pa.array([header], pa.string()))[0])


def shown(headers: list[str], names: list[str | None], ruleset: RuleSet) -> list[str]:
    """How each column is named to people: its header as written where the contract declares
    it, else its position, with the missing indicator it is nearest to."""
    declared = ruleset.header_index
    near = _nearest(headers, names, ruleset)
    return [header if normalise.token(header) in declared else label(position, near.get(position))
            for position, header in enumerate(headers)]


def violations(headers: list[str], tags: list[str], names: list[str | None], shown: list[str],
               ruleset: RuleSet, ref: Callable[[RuleSet, str], str]
               ) -> list[tuple[str, str, str, str]]:
    """The ways the headers break the contract, as (column as shown, indicator, rule, problem):
    a header and its HXL tag naming two indicators, two headers alike, two columns for one
    indicator, a header holding a contact."""
    country, out = ruleset.country, []
    first: dict[str, str] = {}  # normal form -> the first column headed that way
    claimed: dict[str, str] = {}  # indicator -> the first column matched to it
    for header, tag, name, column in zip(headers, tags, names, shown, strict=True):
        by_header = ruleset.header_index.get(normalise.token(header))
        by_tag = ruleset.hxl_index.get(tag) if tag else None
        if by_header and by_tag and by_header != by_tag:
            out.append((column, "", f"rules/{country}: headers and hxl",
                        f"the header names {by_header} but the HXL tag names {by_tag}"))
        key = normalise.token(header)
        if key in first:
            out.append((column, name or "", f"rules/{country}: headers",
                        f"two columns are headed {quoted(first[key])} and {quoted(column)}, "
                        "the same once case and spaces are ignored"))
        elif name and name in claimed:
            out.append((column, name, ref(ruleset, name),
                        f"{quoted(claimed[name])} and {quoted(column)} are both {name}"))
        if holds_contact(header):
            out.append((column, name or "", f"rules/{country}: headers",
                        "the header holds what looks like a phone number or e-mail address "
                        "(a header names a question, never a person)"))
        first.setdefault(key, column)
        if name:
            claimed.setdefault(name, column)
    return out


def _compact(text: str) -> str:
    return _NOT_LETTERS.sub("", normalise.token(text))


def _nearest(headers: list[str], names: list[str | None], ruleset: RuleSet) -> dict[int, str]:
    """Unmatched position -> the indicator no column matched that its header comes nearest to
    (at least ``NEAR`` alike)."""
    missing = {name: [_compact(h) for h in (name, *rule.headers)]
               for name, rule in ruleset.indicators.items()
               if name not in names and rule.kind != "round"}
    near = {}
    for position, (header, name) in enumerate(zip(headers, names, strict=True)):
        if name or not missing or holds_contact(header):
            continue
        written = _compact(header)
        score, best = max((max(_alike(written, h) for h in forms), n)
                          for n, forms in missing.items())
        if score >= NEAR:
            near[position] = best
    return near


def _alike(a: str, b: str) -> float:
    """``SequenceMatcher``'s ratio, where its cheap upper bound can reach ``NEAR`` (hundreds of
    unmatched columns against every missing indicator's headers)."""
    matcher = SequenceMatcher(None, a, b)
    return matcher.ratio() if matcher.real_quick_ratio() >= NEAR and \
        matcher.quick_ratio() >= NEAR else 0.0


def not_found(columns: Sequence[str], ruleset: RuleSet) -> tuple[str, ...]:
    """The declared indicators no column of the round is, each with the unmatched columns near
    it: one line, or none. ``columns``: the round's, as the contract names them (``Conformer``)."""
    near: dict[str, list[str]] = {}
    for column in columns:
        if is_label(column) and ", near " in column:
            position, indicator = column.split(", near ")
            near.setdefault(indicator, []).append(position)
    missing = [f"{name} (nearest unmatched: {', '.join(near[name])})" if name in near else name
               for name, rule in ruleset.indicators.items()
               if name not in columns and rule.kind != "round"]
    return (f"declared in rules/{ruleset.country}, no column is: {', '.join(missing)}",) \
        if missing else ()


def withheld(dropped: Sequence[str], ruleset: RuleSet) -> list[str]:
    """The names of a round's columns dropped at intake, as a package may show them: a round
    stored before headers were named by position may hold a header's text in
    ``round_columns``; it is withheld (``dropped column 1``...)."""
    unknown = iter(range(1, len(dropped) + 1))
    return [name if name in ruleset.indicators or is_label(name)
            else f"dropped column {next(unknown)}" for name in dropped]


def describe(headers: dict[str, str], dropped: list[str]) -> list[str]:
    """One line per column (``headers``: as named to people -> indicator, "" if none): the
    indicator it is, or why it will never be shared."""
    lines = []
    for header, name in headers.items():
        if name and name not in dropped:
            lines.append(f"{quoted(header)} -> {name}")
        elif name:
            lines.append(f"{quoted(header)} -> {name} (Secret: never shared, dropped unread)")
        else:
            lines.append(f"{quoted(header)}, no rule: Secret, dropped unread")
    return lines
