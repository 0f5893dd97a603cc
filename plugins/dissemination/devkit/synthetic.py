"""A seeded, deterministic site assessment round derived from a country's round contract.

Every column comes from the rule set, so a country added under ``include/rules/`` gets a demo
round without code: its indicators, kinds, declared values, bounds and date formats; its gazetteer
(``admin_levels`` with declared ``values``, or generated areas where it declares none); its
additive groups (totals are the sum of their parts) and urgent signals (a few sites cross the
threshold). ``enumerator_id`` is deliberately covered by no rule: it must be treated as Secret.
``to_export`` writes the same round as the country's export does (its headers, its HXL row).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from .. import normalise
from ..classification import DisseminationCategory
from ..intake.source import RoundMeta
from ..policy import IndicatorRule, RuleSet
from .patterns import examples

#: The column no rule covers, in every round (unless a rule set happens to cover it).
UNCOVERED = "enumerator_id"
_AREAS_PER_PARENT = 3  # areas generated under each coarser area when a level declares none
_DIGIT_RUN = re.compile(r"\d{7}")  # a phone number to the contract: never in a name
_GIVEN = ["Amina", "Musa", "Fatima", "Ibrahim", "Hauwa", "John", "Mary", "Peter", "Grace", "Deng"]
_FAMILY = ["Bello", "Abubakar", "Okafor", "Garba", "Lual", "Wani", "Nyok", "Adamu", "Mohammed"]
_COMMENTS = [
    "Access road flooded since last week.",
    "New arrivals from the border area reported by the camp chairman.",
    "Water point broken, women walk 2 hours.",
    "Call the chairman on {phone} for follow-up.",
    "",
    "Site management committee active.",
]


def generate_round(
    ruleset: RuleSet,
    round_number: int = 1,
    n_sites: int = 300,
    *,
    seed: int = 7,
    status: str = "partial",
    collected_at: datetime | None = None,
    collection_days: int = 3,
) -> tuple[RoundMeta, pd.DataFrame]:
    """Return the round's metadata and its site table. Same arguments, same bytes.

    One column per indicator, in the rule set's order, each valid under its contract, then
    ``enumerator_id``. Sites are assessed over ``collection_days`` days from ``collected_at``
    (the start of the collection, from which urgent windows run).
    """
    collected_at = collected_at or datetime(2026, 11, 1, 8, 0, tzinfo=UTC) + timedelta(
        days=30 * (round_number - 1)
    )
    round_id = f"{ruleset.country}-R{round_number:03d}-{status}"
    rng = np.random.default_rng([seed, round_number, n_sites])
    draw = _Draw(ruleset, rng, n_sites, round_id, collected_at, collection_days)
    columns = {name: draw.column(name, rule) for name, rule in ruleset.indicators.items()}
    columns.setdefault(UNCOVERED, np.array([f"E{k:03d}" for k in rng.integers(1, 40, n_sites)],
                                           dtype=object))
    return RoundMeta(round_id, ruleset.country, status, collected_at), pd.DataFrame(columns)


def to_export(df: pd.DataFrame, ruleset: RuleSet) -> pd.DataFrame:
    """The round as the country's export writes it: each column under its indicator's first
    declared header, and an HXL row first when the contract declares hashtags. All text."""
    rules = ruleset.indicators
    out = df.astype("string").fillna("").astype(object)
    if any(rule.hxl for rule in rules.values()):
        tags = [(rules[c].hxl or "") if c in rules else "" for c in df.columns]
        out = pd.concat([pd.DataFrame([tags], columns=df.columns), out], ignore_index=True)
    return out.rename(columns={c: rules[c].headers[0] for c in df.columns
                               if c in rules and rules[c].headers})


def write_export(df: pd.DataFrame, ruleset: RuleSet, path: Path | str) -> Path:
    """Write ``to_export`` as XLSX for a ``.xlsx`` path, as CSV otherwise."""
    path = Path(path)
    export = to_export(df, ruleset)
    if path.suffix.lower() == ".xlsx":
        export.to_excel(path, index=False, engine="openpyxl")
    else:
        export.to_csv(path, index=False)
    return path


# --- geography -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Area:
    columns: dict[str, str]  # the admin columns of its level and of every coarser one
    code: str  # the codes of the areas inside it start with it
    label: str  # what its sites are named after


def _geography(ruleset: RuleSet) -> list[_Area]:
    """The finest areas. A level's first column with declared values gives its areas (the other
    columns pair with it by position); a level that declares none gets a few areas per parent."""
    areas = [_Area({}, "", ruleset.country)]
    for level, columns in ruleset.admin_levels.items():
        declared = [ruleset.indicators[c].values for c in columns if ruleset.indicators[c].values]
        codes = declared[0] if declared else ()
        count = len(codes) or _AREAS_PER_PARENT * len(areas)
        values = {c: _area_values(c, ruleset.indicators[c], level, count) for c in columns}
        children = []
        for k in range(count):
            own = {c: values[c][k] for c in columns}
            label = own[columns[-1]] if columns else f"{level} {k + 1}"
            if _DIGIT_RUN.search(label):
                label = f"{level} {k + 1}"
            parent = _parent(codes[k], areas, k) if codes else areas[k // _AREAS_PER_PARENT]
            children.append(_Area({**parent.columns, **own}, codes[k] if codes else label, label))
        areas = children
    return areas


def _area_values(name: str, rule: IndicatorRule, level: str, count: int) -> list[str]:
    """A level's areas in one column: its declared values, else numbered (``district 4``), else,
    when its pattern refuses those, drawn from the pattern (the same areas every round)."""
    if rule.values:
        return [rule.values[k % len(rule.values)] for k in range(count)]
    numbered = [f"{level} {k + 1}" for k in range(count)]
    if rule.pattern is None or all(re.fullmatch(rule.pattern, v) for v in numbered):
        return numbered
    return examples(rule.pattern, count, seed=name)


def _parent(code: str, parents: list[_Area], k: int) -> _Area:
    """The coarser area whose code this code starts with (the longest), else round-robin."""
    inside = [p for p in parents if p.code and code.startswith(p.code)]
    return max(inside, key=lambda p: len(p.code)) if inside else parents[k % len(parents)]


def _matching(name: str, rule: IndicatorRule, candidates: Iterable[np.ndarray],
              n: int) -> np.ndarray:
    """The first generated column that fits the indicator's declared pattern, else values drawn
    from the pattern (a key's all different, the same for a site in every round)."""
    for values in candidates:
        if rule.pattern is None or all(re.fullmatch(rule.pattern, v) for v in set(values)):
            return values
    if rule.kind == "round":  # the round's id is the round's, not drawn
        raise ValueError(f"cannot synthesise {name}: synthetic round ids (COUNTRY-RNNN-status) "
                         f"do not match its pattern {rule.pattern!r}")
    return np.array(examples(rule.pattern, n, seed=name, distinct=rule.kind == "key"),
                    dtype=object)


# --- one round -----------------------------------------------------------------------------------


class _Draw:
    """The columns of one round, each drawn by the kind its contract gives it."""

    def __init__(self, ruleset: RuleSet, rng: np.random.Generator, n: int, round_id: str,
                 collected_at: datetime, collection_days: int):
        self.ruleset, self.rng, self.n, self.round_id = ruleset, rng, n, round_id
        self.collected_at, self.collection_days = collected_at, collection_days
        self.areas = _geography(ruleset)
        self.pick = rng.integers(0, len(self.areas), n)  # each site's finest area, uniformly

    def column(self, name: str, rule: IndicatorRule) -> np.ndarray:
        kinds = {"round": self.round, "key": self.key, "admin": self.admin, "date": self.date,
                 "coordinate": self.coordinate, "count": self.count,
                 "categorical": self.categorical, "flag": self.categorical, "text": self.text,
                 "personal": self.personal}
        return kinds[rule.kind](name, rule)

    def _text(self, values: Iterable[str]) -> np.ndarray:
        return np.fromiter(values, dtype=object, count=self.n)

    def round(self, name: str, rule: IndicatorRule) -> np.ndarray:
        return _matching(name, rule, [np.full(self.n, self.round_id, dtype=object)], self.n)

    def key(self, name: str, rule: IndicatorRule) -> np.ndarray:
        """Unique: ``NGA-S00001`` for the site key, initials for others (``NGA-HI00001``)."""
        prefix = "S" if name == self.ruleset.site_key else "".join(
            w[0] for w in name.split("_") if w).upper()
        shapes = (f"{self.ruleset.country}-{prefix}{{:05d}}", f"{prefix}{{:05d}}", "{}")
        return _matching(name, rule, (self._text(s.format(i) for i in range(1, self.n + 1))
                                      for s in shapes), self.n)

    @cached_property
    def _levelled(self) -> dict[str, np.ndarray]:
        """Every admin column of a level: a site's columns all come from its one area."""
        return {c: np.array([a.columns[c] for a in self.areas], dtype=object)[self.pick]
                for columns in self.ruleset.admin_levels.values() for c in columns}

    @cached_property
    def _site_names(self) -> np.ndarray:
        """Sites named after their area and numbered within it (``Maiduguri site 12``)."""
        labels = np.array([a.label for a in self.areas], dtype=object)[self.pick]
        within = pd.Series(self.pick).groupby(self.pick).cumcount().to_numpy() + 1
        return self._text(f"{label} site {j}" for label, j in zip(labels, within, strict=True))

    def admin(self, name: str, rule: IndicatorRule) -> np.ndarray:
        """Levelled columns from the geography; any other one names the site (or draws from
        its declared values)."""
        if name in self._levelled:
            return self._levelled[name] if rule.values else \
                _matching(name, rule, [self._levelled[name]], self.n)
        if rule.values:
            return self.categorical(name, rule)
        return _matching(name, rule, [self._site_names], self.n)

    def date(self, name: str, rule: IndicatorRule) -> np.ndarray:
        days = pd.to_timedelta(self.rng.integers(0, self.collection_days, self.n), "D")
        return (self.collected_at + days).strftime(rule.date_format or "%Y-%m-%d") \
            .to_numpy(dtype=object)

    def coordinate(self, name: str, rule: IndicatorRule) -> np.ndarray:
        """Sites near their area's centre, areas near the country's, all within the bounds."""
        low, high = rule.bounds
        width = high - low
        country = self.rng.uniform(low + width / 4, high - width / 4)
        areas = country + self.rng.uniform(-width / 60, width / 60, len(self.areas))
        sites = areas[self.pick] + self.rng.normal(0, width / 3600, self.n)
        return np.clip(np.round(sites, 5), low, high)

    def count(self, name: str, rule: IndicatorRule) -> np.ndarray:
        return self._counts[name]

    @cached_property
    def _counts(self) -> dict[str, np.ndarray]:
        """Every count, by its role in the contract. Urgent signals with a threshold: mostly
        zero, a heavy tail that takes a few sites above it. Other counts on the urgent path:
        incidents, mostly zero. The rest are population counts: the first is the site's size
        (households, 1..2500), the others a multiple of it (people per household); one with an
        upper bound spreads over its bounds. An additive total is drawn by its role and split
        into its parts, so total = sum(parts)."""
        ruleset, rng, n = self.ruleset, self.rng, self.n
        names = [c for c, r in ruleset.indicators.items() if r.kind == "count"]
        parts = {g.total: g.parts for g in ruleset.additive}
        in_group = {p for g in ruleset.additive for p in g.parts}
        above: dict[str, int] = {}
        for s in ruleset.urgent_signals:
            if s.above is not None:
                above[s.indicator] = min(s.above, above.get(s.indicator, s.above))
        size = rng.integers(1, 2500, n)
        out: dict[str, np.ndarray] = {}
        population = 0
        for name in names:
            if name in in_group:
                continue  # drawn when its total is split
            rule = ruleset.indicators[name]
            if name in above:  # P(> threshold) = 0.2 among the non-zero sites
                tail = rng.geometric(1 - 0.2 ** (1 / above[name]), n)
                value = np.where(rng.random(n) < 0.55, 0, tail)
            elif rule.category is DisseminationCategory.URGENT:
                value = np.where(rng.random(n) < 0.5, 0, rng.geometric(0.2, n))
            elif rule.bounds is not None and rule.bounds[1] != np.inf:
                value = rng.integers(int(np.ceil(rule.bounds[0])), int(rule.bounds[1]) + 1, n)
            else:
                value = size if not population else size * rng.integers(1, 8, n)
                population += 1
            self._split(name, _bounded(value, rule), parts, out)
        for name in names:  # parts of a cycle of groups, which no root reaches
            out.setdefault(name, size)
        for name in names:
            out[name] = _bounded(out[name], ruleset.indicators[name])
        for _ in ruleset.additive:  # nested groups: one pass per level at most
            for g in ruleset.additive:
                out[g.total] = sum(out[p] for p in g.parts)
        return {name: out[name].astype(np.int64) for name in names}

    def _split(self, name: str, value: np.ndarray, parts: dict, out: dict) -> None:
        """Set ``name`` and share it out among its parts (and theirs), about evenly per site."""
        out[name] = value
        group = parts.get(name, ())
        if not group:
            return
        shares = self.rng.dirichlet(np.full(len(group), 8.0), self.n)
        remaining = value
        for j, part in enumerate(group):
            if j == len(group) - 1:
                share = remaining
            else:
                p = shares[:, j] / shares[:, j:].sum(axis=1)
                share = self.rng.binomial(remaining, p)
            remaining = remaining - share
            if part not in out:
                self._split(part, share, parts, out)

    @cached_property
    def _needed(self) -> dict[str, list[str]]:
        """Declared values a relational rule's ``when`` names, per indicator: they must occur."""
        out: dict[str, list[str]] = {}
        for rule in self.ruleset.relational:
            for column, values in rule.when.items():
                canonical = self.ruleset.indicators[column].canonical
                for v in values:
                    value = canonical[normalise.token(v)]
                    if value not in out.setdefault(column, []):
                        out[column].append(value)
        return out

    def categorical(self, name: str, rule: IndicatorRule) -> np.ndarray:
        drawn = np.array(rule.values, dtype=object)[self.rng.integers(0, len(rule.values),
                                                                       self.n)]
        needed = self._needed.get(name, [])
        if needed and len(needed) <= self.n:
            drawn[self.rng.choice(self.n, len(needed), replace=False)] = needed
        return drawn

    @cached_property
    def _phones(self) -> np.ndarray:
        digits = self.rng.integers(10_000_000, 100_000_000, self.n).astype(str)
        return self._text(f"+000 80{d[0]} {d[1:4]} {d[4:]}" for d in digits)

    def text(self, name: str, rule: IndicatorRule) -> np.ndarray:
        """Enumerators' comments; some give a key informant's phone number."""
        picks = self.rng.integers(0, len(_COMMENTS), self.n)
        return self._text(_COMMENTS[i].format(phone=phone)
                          for i, phone in zip(picks, self._phones, strict=True))

    def personal(self, name: str, rule: IndicatorRule) -> np.ndarray:
        if "phone" in name.lower():
            return self._phones
        given = np.array(_GIVEN, dtype=object)[self.rng.integers(0, len(_GIVEN), self.n)]
        family = np.array(_FAMILY, dtype=object)[self.rng.integers(0, len(_FAMILY), self.n)]
        return given + " " + family


def _bounded(value: np.ndarray, rule: IndicatorRule) -> np.ndarray:
    """Within the count's bounds (default: at least 0)."""
    low, high = rule.bounds or (0, np.inf)
    return np.clip(value, int(np.ceil(low)), None if high == np.inf else int(np.floor(high)))
