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

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .. import normalise
from ..classification import Classification
from ..classify.sensitivity import classify_round
from ..errors import PermanentError
from ..intake import headers as named
from ..policy import RuleSet
from .cells import blank, conform_column

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
    """``conform`` a part at a time: a round read in parts (``reading.read_round_parts``) is
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
            done = pool.map(lambda item: conform_column(
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
    cells = [v for v in row if not blank(v)]
    return bool(cells) and all(normalise.is_hxl(v) for v in cells)
