"""The round contract: a real export, taken as it is, checked value by value before any rule reads it.

``conform`` is the one door every round goes through (file drop, SQL source, ``check-round``):

1. **Headers**: each column is matched to an indicator by its header as the export writes it
   (``Total IDP individuals (ind)``), compared in normal form, or by its HXL hashtag when the row
   under the headers is an HXL row (``#affected+idps+ind``). A column that matches nothing is
   Secret: it is dropped here, and only its name travels on, for the explanation.
2. **Secret columns** (uncovered, classified Secret, free text not allowed) are dropped unread:
   their values are never looked at, kept or written anywhere.
3. **Every other value** is checked against its kind: counts are whole numbers within bounds,
   coordinates numbers within bounds, dates dates, categorical and flag values one of the declared
   values (after normalisation and synonyms); key, admin and round values match their pattern and
   carry no phone number or e-mail address. What survives is the canonical value, so relational
   conditions and aggregation only ever see declared values.
4. **Structure**: a duplicate header (after normalisation), two columns for one indicator, a
   header and an HXL tag that disagree, a missing or repeated site key.

Every problem is a ``Violation`` naming the column, the rule and the rows (as the source counts
them), never the value: the value may be the very phone number that made it fail.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import normalise
from .classification import Classification
from .errors import PermanentError
from .policy import IndicatorRule, RuleSet
from .sensitivity import classify_round

#: Phone numbers (7+ digits, any common separators) and e-mail addresses, also spelled out.
_PHONE_BODY = "\\+?\\d(?:[\\s().\\/,\u2010-\u2015-]{0,2}\\d){6,}"
PHONE = rf"(?<!\w){_PHONE_BODY}(?!\w)"
EMAIL = (r"[\w.+-]+\s*(?:@|[\[({]\s*at\s*[\])}]|\s+at\s+)\s*[\w-]+"
         r"(?:\s*(?:\.|[\[({]\s*dot\s*[\])}]|\s+dot\s+)\s*[\w-]+)*"
         r"\s*(?:\.|[\[({]\s*dot\s*[\])}]|\s+dot\s+)\s*[a-z]{2,24}\b")
#: The same search without look-arounds, which RE2 (pyarrow) lacks: scanning a million cells
#: stays in pyarrow instead of Python's re.
CONTACT_SCAN = rf"(?i){EMAIL}|(?:^|\W){_PHONE_BODY}(?:\W|$)"
#: ID-like tokens: a short prefix and 6+ digits (national ID, passport, registration numbers).
ID_LIKE = r"\b[A-Za-z]{0,4}[-/:#]?\d{6,}\b"
CONTACT = re.compile(f"{EMAIL}|{PHONE}", re.IGNORECASE)
#: What free text may never carry out, even where free text is allowed: redacted.
PERSONAL = re.compile(f"{EMAIL}|{PHONE}|{ID_LIKE}", re.IGNORECASE)
_MAX_ROWS_NAMED = 10


@dataclass(frozen=True)
class Violation:
    """One way a round breaks its contract; names, never values."""

    column: str  # the header as the source writes it
    indicator: str  # the indicator it was matched to ("" if none)
    rule: str  # e.g. "rules/NGA v2026.11: indicators.idp_individuals (count)"
    problem: str
    rows: tuple[int, ...] = ()  # row numbers as the source counts them
    count: int = 0  # how many rows in all (rows lists the first few)

    def line(self) -> str:
        where = f"column {self.column!r}" + (
            f" ({self.indicator})" if self.indicator and self.indicator != self.column else "")
        rows = ""
        if self.count:
            more = f" (+{self.count - len(self.rows)} more)" if self.count > len(self.rows) else ""
            rows = f" in {self.count} row(s): {', '.join(map(str, self.rows))}{more}"
        return f"{where}: {self.problem}{rows} [{self.rule}]"


class ContractBroken(PermanentError, ValueError):
    """A round that breaks its country's contract: it is blocked on every path."""

    def __init__(self, source: str, violations: Sequence[Violation]):
        self.source, self.violations = source, list(violations)
        super().__init__(f"{source}: {len(self.violations)} contract violation(s), the round is "
                         "blocked:\n  " + "\n  ".join(v.line() for v in self.violations))


