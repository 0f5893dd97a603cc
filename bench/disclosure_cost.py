"""What disclosure control costs: count cells hidden per table, against a lower bound.

Issue 32 asks what protection costs, not only how fast it runs. For a synthetic round of each
country with an agreement (conformed and classified as ``bench/engine.py`` does), each
organisation's tables (every tier of its agreement) are built jointly by ``build_contents``.
Per table (agreement x tier x level), of its count cells (counts, sites per value, ``sites``):

- **hidden**: blank in the table where the round has a value;
- **primary**: hidden by the primary rule (small counts, areas of too few sites, a relational
  member's 0 or every site), restated here from the policy, apart from the engine;
- **perturbed**: shown with a value other than the round's (0 until cell-key perturbation,
  ``disclosure/cellkey.py``, is wired in; measured, not assumed);
- **bound**: the primaries plus the fewest secondary cells any pattern must hide in this table.

The bound is an integer programme (``lower_bound``) over the linear identities the recipient
knows: each row's additive groups (``sites`` = sum of the sites per value; a total = its parts),
and each area cell = the sum of its sites, or of its sub-areas, across the organisation's tables.
A site's shown categorical answer is known, as are ``sites`` and exact counts. The condition is:
in every identity holding a hidden primary, some other cell is hidden too. Otherwise that primary
is the identity's known cells combined. It also holds for a hidden secondary in a minimal
pattern: a secondary the recipient can compute protects nothing, and showing it changes nothing.

It is a **lower bound**: necessary, not sufficient. A pattern meeting it may still give a primary
away through a combination of identities, through integer and non-negative values, or through
identities not listed (other rounds, versions). So any pattern that prevents exact recovery hides
at least this many cells. Solving it is NP-hard in general, so it runs on small rounds.

It also times joint protection (``build_contents`` for one organisation's tables) at ``--sites``
sites, and across ``--agreements`` agreements (the tests' policy grown by ``policies``), each
organisation with its own tables (the worst case: alike organisations share tables in a run).

    PYTHONPATH=plugins .venv/bin/python bench/disclosure_cost.py [--sites 20000]
        [--agreements 30] [--bound-sites 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from policies import build_policy  # noqa: E402
from summary import Figure, median_seconds, record  # noqa: E402

#: A cell's state to the recipient: known whatever is hidden (``sites``, exact counts, a site's
#: shown answer); hidden in every pattern (primaries, values missing from the round); or open,
#: the protection's choice.
KNOWN, HIDDEN, OPEN = 0, 1, 2
COUNTED = ("count", "categorical", "flag")  # kinds whose aggregated cells are counts


@dataclass(frozen=True)
class Bound:
    """The fewest open cells to hide, and the primaries no pattern can protect (known anyway)."""

    minimum: int
    unprotectable: frozenset


def known_closure(identities: Sequence[tuple], state: dict, targets: set) -> set:
    """The cells the recipient computes whatever is hidden: the known ones, then any open cell
    or primary that is the only unknown of an identity, until nothing changes. Hidden cells that
    are not primaries (missing values) are left unknown: fewer known cells, a weaker bound."""
    known = {key for key, s in state.items() if s == KNOWN}
    changed = True
    while changed:
        changed = False
        for eq in identities:
            unknown = [key for key in eq if key not in known]
            if len(unknown) == 1 and (state[unknown[0]] == OPEN or unknown[0] in targets):
                known.add(unknown[0])
                changed = True
    return known


def lower_bound(identities: Sequence[tuple], state: dict, targets: Iterable,
                counted: Iterable | None = None, known: set | None = None) -> Bound:
    """The fewest of ``counted`` open cells (default: every open cell) any pattern must hide so
    that no cell of ``targets`` (hidden primaries) is the only unknown of an identity, and no
    hidden open cell either (see the module's docstring: necessary, not sufficient).

    ``identities``: tuples of cells (any hashable) that add up (coefficients do not matter to
    the condition); ``state``: each cell's KNOWN, HIDDEN or OPEN. A primary that is known anyway
    (computable from known cells alone) is returned as unprotectable, not counted against.
    ``known``: ``known_closure``'s answer, when the caller has it already.
    """
    targets = set(targets)
    if known is None:
        known = known_closure(identities, state, targets)
    columns = [key for key, s in state.items() if s == OPEN and key not in known]
    index = {key: i for i, key in enumerate(columns)}
    rows, cols, coefs, floor = [], [], [], []
    for eq in identities:
        for cell in eq:
            if cell in known or (cell not in targets and cell not in index):
                continue
            others = [key for key in eq if key != cell and key not in known]
            if any(state[key] == HIDDEN for key in others):
                continue  # already has a hidden partner in every pattern
            row = len(floor)
            rows += [row] * len(others)
            cols += [index[key] for key in others]
            coefs += [1.0] * len(others)
            if cell in targets:
                floor.append(1.0)  # some other cell hidden
            else:  # hidden (x = 1) only with another hidden cell
                rows.append(row)
                cols.append(index[cell])
                coefs.append(-1.0)
                floor.append(0.0)
    unprotectable = frozenset(targets & known)
    if not floor:
        return Bound(0, unprotectable)
    cost = np.ones(len(columns)) if counted is None else np.zeros(len(columns))
    for key in () if counted is None else counted:
        if key in index:
            cost[index[key]] = 1.0
    matrix = sparse.csr_array((coefs, (rows, cols)), shape=(len(floor), len(columns)))
    result = milp(cost, constraints=LinearConstraint(matrix, floor, np.inf),
                  integrality=np.ones(len(columns)), bounds=Bounds(0, 1))
    if not result.success:
        raise RuntimeError(f"lower bound: {result.message}")
    return Bound(round(result.fun), unprotectable)


@dataclass
class Measured:
    """One table's count cells: the round's values, what the engine shipped, the primaries."""

    name: str
    supports: np.ndarray  # per row (objects): a site's position, or its area's (a frozenset)
    true: dict[str, np.ndarray]  # count column -> the round's value (NaN: missing)
    shown: dict[str, np.ndarray]  # count column -> the shipped value (NaN: blank)
    primary: dict[str, np.ndarray]
    target: dict[str, np.ndarray]  # primaries that must not be computable (not a plain 0)
    exact: frozenset
    per_site: tuple[str, ...] = ()  # categorical columns a site-level table shows

    def hidden(self, column: str) -> np.ndarray:
        return np.isnan(self.shown[column]) & ~np.isnan(self.true[column])


def _floats(series) -> np.ndarray:
    return series.to_numpy(dtype="float64", na_value=np.nan)


def _area_values(df, column: str, source: str, kind: str, areas: list) -> np.ndarray:
    """Each area's value of ``column``, from the round (the engine's aggregation, restated)."""
    from dissemination.disclosure.engine import SITES

    if column == SITES:
        return np.array([len(a) for a in areas], dtype="float64")
    if kind == "count":
        values = _floats(df[source])
        sums = [np.nansum(values[a]) if (~np.isnan(values[a])).any() else np.nan for a in areas]
        return np.array(sums, dtype="float64")
    answer = column.split("=", 1)[1]
    answers = df[source].astype(object).to_numpy()
    return np.array([(answers[a] == answer).sum() for a in areas], dtype="float64")


def _primaries(m: Measured, sources: dict, selection, ruleset, aggregated: bool) -> None:
    """The primary rule of decision records and README, restated from the policy: counts
    1..threshold; at aggregated levels, areas under ``min_sites`` sites, and a relational
    member's 0 or every site. Exact counts are never primary; ``sites`` is public."""
    from dissemination.classification import Classification
    from dissemination.disclosure.engine import SITES
    from dissemination.policy import SITE

    cells = ruleset.small_cells
    relational = {member for rule in ruleset.relational for member in rule.indicators
                  if ruleset.relational_at(rule, SITE) is not Classification.PUBLIC}
    sites = m.true.get(SITES)
    for c, v in m.true.items():
        free = c == SITES or c in selection.exact_counts
        primary = (v >= 1) & (v <= cells.threshold)
        telling = np.zeros(len(v), dtype=bool)
        if aggregated and sources[c] in relational:
            telling = (v == 0) | ((v == sites) if "=" in c else telling)
        if aggregated:
            primary |= sites < cells.min_sites
        m.primary[c] = (primary | telling) & ~free
        m.target[c] = m.primary[c] & ((v != 0) | telling)


