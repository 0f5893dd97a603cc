"""The recipient's auditor: everything one organisation received from a round, attacked.

The auditor holds every table the organisation received (all its agreements, levels and field
focal points), knows which site is in which area (DTM site lists are public) and that the data
add up (totals are sums of their parts, each site has one answer per question). It writes every
visible cell as a linear equation over per-site unknowns and solves a linear programme for each
cell the policy protects: a small count, a zero or all-sites count of a relational rule's member,
an area under ``min_sites``. It must never pin one down, and never learn, for any site, every
member of a relational combination the organisation may not hold.

It is written independently of ``dissemination.disclosure.linked`` (LP bounds, not rank
tests) so that one checks the other. ``HYPOTHESIS_PROFILE=deep`` runs many more examples
(see docs/testing.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from test_disclosure_properties import COUNTS, rounds, rulesets

from dissemination.classification import Classification, Urgency
from dissemination.classify.sensitivity import (
    active_relational,
    classify_round,
    select_for_agreement,
)
from dissemination.disclosure import (
    SITES,
    SUPPRESSED,
    build_contents,
    explain,
    shared_decisions,
)
from dissemination.intake.contract import conform
from dissemination.ledger.holdings import Held, Holdings
from dissemination.policy import SITE, Agreement, RuleSet

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"


@dataclass
class Auditor:
    """Linear knowledge about one round: unknowns x[site, quantity] >= 0."""

    truth: pd.DataFrame  # the conformed round (never read for what it learns, only for checks)
    ruleset: RuleSet
    quantities: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # (coefficients dict, value)
    baseline: list = field(default_factory=list)  # the fixed part of ``rows``

    def __post_init__(self):
        self.n = len(self.truth)
        kinds = {c: self.ruleset.indicators[c].kind for c in self.truth.columns
                 if c in self.ruleset.indicators}
        self.counts = [c for c, k in kinds.items() if k == "count"]
        self.categorical = [c for c, k in kinds.items() if k in ("categorical", "flag")]
        self.quantities = list(self.counts) + [
            (c, v) for c in self.categorical for v in self.ruleset.indicators[c].values]
        self.index = {(s, q): s * len(self.quantities) + i
                      for s in range(self.n) for i, q in enumerate(self.quantities)}
        for s in range(self.n):  # what every recipient knows about the data's shape
            for c in self.categorical:
                if not pd.isna(self.truth[c].iloc[s]):
                    self.equal({(s, (c, v)): 1 for v in self.ruleset.indicators[c].values}, 1)
            for group in self.ruleset.additive:
                if all(c in self.counts for c in (group.total, *group.parts)):
                    self.equal({(s, group.total): 1, **{(s, p): -1 for p in group.parts}}, 0)

    def equal(self, coefficients: dict, value: float, fixed: bool = True) -> None:
        """``fixed``: knowledge no suppression can take away (the data's shape, answers shown
        per site, exact counts): what the organisation may compute from it is not a leak."""
        self.rows.append((coefficients, float(value)))
        if fixed:
            self.baseline.append((coefficients, float(value)))

    def read(self, frame: pd.DataFrame, level: str, positions: np.ndarray,
             exact: tuple = (), held: bool = False) -> list:
        """Learn every visible cell of a received table; return its hidden count cells as
        (coefficients, true value, column, sites in the cell). ``held``: received before the
        run judged here, so what it shows is known whatever this run does."""
        hidden = []
        if level == SITE:
            groups = [[p] for p in positions]
        else:
            keys = [c for c in self.ruleset.level_columns(level) if c in frame.columns]
            sub = self.truth.iloc[positions]
            by_area = sub.groupby(keys, dropna=False, sort=True).indices if keys else {
                "all": np.arange(len(sub))} if len(sub) else {}
            groups = [list(positions[by_area[k]]) for k in by_area]
        for i, sites in enumerate(groups):
            for column in frame.columns:
                q = self._quantity(column, level)
                if q is None:
                    continue
                cell = frame[column].iloc[i]
                if isinstance(q, str) and q in self.counts or isinstance(q, tuple):
                    coefficients = {(s, q): 1 for s in sites}
                    truth = sum(self._true(s, q) for s in sites)
                elif q == "site-value":  # a categorical answer shown per site
                    if not pd.isna(cell):
                        for v in self.ruleset.indicators[column].values:
                            self.equal({(sites[0], (column, v)): 1}, float(cell == v),
                                       fixed=True)
                    continue
                else:
                    continue  # sites: known to the auditor from the public site list
                if pd.isna(cell):
                    if not pd.isna(truth):
                        hidden.append((coefficients, truth, column, sites))
                else:
                    self.equal(coefficients, cell,
                               fixed=held or level == SITE and column in exact)
        return hidden

    def _quantity(self, column: str, level: str):
        if column in self.counts:
            return column
        source, _, value = column.partition("=")
        if value and source in self.categorical:
            return (source, value)
        if column in self.categorical and level == SITE:
            return "site-value"
        return None

    def _true(self, s: int, q) -> float:
        if isinstance(q, tuple):
            value = self.truth[q[0]].iloc[s]
            return 0.0 if pd.isna(value) else float(value == q[1])
        value = self.truth[q].iloc[s]
        return float("nan") if pd.isna(value) else float(value)

    def bounds(self, coefficients: dict, floor: frozenset = frozenset(),
               integer: bool = False) -> tuple[float, float]:
        """The least and greatest value of a combination given what is known. ``floor``:
        cells known to be at least 1; ``integer``: counts are whole (an integer programme)."""
        size = len(self.index)
        if getattr(self, "_built", None) != len(self.rows):
            a = np.zeros((len(self.rows), size))
            b = np.zeros(len(self.rows))
            for r, (coefs, value) in enumerate(self.rows):
                for key, c in coefs.items():
                    a[r, self.index[key]] += c
                b[r] = value
            self._a, self._b, self._built = a, b, len(self.rows)
        a, b = self._a, self._b
        objective = np.zeros(size)
        for key, c in coefficients.items():
            objective[self.index[key]] += c
        upper = [1 if isinstance(self.quantities[i % len(self.quantities)], tuple) else None
                 for i in range(size)]
        lower = np.zeros(size)
        for key in floor:
            lower[self.index[key]] = 1
        if integer:
            return self._integer_bounds(objective, lower, upper)
        out = []
        for sign in (1, -1):  # the minimum, then the maximum
            result = linprog(sign * objective, A_eq=a if len(b) else None,
                             b_eq=b if len(b) else None,
                             bounds=list(zip(lower, upper, strict=True)), method="highs")
            if result.status == 3:  # unbounded
                out.append(-sign * float("inf"))
            else:
                assert result.status == 0, result.message
                out.append(sign * result.fun)
        return out[0], out[1]

    def _integer_bounds(self, objective, lower, upper) -> tuple[float, float]:
        high = np.array([np.inf if u is None else u for u in upper], dtype=float)
        constraints = [LinearConstraint(self._a, self._b, self._b)] if len(self._b) else []
        out = []
        for sign in (1, -1):
            result = milp(sign * objective, constraints=constraints,
                          integrality=np.ones(len(objective)), bounds=Bounds(lower, high))
            if result.status in (3, 4):  # unbounded (HiGHS may not tell it from infeasible)
                relaxed = linprog(sign * objective, A_eq=self._a if len(self._b) else None,
                                  b_eq=self._b if len(self._b) else None,
                                  bounds=list(zip(lower, upper, strict=True)), method="highs")
                assert relaxed.status == 3, relaxed.message  # the truth is a solution
                out.append(-sign * float("inf"))
            else:
                assert result.status == 0, result.message
                out.append(sign * result.fun)
        return out[0], out[1]

    def computable(self, coefficients: dict) -> bool:
        """Given exactly by linear algebra over what is known (no bounds): the coefficients
        lie in the row space of the known equations."""
        self.bounds({})  # builds the matrix of ``rows``
        objective = np.zeros(len(self.index))
        for key, c in coefficients.items():
            objective[self.index[key]] += c
        if not len(self._b):
            return not objective.any()
        weights = np.linalg.lstsq(self._a.T, objective, rcond=None)[0]
        return bool(np.abs(self._a.T @ weights - objective).max() < 1e-6)

    def pinned(self, coefficients: dict) -> bool:
        low, high = self.bounds(coefficients)
        return high - low < 0.5

    def leaks(self, coefficients: dict) -> bool:
        """Pinned by what was received, though not by fixed knowledge alone."""
        return self.pinned(coefficients) and not self.fixed().pinned(coefficients)

    def fixed(self) -> Auditor:
        """The same auditor knowing only what no suppression can take away."""
        alone = Auditor.__new__(Auditor)
        alone.__dict__.update(self.__dict__)
        alone.rows, alone._built = list(self.baseline), None
        return alone


def _protected(truth, value, column, sites, level, ruleset, exact) -> bool:
    """Does the policy protect this cell? Decided from the truth, not from the package. (A
    zero is not sensitive, since a zero total tells it, unless a relational member's.)"""
    return column not in exact and _primary(value, column, sites, level, ruleset) and (
        value != 0 or _member(column, ruleset))


def attack(truth, ruleset, received, ceiling, same=(), unseen=(), held=(),
           relational: bool = True) -> list[str]:
    """Everything the auditor recovers that the policy withholds (empty: nothing).

    Several versions of a round (partial, cleaned) are rows of one ``truth``: ``same`` pairs
    the rows of one site in two versions, where the auditor may equate every value that did
    not change. ``held``: tables an earlier run delivered (what they show is known before the
    run judged here; their blanks are protected alike). ``unseen``: tables the organisation
    does not hold, whose cells are protected alike (a delivered table's cells as they are in
    another version)."""
    auditor = _knowing(truth, ruleset, same)
    hidden = _hidden_cells(auditor, received, unseen, held)
    found = []
    for coefficients, value, column, sites, selection in hidden:
        if _protected(truth, value, column, sites, selection.level, ruleset,
                      set(selection.exact_counts)) and auditor.leaks(coefficients):
            found.append(f"{column} at {selection.level} over {len(sites)} site(s) = {value}")
    tables = [*held, *received]
    found += _counts_above_ceiling(auditor, truth, ruleset, ceiling, tables)
    if relational:  # (``relational=False``: several holders, each judged on its holdings)
        found += _relational_above_ceiling(auditor, truth, ruleset, ceiling, tables)
    return found


def _knowing(truth, ruleset, same=()) -> Auditor:
    """An auditor who may equate every value of a site that did not change between the rows
    ``same`` pairs (its versions, its rounds)."""
    auditor = Auditor(truth, ruleset)
    for then, now in same:
        for q in auditor.quantities:
            if auditor._true(then, q) == auditor._true(now, q):
                auditor.equal({(then, q): 1, (now, q): -1}, 0)
    return auditor


def _hidden_cells(auditor, received, unseen, held) -> list:
    """Every blank the auditor reads, with the selection of its table (``attack``)."""
    hidden = []
    for frame, selection, positions in held:
        hidden += [(*cell, selection) for cell in auditor.read(
            frame, selection.level, positions, selection.exact_counts, held=True)]
    for frame, selection, positions in received:
        for cell in auditor.read(frame, selection.level, positions, selection.exact_counts):
            hidden.append((*cell, selection))
    for columns, selection, positions in unseen:
        blank = pd.DataFrame(None, index=range(len(positions)), columns=list(columns),
                             dtype=object)
        hidden += [(*cell, selection) for cell in auditor.read(blank, selection.level, positions)]
    return hidden


def _counts_above_ceiling(auditor, truth, ruleset, ceiling, tables) -> list[str]:
    """A count the agreement may not have, at any site or area. (Not a 0: a part of a total
    of 0 is 0, and that is the total's own information, which the policy shares.)"""
    found = []
    for column in auditor.counts:
        if ruleset.indicators[column].classification <= ceiling:
            continue
        for level in {SITE} | {selection.level for _, selection, _ in tables}:
            keys = list(ruleset.level_columns(level)) if level != SITE else np.arange(len(truth))
            if level != SITE and not set(keys) <= set(truth.columns):
                continue
            for sites in truth.reset_index(drop=True).groupby(keys).indices.values():
                values = truth[column].iloc[sites]
                if not values.isna().any() and values.sum() > 0 and auditor.leaks(
                        {(s, column): 1 for s in sites}):
                    found.append(f"{column} ({ruleset.indicators[column].classification.value})"
                                 f" at {level} over {len(sites)} site(s)")
                    break
    return found


def _relational_above_ceiling(auditor, truth, ruleset, ceiling, tables) -> list[str]:
    """A site where every member of an active relational rule above the ceiling is known."""
    found = []
    active = active_relational(truth, ruleset)
    per_site = {c for frame, selection, _ in tables if selection.level == SITE
                for c in frame.columns}
    for rule in ruleset.relational:
        together = ruleset.relational_at(rule, SITE)
        if rule.name not in active or together <= ceiling:
            continue
        for s in range(len(truth)):
            if all(_known(auditor, truth, s, m, per_site) for m in rule.indicators):
                found.append(f"{rule.name} ({together.value}) for site {s}")
                break
    return found


def _known(auditor, truth, s, member, per_site) -> bool:
    if member in auditor.counts:
        return not pd.isna(truth[member].iloc[s]) and auditor.pinned({(s, member): 1})
    if member in auditor.categorical:  # (a question with one possible answer tells nothing)
        value = truth[member].iloc[s]
        return not pd.isna(value) and auditor.bounds({(s, (member, value)): 1})[0] > 0.5 \
            and len(auditor.ruleset.indicators[member].values) > 1
    return member in per_site


def narrowed(truth, ruleset, received, same=(), unseen=(), held=()) -> list[str]:
    """Small counts whose whole-number interval, given every table received and that a hidden
    site count is not 0, stops short of the protection level (the threshold) on a side where
    what anyone knows beforehand does not stop it already (issue #32, finding 3)."""
    auditor = _knowing(truth, ruleset, same)
    hidden = _hidden_cells(auditor, received, unseen, held)
    floor = frozenset(next(iter(coefficients)) for coefficients, value, column, _, selection
                      in hidden if selection.level == SITE and value > 0
                      and column in auditor.counts)
    level, before = ruleset.small_cells.threshold, auditor.fixed()
    found = []
    for coefficients, value, column, _, selection in hidden:
        if not 1 <= value <= level or column in selection.exact_counts:
            continue  # a small count (areas of few sites are judged by exact recovery)
        low, high = auditor.bounds(coefficients, floor, integer=True)
        low0, high0 = before.bounds(coefficients, floor, integer=True)
        if high < min(value + level, high0) - 1e-6 or low > max(value - level, low0) + 1e-6:
            found.append(f"{column} at {selection.level} = {value} within [{low}, {high}]")
    return found


def hidden_in_vain(truth, ruleset, received) -> list[str]:
    """Blanks no rule hid for themselves that the organisation can compute exactly from what
    it received: they protect nothing (issue #32, finding 4)."""
    auditor = Auditor(truth, ruleset)
    found = []
    for coefficients, value, column, sites, selection in _hidden_cells(auditor, received, (),
                                                                       ()):
        if not _primary(value, column, sites, selection.level, ruleset) and \
                auditor.computable(coefficients):
            found.append(f"{column} at {selection.level} over {len(sites)} site(s)")
    return found


def _primary(value, column, sites, level, ruleset) -> bool:
    """Hidden for itself by a rule (small, a small area, a relational member's 0 or all)."""
    if 1 <= value <= ruleset.small_cells.threshold:
        return True
    if level == SITE:
        return False
    member, source = _member(column, ruleset), column.partition("=")[0]
    return len(sites) < ruleset.small_cells.min_sites or \
        member and (value == 0 or (column != source and value == len(sites)))


def _member(column, ruleset) -> bool:
    """A member of a relational rule that is not Public per site."""
    source = column.partition("=")[0]
    return any(source in rule.indicators and ruleset.relational_at(rule, SITE)
               is not Classification.PUBLIC for rule in ruleset.relational)


# --- the organisation's packages -----------------------------------------------------------------

def _agreement(agreement_id, tier, ceiling) -> Agreement:
    return Agreement.model_validate({
        "id": agreement_id, "organisation": "org", "focal_points": "fp", "purpose": "p",
        "valid_from": date(2026, 1, 1), "valid_until": date(2027, 12, 31), "countries": ["TST"],
        "max_classification": ceiling, "tiers": {"low": tier},
        "destination": {"sftp_conn_id": "c", "remote_dir": "in"},
        "password": {"variable": "v", "rotate_every_days": 30},
    })


@st.composite
def holdings_of_one_organisation(draw, ceiling=None, exact_counts=True):
    """One to three agreements of one organisation, at site or area level, some limited to a
    field focal point's areas; all for the same round."""
    ceiling = ceiling or draw(st.sampled_from(["public", "confidential"]))
    tiers = []
    for _ in range(draw(st.integers(1, 3))):
        level = draw(st.sampled_from([None, "admin1", "admin2"]))
        indicators = draw(st.lists(st.sampled_from([*COUNTS, "safety", "military", "need"]),
                                   min_size=1, unique=True))
        keys = ["site_id", "admin1_pcode", "admin2_pcode"] if level is None else \
            ["admin1_pcode"] + (["admin2_pcode"] if level == "admin2" else [])
        counts = [c for c in indicators if c in COUNTS]
        exact = draw(st.lists(st.sampled_from(counts), unique=True)) \
            if counts and ceiling == "confidential" and level is None and exact_counts else []
        field_area = draw(st.sampled_from([None, "A", "B"]))
        tiers.append(({"indicators": keys + indicators, "aggregate_to": level,
                       "exact_counts": exact}, field_area))
    return ceiling, tiers


def parts_of(ruleset, truth, ceiling, tiers, held: Holdings) -> list:
    """Each tier's selection (seeing what ``held`` says the organisation holds, then adding
    to it) and the rows it covers."""
    base = classify_round(truth.columns, ruleset)
    active = active_relational(truth, ruleset)
    parts = []
    for i, (tier, field_area) in enumerate(tiers):
        agreement = _agreement(f"a{i}", tier, ceiling)
        selection = select_for_agreement(base, ruleset, agreement, Urgency.LOW, active=active,
                                         held=held)
        held.add(Held(d.column, selection.level, "R1", "planned", agreement.id, False)
                 for d in selection.shared)
        rows = None if field_area is None or "admin1_pcode" not in truth else \
            (truth["admin1_pcode"] == field_area).to_numpy()
        parts.append((selection, rows))
    return parts


def _received(ruleset, truth, ceiling, tiers):
    parts = parts_of(ruleset, truth, ceiling, tiers, Holdings("org", "Org", "TST"))
    contents = build_contents(truth, parts, ruleset)
    return [(content.frame, selection,
             np.arange(len(truth)) if rows is None else np.flatnonzero(rows))
            for content, (selection, rows) in zip(contents, parts, strict=True)]


@st.composite
def conformed_rounds(draw):
    """A random rule set, and a round that keeps its contract as the pull leaves it."""
    ruleset = draw(rulesets())
    raw = draw(rounds(ruleset))
    truth = conform(raw, ruleset, first_row=1).raise_if_broken("a round that keeps its contract")
    return ruleset, truth.frame.reset_index(drop=True)


def examples(n: int):
    """Hypothesis settings for the auditor's properties (``DEEP``: many more examples)."""
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@examples(1500 if DEEP else 60)
@given(st.data())
def test_the_auditor_recovers_nothing_the_policy_withholds(data):
    ruleset, truth = data.draw(conformed_rounds())
    ceiling, tiers = data.draw(holdings_of_one_organisation())
    received = _received(ruleset, truth, ceiling, tiers)
    assert attack(truth, ruleset, received, Classification(ceiling)) == []
    assert hidden_in_vain(truth, ruleset, received) == []
    assert narrowed(truth, ruleset, received) == []


@st.composite
def coalitions(draw):
    """Two or three organisations under one ceiling that pool what they receive: none with
    exact counts (a partner granted a count exactly may pass it on; see docs/disclosure.md)."""
    ceiling = draw(st.sampled_from(["public", "confidential"]))
    members = draw(st.integers(2, 3))
    return ceiling, [draw(holdings_of_one_organisation(ceiling, exact_counts=False))[1]
                     for _ in range(members)]


def _pooled(ruleset, truth, ceiling, members) -> list:
    """Every table the coalition's members receive, each member's built as a run builds it:
    with the round's shared decisions (``shared_decisions``)."""
    holders = [parts_of(ruleset, truth, ceiling, tiers, Holdings(f"org{i}", f"Org {i}", "TST"))
               for i, tiers in enumerate(members)]
    shared = shared_decisions(truth, [(parts, ()) for parts in holders], ruleset)
    received = []
    for parts in holders:
        contents = build_contents(truth, parts, ruleset, (), shared)
        received += [(content.frame, selection,
                      np.arange(len(truth)) if rows is None else np.flatnonzero(rows))
                     for content, (selection, rows) in zip(contents, parts, strict=True)]
    return received


@examples(1500 if DEEP else 40)
@given(st.data())
def test_a_coalition_pooling_its_packages_recovers_nothing_the_policy_withholds(data):
    """Issue #32, finding 5: cluster members share what they receive. Each small cell the
    policy withholds stays unknown to two or three organisations that pool every table."""
    ruleset, truth = data.draw(conformed_rounds())
    ceiling, members = data.draw(coalitions())
    received = _pooled(ruleset, truth, ceiling, members)
    assert attack(truth, ruleset, received, Classification(ceiling), relational=False) == []


# --- the scenarios an auditor found, one by one --------------------------------------------------

def _fixed_ruleset(**small_cells) -> RuleSet:
    indicators = {
        "round_id": {"classification": "public", "category": "public", "kind": "round"},
        "site_id": {"classification": "public", "category": "public", "kind": "key"},
        "admin1_pcode": {"classification": "public", "category": "public", "kind": "admin"},
        "admin2_pcode": {"classification": "public", "category": "public", "kind": "admin"},
        "collected_on": {"classification": "public", "category": "public", "kind": "date"},
        "children": {"classification": "confidential", "category": "public", "kind": "count"},
        "military": {"classification": "public", "category": "public", "kind": "flag",
                     "values": ["yes", "no"]},
    }
    return RuleSet.model_validate({
        "country": "TST", "version": "1", "indicators": indicators,
        "relational": [{"name": "children_x_military", "indicators": ["children", "military"],
                        "reason": "recruiters", "escalate_to": "secret", "safe_at": "admin1"}],
        "admin_levels": {"admin1": ["admin1_pcode"], "admin2": ["admin2_pcode"]},
        "small_cells": small_cells, "site_key": "site_id", "collection_date": "collected_on",
        "risk_assessment": {"date": "2026-01-01", "review_every_days": 90},
    })


def _round(military, children, areas=None):
    n = len(military)
    return pd.DataFrame({
        "round_id": "TST-R001-partial", "site_id": [f"S{i}" for i in range(n)],
        "admin1_pcode": areas or ["UN"] * n, "admin2_pcode": [f"UN{i % 2}" for i in range(n)],
        "collected_on": "2026-11-03", "children": children, "military": military})


def _packages(ruleset, truth, *tiers):
    ceiling = "confidential"
    return _received(ruleset, truth, ceiling, [(t, None) for t in tiers])


def test_a_homogeneous_area_does_not_tell_every_site_s_value():
    """Upper Nile: every site has the military. 'no: 0, yes: 55' per state would tell each
    site's value; joined with children per site it is children x military, Secret."""
    ruleset = _fixed_ruleset()
    truth = _round(["yes"] * 8 + ["no"] * 5, [5] * 13, ["UN"] * 8 + ["JG"] * 5)
    received = _packages(
        ruleset, truth,
        {"indicators": ["round_id", "site_id", "admin1_pcode", "children"]},
        {"indicators": ["round_id", "admin1_pcode", "military"], "aggregate_to": "admin1"})
    area = received[1][0]
    assert area["military=yes"].isna().all() and area["military=no"].isna().all()
    assert area[SITES].tolist() == [5, 8]
    assert attack(truth, ruleset, received, Classification.CONFIDENTIAL) == []


def test_an_area_with_fewer_than_k_sites_shows_nothing_but_its_name_and_sites():
    """Its number of sites stays: site lists are public (issue #32, finding 4)."""
    ruleset = _fixed_ruleset(min_sites=4)
    truth = _round(["yes", "no", "no", "yes", "no"], [9, 7, 8, 6, 5],
                   ["ONE", "BIG", "BIG", "BIG", "BIG"])
    (frame, _, _), = _packages(ruleset, truth, {
        "indicators": ["round_id", "admin1_pcode", "children"], "aggregate_to": "admin1"})
    one = frame.set_index("admin1_pcode").loc["ONE"]
    assert pd.isna(one["children"]) and one[SITES] == 1


def test_site_and_area_tables_of_one_organisation_cannot_be_differenced():
    """Per site, one count is small and hidden; per area, the sum. Area minus the visible
    sites would give the hidden one back: the joint suppression hides one more."""
    ruleset = _fixed_ruleset()
    truth = _round(["no"] * 6, [2, 9, 8, 7, 6, 5])
    received = _packages(
        ruleset, truth,
        {"indicators": ["round_id", "site_id", "admin1_pcode", "children"]},
        {"indicators": ["round_id", "admin1_pcode", "children"], "aggregate_to": "admin1"})
    site, area = received[0][0], received[1][0]
    assert pd.isna(site["children"].iloc[0])
    assert site["children"].isna().sum() + area["children"].isna().sum() >= 2
    assert attack(truth, ruleset, received, Classification.CONFIDENTIAL) == []


def test_the_same_tables_protected_one_at_a_time_leak():
    """The regression itself: without the joint suppression, the auditor pins the cell."""
    ruleset = _fixed_ruleset()
    truth = _round(["no"] * 6, [2, 9, 8, 7, 6, 5])
    tiers = [{"indicators": ["round_id", "site_id", "admin1_pcode", "children"]},
             {"indicators": ["round_id", "admin1_pcode", "children"], "aggregate_to": "admin1"}]
    alone = [_packages(ruleset, truth, t)[0] for t in tiers]
    assert attack(truth, ruleset, alone, Classification.CONFIDENTIAL) == [
        "children at site over 1 site(s) = 2.0"]


def test_min_sites_can_only_be_raised():
    from dissemination.policy import merge_rules
    from dissemination.policy.rules import CountryRules, DefaultRules

    default = DefaultRules.model_validate({
        "scope": "default", "version": "1", "small_cells": {"min_sites": 5}})
    country = CountryRules.model_validate({
        "country": "TST", "version": "1", "small_cells": {"min_sites": 3},
        "risk_assessment": {"date": "2026-01-01", "review_every_days": 90}})
    _, problems = merge_rules(default, country)
    assert any("min_sites: 3 is below the default 5" in p for p in problems)
    with pytest.raises(ValueError, match="greater than or equal to 3"):
        RuleSet.model_validate({**_fixed_ruleset().model_dump(), "small_cells": {"min_sites": 2}})


def test_a_one_site_area_next_to_its_site_row_is_protected_through_the_site_s_other_cells():
    """Found by the deep profile: one site, per site (total, female, male: all 0) and per
    area (the total, hidden: the area has one site). Hiding the site's total alone leaves it
    computable from female + male; the protection reaches them too."""
    ruleset = RuleSet.model_validate({
        **_fixed_ruleset().model_dump(),
        "indicators": {**_fixed_ruleset().model_dump()["indicators"],
                       **{c: {"classification": "public", "category": "public", "kind": "count"}
                          for c in ("idp_individuals", "idp_female", "idp_male")}},
        "additive": [{"total": "idp_individuals", "parts": ["idp_female", "idp_male"]}]})
    truth = _round(["no"], [5]).assign(idp_individuals=0, idp_female=0, idp_male=0)
    received = _packages(
        ruleset, truth,
        {"indicators": ["round_id", "site_id", "admin1_pcode", "idp_individuals", "idp_female",
                        "idp_male"]},
        {"indicators": ["round_id", "admin1_pcode", "idp_individuals"], "aggregate_to": "admin1"})
    assert attack(truth, ruleset, received, Classification.CONFIDENTIAL) == []


def test_a_visible_zero_above_does_not_give_away_an_area_below():
    """Found by the deep profile: per state "military=no: 0" says that no site of the state
    answered no, so two-site districts' hidden "yes" are their numbers of sites, although no
    linear combination gives them (the zero does, because counts are never negative).
    No relational rule here: zeros are visible."""
    ruleset = RuleSet.model_validate({**_fixed_ruleset().model_dump(), "relational": []})
    truth = _round(["yes"] * 8 + ["no"] * 3, [5] * 11, ["A"] * 8 + ["C"] * 3).assign(
        admin2_pcode=["A1"] * 2 + ["A2"] * 2 + ["A3"] * 4 + ["C1"] * 3)
    received = _packages(
        ruleset, truth,
        {"indicators": ["round_id", "admin1_pcode", "military"], "aggregate_to": "admin1"},
        {"indicators": ["round_id", "admin1_pcode", "admin2_pcode", "military"],
         "aggregate_to": "admin2"})
    assert attack(truth, ruleset, received, Classification.CONFIDENTIAL) == []


def test_a_quantity_one_table_does_not_show_is_implied_by_its_additive_group():
    """Found by the deep profile: per site the total and the women, per district the men.
    A one-site district's hidden men = that site's total minus its women."""
    indicators = {**_fixed_ruleset().model_dump()["indicators"],
                  **{c: {"classification": "public", "category": "public", "kind": "count"}
                     for c in ("idp_individuals", "idp_female", "idp_male")}}
    ruleset = RuleSet.model_validate({
        **_fixed_ruleset().model_dump(), "indicators": indicators, "relational": [],
        "additive": [{"total": "idp_individuals", "parts": ["idp_female", "idp_male"]}]})
    truth = _round(["no"] * 5, [5] * 5).assign(
        admin2_pcode=["B1"] + ["B2"] * 4, idp_female=[4, 4, 5, 6, 7], idp_male=[5, 5, 5, 5, 5])
    truth["idp_individuals"] = truth["idp_female"] + truth["idp_male"]
    received = _packages(
        ruleset, truth,
        {"indicators": ["round_id", "site_id", "admin1_pcode", "admin2_pcode", "idp_individuals",
                        "idp_female"]},
        {"indicators": ["round_id", "admin1_pcode", "admin2_pcode", "idp_male"],
         "aggregate_to": "admin2"})
    assert pd.isna(received[1][0].set_index("admin2_pcode").loc["B1", "idp_male"])
    assert attack(truth, ruleset, received, Classification.CONFIDENTIAL) == []


def test_two_zeros_of_a_relational_member_are_not_pinned_by_their_zero_sum():
    """Found by the deep profile: "none: 0" and "unknown: 0" hidden, the rest visible: no
    linear combination gives either, but their sum is 0 and counts are never negative."""
    base = _fixed_ruleset().model_dump()
    ruleset = RuleSet.model_validate({
        **base,
        "indicators": {**base["indicators"], "safety": {
            "classification": "public", "category": "public", "kind": "categorical",
            "values": ["all", "some", "none", "unknown"]}},
        "relational": [{"name": "safety_x_children", "indicators": ["safety", "children"],
                        "reason": "x", "escalate_to": "confidential", "safe_at": "admin1"}]})
    truth = _round(["no"] * 10, [5] * 10).assign(safety=["all"] * 6 + ["some"] * 4)
    (frame, _, _), = received = _packages(ruleset, truth, {
        "indicators": ["round_id", "admin1_pcode", "safety"], "aggregate_to": "admin1"})
    assert frame[["safety=none", "safety=unknown"]].isna().all(axis=None)
    assert attack(truth, ruleset, received, Classification.CONFIDENTIAL) == []


def test_a_withheld_total_does_not_come_back_as_the_sum_of_its_parts():
    """Found by the deep profile: children x individuals is Confidential per site, above a
    Public ceiling, so individuals (listed last) is withheld; women and men per site would
    give it back."""
    base = _fixed_ruleset().model_dump()
    counts = {c: {"classification": "public", "category": "public", "kind": "count"}
              for c in ("idp_individuals", "idp_female", "idp_male")}
    ruleset = RuleSet.model_validate({
        **base, "indicators": {**base["indicators"], **counts,
                               "children": {**base["indicators"]["children"],
                                            "classification": "public"}},
        "additive": [{"total": "idp_individuals", "parts": ["idp_female", "idp_male"]}],
        "relational": [{"name": "children_x_people", "indicators": ["children", "idp_individuals"],
                        "reason": "x", "levels": {"site": "confidential"}}]})
    truth = _round(["no"] * 4, [5] * 4).assign(idp_female=[4, 5, 6, 7], idp_male=[8, 8, 8, 8])
    truth["idp_individuals"] = truth["idp_female"] + truth["idp_male"]
    received = _received(ruleset, truth, "public", [({"indicators": [
        "round_id", "site_id", "admin1_pcode", "idp_individuals", "idp_female", "idp_male",
        "children"]}, None)])
    (frame, selection, _), = received
    assert "idp_individuals" not in frame and "idp_male" not in frame
    reasons = {d.column: d.reason for d in selection.decisions}
    assert reasons["idp_male"].startswith("would give back idp_individuals")
    assert attack(truth, ruleset, received, Classification.PUBLIC) == []


def test_the_explanation_never_says_which_reason_hid_which_cell(policy):
    """The auditor also reads the manifest. Per-reason counts ("1 cell: 0 or every site") in a
    row whose hidden cells add up to a known rest told the relational zeros, then the last
    hidden cell as the rest: every hidden cell of the row recovered."""
    ruleset = policy.rulesets["NGA"]
    truth = pd.DataFrame({
        "round_id": "NGA-R001-cleaned", "site_id": [f"S{i}" for i in range(12)],
        "admin1_pcode": "NG008", "admin1_name": "Borno",
        "feeling_of_safety": ["most_feel_safe"] * 6 + ["some_feel_safe"] * 6,
        "armed_actors_military": ["yes"] * 6 + ["no"] * 6})
    selection = select_for_agreement(
        classify_round(truth.columns, ruleset), ruleset,
        policy.agreements["protection-cluster-nga"], Urgency.LOW,
        active=active_relational(truth, ruleset))
    (content,) = build_contents(truth, [(selection, None)], ruleset)
    row = content.frame.iloc[0]
    hidden = [c for c in content.frame.columns if c.startswith("feeling_of_safety=")
              and pd.isna(row[c])]
    assert len(hidden) >= 2  # the relational zeros, and a cell that would give them away
    notes = [n for e in explain(selection, content) for n in e["notes"] if "suppressed" in n]
    assert notes and all(
        n == f"{n.split(':')[0]}: suppressed {content.suppressed[n.split(':')[0]]} cell(s) "
             f"({SUPPRESSED})" for n in notes), notes


KEYS = ["round_id", "site_id", "admin1_pcode"]


def _people(**classification) -> RuleSet:
    """The fixed rule set with people counted by sex (an additive group), all Public unless
    ``classification`` says otherwise, children Public and children x people Confidential."""
    base = _fixed_ruleset().model_dump()
    counts = {c: {"classification": classification.get(c, "public"), "category": "public",
                  "kind": "count"} for c in ("idp_individuals", "idp_female", "idp_male")}
    return RuleSet.model_validate({
        **base, "indicators": {**base["indicators"], **counts,
                               "children": {**base["indicators"]["children"],
                                            "classification": "public"}},
        "additive": [{"total": "idp_individuals", "parts": ["idp_female", "idp_male"]}],
        "relational": [{"name": "children_x_people", "indicators": ["children", "idp_individuals"],
                        "reason": "x", "levels": {"site": "confidential"}}]})


def _people_round() -> pd.DataFrame:
    truth = _round(["no"] * 4, [5, 6, 7, 8]).assign(idp_female=[40, 50, 60, 70],
                                                    idp_male=[80, 80, 80, 80])
    truth["idp_individuals"] = truth["idp_female"] + truth["idp_male"]
    return truth


@pytest.mark.parametrize("female", ["secret", "confidential", "not in the round"])
def test_a_part_the_agreement_may_not_have_does_not_come_back_from_its_total(female):
    """Only a relationally withheld part was checked against its additive group: a Secret
    women's count (or a Confidential one, under a Public agreement) came back per site as
    people - men. A round without the column still holds its values."""
    ruleset = _people(idp_female="confidential" if female == "not in the round" else female)
    truth = _people_round()
    if female == "not in the round":
        truth = truth.drop(columns="idp_female")
    received = _received(ruleset, truth, "public", [(
        {"indicators": KEYS + ["idp_individuals", "idp_female", "idp_male"]}, None)])
    (frame, selection, _), = received
    assert "idp_female" not in frame and "idp_individuals" not in frame
    reasons = {d.column: d.reason for d in selection.decisions}
    assert reasons["idp_individuals"].startswith("withheld with idp_female")
    assert attack(truth, ruleset, received, Classification.PUBLIC) == []


@pytest.mark.parametrize("tiers", [
    [KEYS + ["children", "idp_female", "idp_male"]],  # the parts instead of the total
    [KEYS + ["idp_female", "idp_male"], KEYS + ["children"]],  # across two agreements
], ids=["one package", "two agreements"])
def test_a_relational_member_given_back_by_its_additive_group_completes_the_rule(tiers):
    """children x people, Confidential per site: women and men per site are people per site."""
    ruleset, truth = _people(), _people_round()
    received = _received(ruleset, truth, "public", [({"indicators": t}, None) for t in tiers])
    assert attack(truth, ruleset, received, Classification.PUBLIC) == []
    shown = set().union(*(frame.columns for frame, _, _ in received))
    assert not {"children", "idp_female", "idp_male"} <= shown


def test_a_withheld_part_does_not_come_back_from_what_another_agreement_gave():
    """children x women withholds women from the second agreement; people and men, given by
    the first, would give them back next to children per site."""
    base = _people().model_dump()
    ruleset = RuleSet.model_validate({**base, "relational": [
        {"name": "children_x_women", "indicators": ["children", "idp_female"], "reason": "x",
         "levels": {"site": "confidential"}}]})
    truth = _people_round()
    received = _received(ruleset, truth, "public", [
        ({"indicators": KEYS + ["idp_individuals", "idp_male"]}, None),
        ({"indicators": KEYS + ["children", "idp_female"]}, None)])
    assert "idp_female" not in received[1][0] and "children" not in received[1][0]
    assert attack(truth, ruleset, received, Classification.PUBLIC) == []


def test_a_sum_two_tables_tell_apart_does_not_give_back_the_third_site():
    """Per site, two small counts of area B and one of area A are hidden. B's total (a field
    focal point's table) and the round's total are visible: their difference is A's total,
    minus A's visible sites: the hidden one. Neither of B's hidden sites is known, only their
    sum; that is enough (the rank test once asked for each)."""
    ruleset = _fixed_ruleset()
    truth = _round(["no"] * 8, [9, 8, 2, 7, 1, 3, 6, 5], ["A"] * 4 + ["B"] * 4)
    whole = {"indicators": ["round_id", "children"], "aggregate_to": "admin1"}
    received = _received(ruleset, truth, "confidential", [
        ({"indicators": ["round_id", "site_id", "admin1_pcode", "children"]}, None),
        (whole, "B"), (whole, None)])
    assert [len(frame) for frame, _, _ in received] == [8, 1, 1]
    assert attack(truth, ruleset, received, Classification.CONFIDENTIAL) == []