@dataclass
class ConformedRound:
    """The round in canonical form, and what was done to it."""

    frame: pd.DataFrame  # indicator-named columns, canonical values, no Secret column
    columns: list[str]  # every source column: its indicator, or its header if none matched
    dropped: list[str]  # of those, the ones dropped unread as Secret
    headers: dict[str, str]  # source header -> indicator ("" if none)
    hxl_row: bool = False
    violations: list[Violation] = field(default_factory=list)

    def raise_if_broken(self, source: str) -> ConformedRound:
        if self.violations:
            raise ContractBroken(source, self.violations)
        return self


def _ref(ruleset: RuleSet, name: str) -> str:
    kind = ruleset.indicators[name].kind if name in ruleset.indicators else ""
    return f"rules/{ruleset.country} v{ruleset.version}: indicators.{name}" + (
        f" ({kind})" if kind else "")


def conform(raw: pd.DataFrame, ruleset: RuleSet, *, first_row: int = 2) -> ConformedRound:
    """Match headers, drop Secret columns unread, check and normalise every other value.

    ``first_row``: how the source numbers its first data row (2 in a CSV or XLSX export, under
    the header line; 1 for a SQL table); an HXL row under the headers shifts it by one.
    """
    raw = raw.reset_index(drop=True)
    hxl_row = len(raw) > 0 and is_hxl_row(raw.iloc[0])
    tags = [normalise.hxl(v) if normalise.is_hxl(v) else "" for v in raw.iloc[0]] \
        if hxl_row else [""] * raw.shape[1]
    if hxl_row:
        raw, first_row = raw.iloc[1:].reset_index(drop=True), first_row + 1
    violations: list[Violation] = []
    headers: dict[str, str] = {}
    names: list[str | None] = []
    first_header: dict[str, str] = {}  # normal form -> the first header written that way
    claimed: dict[str, str] = {}  # indicator -> the first header matched to it
    for header, tag in zip(map(str, raw.columns), tags, strict=True):
        by_header = ruleset.header_index.get(normalise.token(header))
        by_tag = ruleset.hxl_index.get(tag) if tag else None
        name = by_header or by_tag
        if by_header and by_tag and by_header != by_tag:
            violations.append(Violation(header, "", f"rules/{ruleset.country}: headers and hxl",
                                        f"the header names {by_header} but the HXL tag names "
                                        f"{by_tag}"))
            name = None
        key = normalise.token(header)
        if key in first_header:
            twin = first_header[key]
            violations.append(Violation(header, name or "", f"rules/{ruleset.country}: headers",
                                        f"two columns are headed {twin!r} and {header!r}, the "
                                        "same once case and spaces are ignored"))
        elif name and name in claimed:
            violations.append(Violation(header, name, _ref(ruleset, name),
                                        f"{claimed[name]!r} and {header!r} are both {name}"))
        first_header.setdefault(key, header)
        if name:
            claimed.setdefault(name, header)
        headers.setdefault(header, name or "")
        names.append(name)

    columns, dropped, kept = [], [], {}
    # The one judge of Secret (uncovered, Secret, free text not allowed) is the classifier.
    base = classify_round([n or str(h) for h, n in zip(raw.columns, names, strict=True)], ruleset)
    for position, (header, name) in enumerate(zip(raw.columns, names, strict=True)):
        columns.append(name or str(header))
        if base[name or str(header)].classification is Classification.SECRET:
            dropped.append(name or str(header))
            continue
        if name in kept:
            continue  # a second column for the same indicator: already a violation
        series, problems = _conform_column(raw.iloc[:, position], ruleset.indicators[name])
        for problem, mask in problems:
            rows = np.flatnonzero(mask) + first_row
            violations.append(Violation(str(header), name, _ref(ruleset, name), problem,
                                        tuple(int(r) for r in rows[:_MAX_ROWS_NAMED]), len(rows)))
        kept[name] = series
    violations += _key_violations(kept, raw, names, ruleset, first_row)
    frame = pd.DataFrame(kept, index=raw.index)
    return ConformedRound(frame, columns, dropped, headers, hxl_row, violations)


def is_hxl_row(row: pd.Series) -> bool:
    cells = [v for v in row if not _blank(v)]
    return bool(cells) and all(normalise.is_hxl(v) for v in cells)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA \
        or (isinstance(value, str) and not value.strip())