def measure(df, selection, content, ruleset, name: str) -> Measured:
    """The count cells of one shipped table (built from every row of ``df``)."""
    from dissemination.disclosure.engine import SITES
    from dissemination.policy import SITE

    kinds = {o.name: ruleset.indicators[o.source].kind if o.source else "count"
             for o in content.columns}
    sources = {o.name: o.source or SITES for o in content.columns}
    aggregated = selection.level != SITE
    if aggregated:
        keys = [c for c, k in kinds.items() if c != SITES and k not in COUNTED]
        counts = [c for c in kinds if c not in keys]
        groups = df.groupby(keys, dropna=False, sort=True).indices
        groups = {k if isinstance(k, tuple) else (k,): v for k, v in groups.items()}
        supports = [frozenset(groups[tuple(r)].tolist())
                    for r in content.frame[keys].itertuples(index=False)]
        areas = [np.fromiter(a, dtype=np.int64) for a in supports]
        true = {c: _area_values(df, c, sources[c], kinds[c], areas) for c in counts}
        per_site = ()
    else:
        counts = [c for c, k in kinds.items() if k == "count"]
        supports = list(range(len(df)))
        true = {c: _floats(df[c]) for c in counts}
        per_site = tuple(c for c, k in kinds.items() if k in ("categorical", "flag"))
    shown = {c: _floats(content.frame[c].astype("float64")) for c in counts}
    rows = np.empty(len(supports), dtype=object)
    rows[:] = supports
    m = Measured(name, rows, true, shown, {}, {}, frozenset(selection.exact_counts),
                 per_site)
    _primaries(m, sources, selection, ruleset, aggregated)
    return m


