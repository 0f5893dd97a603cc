"""The round contract: a real export, taken as it is, checked value by value before rules read it.

``conform`` is the one door every round goes through (file drop, SQL source, ``check-round``):

1. **Headers**: each column is matched to an indicator by its header as the export writes it
   (``Total IDP individuals (ind)``), compared in normal form, or by its HXL hashtag when the row
   under the headers is an HXL row (``#affected+idps+ind``). A column that matches nothing is
   Secret: it is dropped here, and only its position travels on (``headers``): a header is typed
   text, never quoted; one holding a phone number or e-mail address breaks the contract.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .. import normalise
from ..classification import Classification
from ..classify.sensitivity import classify_round
from ..errors import PermanentError
from ..ids import ROUND_ID_PATTERN
from ..intake import contacts
from ..intake import headers as named
from ..policy import IndicatorRule, RuleSet
from .columns import as_arrow, repeats

_MAX_ROWS_NAMED = 10


@dataclass(frozen=True)
class Violation:
    """One way a round breaks its contract; names, never values."""

    column: str  # the header as the contract declares it, else its position (``headers``)
    indicator: str  # the indicator it was matched to ("" if none)
    rule: str  # e.g. "rules/NGA v2026.11: indicators.idp_individuals (count)"
    problem: str
    rows: tuple[int, ...] = ()  # row numbers as the source counts them
    count: int = 0  # how many rows in all (rows lists the first few)

    def line(self) -> str:
        where = (self.column if named.is_label(self.column) else f"column {self.column!r}") + (
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

    frame: pd.DataFrame | None  # indicator-named columns, canonical values, no Secret
    # column (None: a round conformed in parts, each written as it was done)
    columns: list[str]  # every source column: its indicator, or its position if none matched
    dropped: list[str]  # of those, the ones dropped unread as Secret
    headers: dict[str, str]  # header as named to people (``headers.shown``) -> indicator or ""
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
    conformer = Conformer(ruleset, first_row=first_row)
    return conformer.result(conformer.part(raw))


class Conformer:
    """``conform`` a part at a time: a round read in parts (``source.read_round_parts``) is
    checked and normalised part by part, so each part as read can be freed once conformed.
    Headers (and the HXL row) are matched on the first part; row numbers run on across parts;
    the site key is checked across all of them; the violations are those one pass would find
    (a column's problems listed in the order they are first met)."""

    def __init__(self, ruleset: RuleSet, *, first_row: int = 2):
        self.ruleset = ruleset
        self.next_row = first_row  # how the source numbers the next data row
        self.matched = False
        self.hxl_row = False
        self.violations: list[Violation] = []  # headers and HXL (structural)
        self.headers: dict[str, str] = {}
        self.names: list[str | None] = []
        self.columns: list[str] = []
        self.dropped: list[str] = []
        self._source: list[str] = []  # the headers as the source writes them, in order
        self._shown: list[str] = []  # each as named to people (``headers.shown``)
        self._todo: dict[str, tuple[str, int]] = {}  # indicator -> (column shown, position)
        self._problems: dict[tuple[int, str], list] = {}  # (position, problem) -> rows, count
        self._keys: list[tuple[int, pd.Series]] = []  # (first row number, site keys) per part
        self._read: list[int] | None = None  # positions a part may hold alone (``match``)
        self._skip_hxl = False  # the next part starts with the HXL row

    def match(self, head: pd.DataFrame) -> list[str] | None:
        """Match the headers (and the HXL row, if ``head`` starts with one) before any part is
        read: the headers of the columns the contract reads, in the source's order, so parts
        can be read without the others (a Secret column is then read in ``head`` only). None:
        headers that break the contract (every column is read, and the round refused)."""
        self._match_head(head.reset_index(drop=True))  # the first part starts with its HXL row
        if self.violations:
            return None
        self._read = sorted(position for _, position in self._todo.values())
        return [self._source[position] for position in self._read]

    def part(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The part conformed (indicator-named columns, canonical values, no Secret column).
        After ``match``, a part may hold only the columns it named."""
        raw = raw.reset_index(drop=True)
        at = None  # where each matched column is in this part: at its source position
        if not self.matched:
            raw = self._match_head(raw)
        elif (headers := [str(h) for h in raw.columns]) != self._source:
            if self._read is None or headers != [self._source[p] for p in self._read]:
                raise ValueError("a part of the round has other columns than its first part")
            at = {position: i for i, position in enumerate(self._read)}
        if self._skip_hxl:
            raw, self.next_row = raw.iloc[1:].reset_index(drop=True), self.next_row + 1
            self._skip_hxl = False
        first, ruleset = self.next_row, self.ruleset
        self.next_row += len(raw)
        # Columns are independent, and Arrow's kernels release the GIL: two threads share it.
        with ThreadPoolExecutor(2) as pool:
            done = pool.map(lambda item: _conform_column(
                raw.iloc[:, item[1][1] if at is None else at[item[1][1]]],
                ruleset.indicators[item[0]]), self._todo.items())
            kept = {}
            for (name, (_, position)), (series, problems) in zip(self._todo.items(), done,
                                                                 strict=True):
                for problem, mask in problems:
                    rows = np.flatnonzero(mask) + first
                    seen = self._problems.setdefault((position, problem), [[], 0])
                    seen[0] += [int(r) for r in rows[:_MAX_ROWS_NAMED - len(seen[0])]]
                    seen[1] += len(rows)
                kept[name] = series
        if ruleset.site_key in kept:
            self._keys.append((first, kept[ruleset.site_key]))
        return pd.DataFrame(kept, index=raw.index)

    def _match_head(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Match on the round's first rows; the HXL row, if any, is left for ``part`` to skip."""
        self.hxl_row = len(raw) > 0 and is_hxl_row(raw.iloc[0])
        tags = [normalise.hxl(v) if normalise.is_hxl(v) else "" for v in raw.iloc[0]] \
            if self.hxl_row else [""] * raw.shape[1]
        self._skip_hxl = self.hxl_row
        self._match([str(h) for h in raw.columns], tags)
        return raw

    def _match(self, headers: list[str], tags: list[str]) -> None:
        ruleset = self.ruleset
        for header, tag in zip(headers, tags, strict=True):
            by_header = ruleset.header_index.get(normalise.token(header))
            by_tag = ruleset.hxl_index.get(tag) if tag else None
            self.names.append(None if by_header and by_tag and by_header != by_tag
                              else by_header or by_tag)
        self._shown = named.shown(headers, self.names, ruleset)
        self.violations += [Violation(*v) for v in named.violations(
            headers, tags, self.names, self._shown, ruleset, _ref)]
        for shown, name in zip(self._shown, self.names, strict=True):
            self.headers.setdefault(shown, name or "")
        # The one judge of Secret (uncovered, Secret, free text not allowed) is the classifier.
        base = classify_round([n or s for s, n in zip(self._shown, self.names, strict=True)],
                              ruleset)
        for position, (shown, name) in enumerate(zip(self._shown, self.names, strict=True)):
            self.columns.append(name or shown)
            if base[name or shown].classification is Classification.SECRET:
                self.dropped.append(name or shown)
            elif name not in self._todo:  # a second column for one indicator: a violation
                self._todo[name] = (shown, position)
        self._source, self.matched = headers, True

    def result(self, frame: pd.DataFrame | None = None) -> ConformedRound:
        """What the parts add up to; ``frame``: the conformed round, if the caller kept it."""
        violations = list(self.violations)
        by_position = {position: (header, name) for name, (header, position)
                       in self._todo.items()}
        for (position, problem), (rows, count) in sorted(self._problems.items(),
                                                          key=lambda item: item[0][0]):
            header, name = by_position[position]
            violations.append(Violation(header, name, _ref(self.ruleset, name), problem,
                                        tuple(rows), count))
        violations += self._key_violations()
        return ConformedRound(frame, self.columns, self.dropped, self.headers, self.hxl_row,
                              violations)

    def _key_violations(self) -> list[Violation]:
        ruleset, key = self.ruleset, self.ruleset.site_key
        header = next((h for h, n in zip(self._shown, self.names, strict=True) if n == key), "")
        if key not in self._todo:
            if header:
                return []  # matched but unusable: its own violations say why
            written = ", ".join(repr(h) for h in (key, *ruleset.indicators[key].headers))
            return [Violation(key, key, _ref(ruleset, key),
                              f"no column is the site key (headers {written})")]
        if not self._keys:
            return []
        values = pd.concat([keys for _, keys in self._keys], ignore_index=True)
        starts = np.repeat([first for first, _ in self._keys],
                           [len(keys) for _, keys in self._keys])
        numbers = starts + np.concatenate([np.arange(len(keys)) for _, keys in self._keys])
        missing = values.isna().to_numpy()
        # Distinct keys, counted in Arrow, are the common case: then nothing is repeated. Keys
        # are compared whatever their case: nga-s00001 is NGA-S00001, typed again.
        folded = pc.utf8_lower(pa.array(values, pa.string()))
        distinct = pc.count_distinct(folded, mode="only_valid").as_py()
        repeated = np.zeros(len(values), dtype=bool) if distinct == (~missing).sum() else \
            (pd.Series(folded, dtype="string[pyarrow]").duplicated(keep=False)
             & values.notna().to_numpy()).to_numpy()
        out = []
        for problem, mask in (("the site key is missing", missing),
                              ("the site key is repeated", repeated)):
            rows = numbers[mask]
            if len(rows):
                out.append(Violation(header, key, _ref(ruleset, key), problem,
                                     tuple(int(r) for r in rows[:_MAX_ROWS_NAMED]), len(rows)))
        return out


def is_hxl_row(row: pd.Series) -> bool:
    cells = [v for v in row if not _blank(v)]
    return bool(cells) and all(normalise.is_hxl(v) for v in cells)


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA \
        or (isinstance(value, str) and not value.strip())


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
        if _arrow_strings(values):  # hashed in Arrow: no Python object per row
            codes, uniques = _distinct(as_arrow(values))
            return cls(codes, uniques.to_pylist())
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

    def numbers(self, per_unique: list[float | None]) -> pd.Series:
        """One float per row from one per distinct value (None and empty cells: NaN)."""
        table = np.array([np.nan if v is None else v for v in per_unique] + [np.nan])
        return pd.Series(table[self.codes], dtype="float64")

    def strings(self, per_unique: list[str | None]) -> pd.Series:
        """One string per row from one per distinct value (None and empty cells: missing),
        built in Arrow: no Python object per row."""
        table = pa.array([*per_unique, None], type=pa.string())
        return pd.Series(table.take(np.where(self.codes < 0, len(per_unique), self.codes)),
                         dtype="string[pyarrow]")

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
            _arrow_strings(values):
        return _strings(values, rule)
    cells = _Cells.of(values)
    tokens = {normalise.token(m) for m in rule.missing}
    missing = [_blank(u) or normalise.token(u) in tokens for u in cells.uniques]
    if rule.values:
        return _declared(cells, rule, missing)
    if rule.kind in ("count", "coordinate"):
        return _number(cells.numbers([None if m or isinstance(u, bool | np.bool_)
                                      else _to_float(u)
                                      for u, m in zip(cells.uniques, missing, strict=True)]),
                       rule, cells.mask(missing, empty=True),
                       cells.mask([isinstance(u, str) and not m
                                   and contacts.leading_zero(normalise.token(u))
                                   for u, m in zip(cells.uniques, missing, strict=True)]))
    if rule.kind == "date":
        return _date(cells, rule, missing)
    text = [None if m else normalise.token(u) if isinstance(u, bool | np.bool_) else
            str(int(u)) if isinstance(u, float) and u.is_integer() else " ".join(str(u).split())
            for u, m in zip(cells.uniques, missing, strict=True)]
    return _strings(cells.strings(text), rule)


def _to_float(value) -> float | None:
    try:
        return float(normalise.token(value))
    except (TypeError, ValueError):
        return None


def _declared(cells: _Cells, rule: IndicatorRule, missing: list[bool]):
    canonical = [None if m else rule.canonical.get(normalise.token(u))
                 for u, m in zip(cells.uniques, missing, strict=True)]
    stray = cells.mask([c is None and not m for c, m in zip(canonical, missing, strict=True)])
    return cells.strings(canonical), [(f"not one of the {len(rule.values)} declared values "
                                       "(after case, spaces and synonyms)", stray)] \
        if stray.any() else []


def _number(numbers: pd.Series, rule: IndicatorRule, missing: np.ndarray,
            zero_led: np.ndarray | None = None):
    """Numbers within their bounds, whole for a count.

    One with a phone number's shape (a leading 0 as the export wrote it, or 9+ digits) is
    named as such whatever the bounds: a raised bound must not let a phone number through."""
    x = numbers.to_numpy(dtype="float64", na_value=np.nan, copy=True)
    x[missing] = np.nan
    shaped = contacts.phone_shaped(x) | (False if zero_led is None else zero_led)
    problems = [("has a phone number's shape (a leading 0, or 9 or more digits)", shaped)] \
        if shaped.any() else []
    x[shaped] = np.nan
    unreadable = np.isnan(x) & ~missing & ~shaped
    low, high = rule.limits
    if rule.kind == "count":
        # Whole, and exact as a float: beyond 2**53 a "count" is junk (and no int64 holds it).
        with np.errstate(invalid="ignore"):
            fractional = (np.trunc(x) != x) | (np.abs(x) > 2**53)
        fractional &= ~np.isnan(x)
        if (unreadable | fractional).any():
            problems.append(("not a whole number", unreadable | fractional))
        x[fractional] = np.nan
    elif unreadable.any():
        problems.append(("not a number", unreadable))
    with np.errstate(invalid="ignore"):
        outside = ~np.isnan(x) & ((x < low) | (x > high))
    if outside.any():
        problems.append((f"outside the bounds [{_fmt(low)}, {_fmt(high)}]", outside))
    x[outside] = np.nan
    valid = ~np.isnan(x)
    kind = pa.int64() if rule.kind == "count" else pa.float64()
    out = pa.array(np.where(valid, x, 0).astype(kind.to_pandas_dtype()), type=kind,
                   mask=~valid)
    return pd.Series(out, dtype=pd.ArrowDtype(kind)), problems


def _fmt(x: float) -> str:
    return "no limit" if x == np.inf else (str(int(x)) if float(x).is_integer() else str(x))


def _date(cells: _Cells, rule: IndicatorRule, missing: list[bool]):
    def parse(v) -> str | None:  # (isoformat: strftime writes the year 1 as "1")
        if isinstance(v, datetime | date | pd.Timestamp):
            return pd.Timestamp(v).date().isoformat()
        text = " ".join(unicodedata.normalize("NFKC", str(v)).split())
        if rule.date_format:  # the export's own format; ISO too (a conformed round's form)
            try:
                return datetime.strptime(text, rule.date_format).date().isoformat()
            except ValueError:
                pass
        try:
            parsed = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
            return (parsed.date() if isinstance(parsed, datetime) else parsed).isoformat()
        except ValueError:
            return None

    iso = [None if m else parse(u) for u, m in zip(cells.uniques, missing, strict=True)]
    unreadable = cells.mask([d is None and not m for d, m in zip(iso, missing, strict=True)])
    expected = rule.date_format or "YYYY-MM-DD"
    return cells.strings(iso), [(f"not a date ({expected})", unreadable)] \
        if unreadable.any() else []


def _strings(out: pd.Series, rule: IndicatorRule):
    """Text kinds: NFKC, spaces tidied, the contract's missing tokens emptied; key, admin and
    round values match their pattern, or else carry no phone number or e-mail address. In
    pyarrow compute, so a million-site round is not a million Python calls; a column that
    repeats its values (admin names, round ids) is worked on once per distinct value."""
    cells = as_arrow(out)
    codes = None
    if repeats(cells):
        codes, cells = _distinct(cells)
    cells = pc.utf8_trim_whitespace(_collapse_spaces(pc.utf8_normalize(cells, "NFKC")))
    blank = pc.equal(cells, "")
    if rule.missing:
        tokens = pa.array([normalise.token(m) for m in rule.missing])
        blank = pc.or_(blank, pc.is_in(pc.utf8_lower(cells), value_set=tokens))
    cells = pc.if_else(pc.fill_null(blank, True), None, cells)
    bad, problem = None, ""
    if rule.kind in ("key", "admin", "round"):
        cells = _plain(cells)
        # A round column is an id whatever its rule says: free text there shipped as it was.
        pattern = rule.pattern or (ROUND_ID_PATTERN if rule.kind == "round" else None)
        if pattern is not None:
            matched = pd.Series(cells, dtype="string[pyarrow]").str.fullmatch(pattern)
            bad = ~matched.fillna(True).to_numpy(dtype=bool)
            problem = "does not match the declared pattern"
        else:  # nothing declares its shape: at least no phone number or e-mail address
            bad = contacts.found(cells, normalised=True)
            problem = "holds what looks like a phone number or e-mail address"
    if codes is not None:  # back to one cell per row
        bad = None if bad is None else np.append(bad, False)[codes]
        cells = cells.take(pa.array(codes, mask=codes < 0))
    problems = [(problem, bad)] if bad is not None and bad.any() else []
    return pd.Series(cells, dtype="string[pyarrow]"), problems


_DIGIT = re.compile(r"\d")


def _plain(cells: pa.Array) -> pa.Array:
    """Identifiers as people read them: digits in ASCII, invisible format characters (zero-width
    spaces, direction marks) dropped. NFKC keeps both: ``BFA-S٠٠٠٠١`` passed the pattern
    ``BFA-S\\d{5}`` (Python's ``\\d`` matches any script's digits) and, like ``NGA-S00001`` with a
    zero-width space, was another key than the same site's. Only non-ASCII cells go through
    Python."""
    other = pc.invert(pc.fill_null(pc.string_is_ascii(cells), True))
    if not pc.any(other).as_py():
        return cells
    folded = [None if v is None else _DIGIT.sub(
        lambda m: str(unicodedata.digit(m[0])),
        "".join(c for c in v if unicodedata.category(c) != "Cf"))
        for v in pc.filter(cells, other).to_pylist()]
    return pc.replace_with_mask(cells, other, pa.array(folded, cells.type))


def _arrow_strings(values: pd.Series) -> bool:
    return isinstance(values.dtype, pd.StringDtype | pd.ArrowDtype) and \
        pd.api.types.is_string_dtype(values.dtype) and values.dtype != object


def _distinct(cells: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Row codes into the distinct values (-1: null) and those values, hashed in Arrow."""
    encoded = pc.dictionary_encode(cells)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    return codes.astype(np.int64, copy=False), encoded.dictionary


def _collapse_spaces(cells: pa.Array) -> pa.Array:
    """Every run of whitespace as one space; only the cells that need it are rewritten."""
    odd = pc.fill_null(pc.match_substring_regex(cells, r"\s{2,}|[^\S ]"), False)
    if not pc.any(odd).as_py():
        return cells
    fixed = pc.replace_substring_regex(pc.filter(cells, odd), r"\s+", " ")
    return pc.replace_with_mask(cells, odd, fixed)