def _key_violations(kept, raw, names, ruleset: RuleSet, first_row: int) -> list[Violation]:
    key = ruleset.site_key
    if key not in kept:
        header = next((str(h) for h, n in zip(raw.columns, names, strict=True) if n == key), "")
        if header:
            return []  # matched but unusable: its own violations say why
        written = ", ".join(repr(h) for h in (key, *ruleset.indicators[key].headers))
        return [Violation(key, key, _ref(ruleset, key),
                          f"no column is the site key (headers {written})")]
    values = kept[key]
    out = []
    for problem, mask in (("the site key is missing", values.isna().to_numpy()),
                          ("the site key is repeated",
                           (values.duplicated(keep=False) & values.notna()).to_numpy())):
        rows = np.flatnonzero(mask) + first_row
        if len(rows):
            header = next(str(h) for h, n in zip(raw.columns, names, strict=True) if n == key)
            out.append(Violation(header, key, _ref(ruleset, key), problem,
                                 tuple(int(r) for r in rows[:_MAX_ROWS_NAMED]), len(rows)))
    return out


# --- one column ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cells:
    """A column as its distinct cells: the Python work of a check is done once per distinct
    value, however many sites repeat it. ``codes[i]`` is row i's cell in ``uniques``; -1 for an
    empty cell."""

    codes: np.ndarray
    uniques: list

    @classmethod
    def of(cls, values: pd.Series) -> _Cells:
        if values.dtype == object:  # TRUE and 1 hash alike: keep booleans apart
            flags = np.fromiter((isinstance(v, bool | np.bool_) for v in values), bool,
                                len(values))
            if flags.any():
                keyed = values.where(~flags, values.map({True: "\0true", False: "\0false"}))
                codes, uniques = pd.factorize(keyed, use_na_sentinel=True)
                return cls(codes, [{"\0true": True, "\0false": False}.get(u, u)
                                   for u in uniques])
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        return cls(codes, list(uniques))

    def per_row(self, per_unique: list, empty=None) -> np.ndarray:
        table = np.empty(len(per_unique) + 1, dtype=object)
        table[:-1], table[-1] = per_unique, empty
        return table[self.codes]

    def mask(self, per_unique: list[bool], empty: bool = False) -> np.ndarray:
        return np.append(np.asarray(per_unique, dtype=bool), empty)[self.codes]


def _conform_column(values: pd.Series, rule: IndicatorRule):
    """(canonical series, [(problem, row mask)]) for one column under its rule."""
    if rule.kind in ("count", "coordinate") and not rule.values and (
            pd.api.types.is_numeric_dtype(values.dtype)
            and not pd.api.types.is_bool_dtype(values.dtype)):
        return _number(pd.to_numeric(values).astype("float64"), rule,
                       values.isna().to_numpy())  # already numbers: nothing to parse
    if rule.kind in ("key", "admin", "round", "text", "personal") and not rule.values and \
            pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
        return _strings(values.astype("string[pyarrow]"), rule)
    cells = _Cells.of(values)
    tokens = {normalise.token(m) for m in rule.missing}
    missing = cells.mask([_blank(u) or normalise.token(u) in tokens for u in cells.uniques],
                         empty=True)
    if rule.values:
        return _declared(cells, rule, missing)
    if rule.kind in ("count", "coordinate"):
        numbers = [None if isinstance(u, bool | np.bool_) else _to_float(u)
                   for u in cells.uniques]
        return _number(pd.Series(cells.per_row(numbers), index=values.index, dtype="float64"),
                       rule, missing)
    if rule.kind == "date":
        return _date(cells, rule, missing)
    text = [normalise.token(u) if isinstance(u, bool | np.bool_) else
            str(int(u)) if isinstance(u, float) and u.is_integer() else " ".join(str(u).split())
            for u in cells.uniques]
    out = pd.Series(cells.per_row(text), index=values.index).where(~missing)
    return _strings(out.astype("string[pyarrow]"), rule)


def _to_float(value) -> float | None:
    try:
        return float(normalise.token(value))
    except (TypeError, ValueError):
        return None


def _declared(cells: _Cells, rule: IndicatorRule, missing: np.ndarray):
    lookup = rule.canonical
    canonical = cells.per_row([lookup.get(normalise.token(u)) for u in cells.uniques])
    stray = pd.isna(canonical) & ~missing
    out = pd.Series(canonical).where(~missing & ~stray).astype("string[pyarrow]")
    return out, [(f"not one of the {len(rule.values)} declared values (after case, spaces and "
                  "synonyms)", stray)] if stray.any() else []