def _cell_states(tables: Sequence[Measured], df, ruleset) -> tuple[dict, set]:
    """Each cell (quantity, support) of an organisation's tables as the recipient sees it; a cell
    shown in several tables is one cell (known if any shows it exactly)."""
    from dissemination.disclosure.engine import SITES

    state: dict = {}
    targets: set = set()
    for t in tables:
        for c, values in t.true.items():
            fixed = c == SITES or c in t.exact
            for i, support in enumerate(t.supports):
                key = (c, support)
                if np.isnan(values[i]):
                    s = HIDDEN  # missing from the round: unknown, never protected
                else:
                    s = KNOWN if fixed else HIDDEN if t.primary[c][i] else OPEN
                if t.target[c][i] and not fixed:
                    targets.add(key)
                state[key] = min(state.get(key, OPEN), s)
        for c in t.per_site:  # a site's answer, shown: each value's indicator is known
            missing = df[c].isna().to_numpy()
            for q in (f"{c}={v}" for v in ruleset.indicators[c].values):
                for site in t.supports:
                    s = HIDDEN if missing[site] else KNOWN
                    state[(q, site)] = min(state.get((q, site), OPEN), s)
    return state, targets


def identities(state: dict, ruleset, levels: Sequence[Sequence[frozenset]]) -> list[tuple]:
    """Every linear identity over the cells: row groups, then an area = its sites, or the areas
    of a finer level inside it (``levels``: each aggregated table's areas)."""
    from dissemination.disclosure.engine import SITES

    by_support: dict = defaultdict(set)
    for q, support in state:
        by_support[support].add(q)
    groups = [(g.total, *g.parts) for g in ruleset.additive]
    groups += [(SITES, *(f"{c}={v}" for v in rule.values)) for c, rule in
               ruleset.indicators.items() if rule.kind in ("categorical", "flag")]
    out = [tuple((m, support) for m in members) for support, qs in by_support.items()
           for members in groups if all(m in qs for m in members)]
    for area in (a for a in by_support if isinstance(a, frozenset)):
        parts = [inner for level in levels if (inner := [b for b in set(level) if b < area])
                 and frozenset().union(*inner) == area]
        for q in by_support[area] - {SITES}:
            if all((q, site) in state for site in area):
                out.append(((q, area), *((q, site) for site in sorted(area))))
            out += [((q, area), *((q, b) for b in part)) for part in parts
                    if all((q, b) in state for b in part)]
    return list(dict.fromkeys(out))  # two tables of one level tile alike


def organisation_cost(df, ruleset, selections: Sequence, name: str) -> tuple[list[dict], dict]:
    """One organisation's tables built jointly: per table its cells, hidden, primary, perturbed
    and bound; for the whole, the engine's secondary cells (each counted once) and the bound."""
    from dissemination.disclosure.engine import build_contents

    contents = build_contents(df, [(s, None) for s in selections], ruleset)
    tables = [measure(df, s, c, ruleset, f"{name} {s.urgency.value} {s.level}")
              for s, c in zip(selections, contents, strict=True)]
    state, targets = _cell_states(tables, df, ruleset)
    levels = [t.supports for t in tables
              if len(t.supports) and isinstance(t.supports[0], frozenset)]
    eqs = identities(state, ruleset, levels)
    known = known_closure(eqs, state, targets)
    rows = []
    for s, t in zip(selections, tables, strict=True):
        own = lower_bound(eqs, state, targets, [(c, x) for c in t.true for x in t.supports],
                          known)
        rows.append({"agreement": name, "urgency": s.urgency.value, "level": s.level,
                     **_counts(t, known), "bound_secondary": own.minimum})
        rows[-1]["bound"] = rows[-1]["primary"] + own.minimum
    whole = lower_bound(eqs, state, targets, known=known)
    hidden = {(c, x) for t in tables for c in t.true
              for x in t.supports[t.hidden(c)]}
    return rows, {"agreement": name, "identities": len(eqs),
                  "secondary": sum(1 for key in hidden if state[key] == OPEN),
                  "bound": whole.minimum, "unprotectable": len(whole.unprotectable),
                  "computable": len(hidden & known)}


def _counts(t: Measured, known: set) -> dict[str, int]:
    """A table's count cells with a value, and how many are hidden, hidden as primaries, shown
    perturbed, hidden though the recipient computes them from what it holds, and primaries
    shown (none, unless the engine and the rule as restated here part ways)."""
    out = dict.fromkeys(("cells", "hidden", "primary", "perturbed", "computable",
                         "primary_shown"), 0)
    for c, true in t.true.items():
        present, hidden, shown = ~np.isnan(true), t.hidden(c), t.shown[c]
        out["cells"] += int(present.sum())
        out["hidden"] += int(hidden.sum())
        out["primary"] += int((t.primary[c] & hidden).sum())
        out["primary_shown"] += int((t.primary[c] & present & ~hidden).sum())
        out["perturbed"] += int((present & ~np.isnan(shown) & (shown != true)).sum())
        out["computable"] += sum(1 for x in t.supports[hidden] if (c, x) in known)
    return out


def prepared(ruleset, sites: int):
    """A synthetic round of ``sites`` sites, conformed and classified once (as a pull does)."""
    from dissemination.classify.sensitivity import active_relational, classify_round
    from dissemination.devkit.synthetic import generate_round
    from dissemination.intake.contract import conform

    _, raw = generate_round(ruleset, 1, sites, seed=1)
    conformed = conform(raw, ruleset, first_row=1)
    assert not conformed.violations, conformed.violations[:3]
    df = conformed.frame
    return df, classify_round(df.columns, ruleset), active_relational(df, ruleset)


def tables_of(policy, country: str, base, active) -> dict[str, list]:
    """Each agreement of ``country``: the selections of its tiers, one organisation's tables."""
    from dissemination.classification import Urgency
    from dissemination.classify.sensitivity import select_for_agreement

    ruleset = policy.rulesets[country]
    return {a.id: [select_for_agreement(base, ruleset, a, u, active=active)
                   for u in Urgency if a.tiers.get(u) is not None]
            for a in sorted(policy.agreements.values(), key=lambda a: a.id)
            if country in a.countries}


def countries(policy) -> list[str]:
    return sorted({c for a in policy.agreements.values() for c in a.countries})


def cost(policy, sites: int) -> tuple[list[dict], list[dict]]:
    rows, wholes = [], []
    for country in countries(policy):
        ruleset = policy.rulesets[country]
        df, base, active = prepared(ruleset, sites)
        for name, selections in tables_of(policy, country, base, active).items():
            table_rows, whole = organisation_cost(df, ruleset, selections, name)
            rows += table_rows
            wholes.append(whole)
    return rows, wholes