def _number(numbers: pd.Series, rule: IndicatorRule, missing: np.ndarray):
    numbers = numbers.mask(missing)
    unreadable = numbers.isna().to_numpy() & ~missing
    problems = []
    if rule.kind == "count":
        low, high = rule.bounds or (0, np.inf)
        # Whole, and exact as a float: beyond 2**53 a "count" is junk (and no int64 holds it).
        fractional = (numbers.notna() & ((numbers % 1 != 0) | (numbers.abs() > 2**53))).to_numpy()
        if (unreadable | fractional).any():
            problems.append(("not a whole number", unreadable | fractional))
        numbers = numbers.mask(fractional)
    else:
        low, high = rule.bounds
        if unreadable.any():
            problems.append(("not a number", unreadable))
    outside = (numbers.notna() & ~numbers.between(low, high)).to_numpy()
    if outside.any():
        problems.append((f"outside the bounds [{_fmt(low)}, {_fmt(high)}]", outside))
    numbers = numbers.mask(outside)
    dtype = "int64[pyarrow]" if rule.kind == "count" else "double[pyarrow]"
    return numbers.reset_index(drop=True).astype(dtype), problems


def _fmt(x: float) -> str:
    return "no limit" if x == np.inf else (str(int(x)) if float(x).is_integer() else str(x))


def _date(cells: _Cells, rule: IndicatorRule, missing: np.ndarray):
    def parse(v) -> str | None:
        if isinstance(v, datetime | date | pd.Timestamp):
            return pd.Timestamp(v).strftime("%Y-%m-%d")
        text = " ".join(unicodedata.normalize("NFKC", str(v)).split())
        if rule.date_format:  # the export's own format; ISO too (a conformed round's form)
            try:
                return datetime.strptime(text, rule.date_format).strftime("%Y-%m-%d")
            except ValueError:
                pass
        try:
            parsed = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
            return parsed.strftime("%Y-%m-%d")
        except ValueError:
            return None

    iso = cells.per_row([None if _blank(u) else parse(u) for u in cells.uniques])
    unreadable = pd.isna(iso) & ~missing
    out = pd.Series(iso).where(~missing).astype("string[pyarrow]")
    expected = rule.date_format or "YYYY-MM-DD"
    return out, [(f"not a date ({expected})", unreadable)] if unreadable.any() else []


def _strings(out: pd.Series, rule: IndicatorRule):
    """Text kinds: NFKC, spaces tidied, the contract's missing tokens emptied; key, admin and
    round values match their pattern, or else carry no phone number or e-mail address. In
    pyarrow compute, so a million-site round is not a million Python calls."""
    cells = pa.array(out.reset_index(drop=True), type=pa.string(), from_pandas=True)
    cells = pc.utf8_trim_whitespace(pc.replace_substring_regex(
        pc.utf8_normalize(cells, "NFKC"), r"\s+", " "))
    blank = pc.equal(cells, "")
    if rule.missing:
        tokens = pa.array([normalise.token(m) for m in rule.missing])
        blank = pc.or_(blank, pc.is_in(pc.utf8_lower(cells), value_set=tokens))
    cells = pc.if_else(pc.fill_null(blank, True), None, cells)
    problems = []
    if rule.kind in ("key", "admin", "round"):
        if rule.pattern is not None:
            matched = pd.Series(cells, dtype="string[pyarrow]").str.fullmatch(rule.pattern)
            unmatched = ~matched.fillna(True).to_numpy(dtype=bool)
            if unmatched.any():
                problems.append(("does not match the declared pattern", unmatched))
        else:  # nothing declares its shape: at least no phone number or e-mail address
            contact = _contains_contact(cells)
            if contact.any():
                problems.append(("holds what looks like a phone number or e-mail address",
                                 contact))
    return pd.Series(cells, dtype="string[pyarrow]"), problems


def _contains_contact(cells: pa.Array) -> np.ndarray:
    """RE2 over every cell; Python's Unicode-aware ``re`` over the few non-ASCII ones (RE2's
    digit and word classes are ASCII only)."""
    hit = pc.fill_null(pc.match_substring_regex(cells, CONTACT_SCAN), False).to_numpy(
        zero_copy_only=False)
    wide = np.flatnonzero(~pc.fill_null(pc.string_is_ascii(cells), True).to_numpy(
        zero_copy_only=False))
    for i in wide:
        hit[i] = CONTACT.search(cells[int(i)].as_py()) is not None
    return hit


def describe(conformed: ConformedRound) -> list[str]:
    """One line per source header: the indicator it is, or why it will never be shared."""
    lines = []
    for header, name in conformed.headers.items():
        target = name if name and name not in conformed.dropped else None
        if target:
            lines.append(f"{header!r} -> {name}")
        elif name:
            lines.append(f"{header!r} -> {name} (Secret: never shared, dropped unread)")
        else:
            lines.append(f"{header!r} -> no rule: Secret, never shared")
    return lines