def timing(policy, sites: int) -> tuple[float, float, str]:
    """Joint protection of every agreement's tables, each organisation its own, one after
    another (seconds); then the slowest organisation's again, median of three; and its name."""
    from dissemination.disclosure.engine import build_contents

    total, slowest = 0.0, (0.0, None)
    for country in countries(policy):
        ruleset = policy.rulesets[country]
        df, base, active = prepared(ruleset, sites)
        for name, selections in tables_of(policy, country, base, active).items():
            parts = [(s, None) for s in selections]
            start = time.perf_counter()
            build_contents(df, parts, ruleset)
            took = time.perf_counter() - start
            total += took
            if took > slowest[0]:
                slowest = (took, (df, parts, ruleset, name))
    df, parts, ruleset, name = slowest[1]
    return total, median_seconds(lambda: build_contents(df, parts, ruleset)), name


def _size(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 and not n % 1_000_000 else \
        f"{n // 1000}k" if n >= 1000 and not n % 1000 else str(n)


def _pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 2) if whole else 0.0


def figures(rows: list[dict], bound_sites: int) -> dict[str, Figure]:
    """Four figures per table, each a share of its count cells."""
    out = {}
    for r in rows:
        key = f"disclosure_{r['agreement']}_{r['urgency']}_{r['level']}".replace("-", "_")
        where = f"{r['agreement']} {r['urgency']} tier at {r['level']}, {bound_sites}-site round"
        out[f"{key}_hidden_pct"] = Figure(_pct(r["hidden"], r["cells"]),
                                          f"% of count cells hidden, {where}", "near the bound")
        out[f"{key}_primary_pct"] = Figure(_pct(r["primary"], r["cells"]),
                                           f"% of count cells hidden as primaries, {where}")
        out[f"{key}_perturbed_pct"] = Figure(_pct(r["perturbed"], r["cells"]),
                                             f"% of count cells shown perturbed, {where}")
        out[f"{key}_bound_pct"] = Figure(
            _pct(r["bound"], r["cells"]),
            f"% any pattern must hide (primaries + ILP lower bound), {where}")
    return out


def report(rows: list[dict], wholes: list[dict], sites: int) -> None:
    columns = ("hidden", "primary", "perturbed", "bound", "computable")
    print(f"{sites}-site rounds, % of count cells: {', '.join(columns)} (hidden though the "
          "recipient computes it)")
    print(f"  {'agreement':24s} {'tier':6s} {'level':6s} {'cells':>6s}  "
          + "  ".join(f"{c[:7]:>7s}" for c in columns))
    for r in rows:
        print(f"  {r['agreement']:24s} {r['urgency']:6s} {r['level']:6s} {r['cells']:6d}  "
              + "  ".join(f"{_pct(r[k], r['cells']):7.2f}" for k in columns)
              + (f"  ({r['primary_shown']} primary cells shown)" if r["primary_shown"] else ""))
    for w in wholes:
        print(f"  {w['agreement']:24s} jointly: {w['secondary']} secondary cells hidden, at "
              f"least {w['bound']} needed; {w['computable']} hidden cells computable anyway "
              f"({w['unprotectable']} primaries); {w['identities']} identities")


def main() -> None:
    from dissemination.policy import load_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=20_000, help="round size for the timing")
    parser.add_argument("--agreements", type=int, default=30)
    parser.add_argument("--bound-sites", type=int, default=100,
                        help="round size for the shares and the lower bound (small: an ILP)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policy = load_policy(build_policy(Path(tmp) / "3", 3))
        many = load_policy(build_policy(Path(tmp) / "many", args.agreements))
    rows, wholes = cost(policy, args.bound_sites)
    report(rows, wholes, args.bound_sites)
    total, joint, name = timing(many, args.sites)
    size = _size(args.sites)
    goal = "<= 600 s" if args.sites >= 1_000_000 or args.agreements >= 1000 else ""
    print(f"joint protection, {args.sites:,} sites: slowest organisation ({name}) "
          f"{joint:.2f} s; {len(many.agreements)} agreements one after another {total:.1f} s")
    record(**figures(rows, args.bound_sites), **{
        f"disclosure_joint_{size}_s": Figure(
            round(joint, 2), f"seconds, joint protection of the slowest organisation's tables, "
            f"{args.sites:,}-site round", "<= 600 s" if args.sites >= 1_000_000 else ""),
        f"disclosure_{len(many.agreements)}_agreements_{size}_s": Figure(
            round(total, 1), f"seconds, joint protection of {len(many.agreements):,} agreements' "
            f"tables, each organisation its own, {args.sites:,}-site rounds", goal)})


if __name__ == "__main__":
    main()
