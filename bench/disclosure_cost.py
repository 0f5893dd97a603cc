"""What disclosure control costs: count cells hidden per table, against a lower bound.

Issue 32 asks what protection costs, not only how fast it runs. For a synthetic round of each
country with an agreement (conformed and classified as ``bench/engine.py`` does), each
organisation's tables (every tier of its agreement) are built as a run ships them: the round's
decisions shared by every holder (``shared_decisions``), then each organisation's tables jointly
(``build_contents``). Per table (agreement x tier x level), of its count cells (counts, sites
per value, ``sites``):

- **hidden**: blank in the table where the round has a value;
- **alone**: hidden by the same engine for this organisation alone (no other holder);
- **then**: hidden by the engine before issue 32 (commit 082bcdf, ``disclosure_then``) for this
  organisation alone, on the same round, in the same run;
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
at least this many cells. Solving it is NP-hard in general, so it runs on small rounds. It is
one organisation's: shared decisions may hide more, since holders who pool know more.

It also times protection as a run does it (``disclosure_timing``: shared decisions, then each
holder's tables) over a sweep of sizes up to ``--sites`` and ``--agreements``, and extrapolates
to the issue's 1M sites and 1,000 agreements, labelled as such.

    PYTHONPATH=plugins .venv/bin/python bench/disclosure_cost.py [--sites 100000]
        [--agreements 100] [--bound-sites 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from disclosure_rounds import countries, holders, prepared, tables_of  # noqa: E402
from disclosure_then import REFERENCE, NoReference, built_then  # noqa: E402
from disclosure_timing import Rounds, slowest_alone, sweep, timing_report  # noqa: E402
from policies import build_policy  # noqa: E402
from summary import Figure, record  # noqa: E402

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


def organisation_cost(df, ruleset, selections: Sequence, name: str, shared=None,
                      then: Sequence | None = None) -> tuple[list[dict], dict]:
    """One organisation's tables built jointly with the round's ``shared`` decisions (as
    shipped): per table its cells, hidden, primary, perturbed and bound; hidden by the same
    engine for the organisation alone, and by the reference engine (``then``: its tables, in
    order). For the whole: the secondary cells shipped hidden (each counted once), the bound."""
    from dissemination.disclosure.engine import Shared, build_contents

    parts = [(s, None) for s in selections]
    shared = shared or Shared()
    contents = build_contents(df, parts, ruleset, (), shared)
    alone = build_contents(df, parts, ruleset) if shared.hidden else contents
    tables = [measure(df, s, c, ruleset, f"{name} {s.urgency.value} {s.level}")
              for s, c in zip(selections, contents, strict=True)]
    state, targets = _cell_states(tables, df, ruleset)
    levels = [t.supports for t in tables
              if len(t.supports) and isinstance(t.supports[0], frozenset)]
    eqs = identities(state, ruleset, levels)
    known = known_closure(eqs, state, targets)
    rows = []
    for i, (s, t) in enumerate(zip(selections, tables, strict=True)):
        own = lower_bound(eqs, state, targets, [(c, x) for c in t.true for x in t.supports],
                          known)
        rows.append({"agreement": name, "urgency": s.urgency.value, "level": s.level,
                     **_counts(t, known), "bound_secondary": own.minimum,
                     "alone": _hidden(measure(df, s, alone[i], ruleset, t.name)),
                     "then": None if then is None else _hidden(
                         measure(df, s, then[i], ruleset, t.name))})
        rows[-1]["bound"] = rows[-1]["primary"] + own.minimum
    whole = lower_bound(eqs, state, targets, known=known)
    hidden = {(c, x) for t in tables for c in t.true
              for x in t.supports[t.hidden(c)]}
    return rows, {"agreement": name, "identities": len(eqs),
                  "secondary": sum(1 for key in hidden if state[key] == OPEN),
                  "bound": whole.minimum, "unprotectable": len(whole.unprotectable),
                  "computable": len(hidden & known)}


def _hidden(t: Measured) -> tuple[int, int]:
    """A table's count cells hidden, and its count cells with a value."""
    return (sum(int(t.hidden(c).sum()) for c in t.true),
            sum(int((~np.isnan(v)).sum()) for v in t.true.values()))


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


def cost(policy, sites: int, then: Callable | None = None) -> tuple[list[dict], list[dict]]:
    """Every organisation's tables of a ``sites``-site round of each country, as a run ships
    them: the round's decisions shared by every holder (``shared_decisions``), then each
    holder's tables. ``then``: given the rounds (country -> round), the reference engine's
    tables per agreement (``disclosure_then.built_then``), measured beside them."""
    from dissemination.disclosure.pooling import shared_decisions

    rounds = {country: prepared(policy.rulesets[country], sites) for country in countries(policy)}
    reference = then({c: r[0] for c, r in rounds.items()}) if then else {}
    rows, wholes = [], []
    for country, (df, base, active) in rounds.items():
        ruleset = policy.rulesets[country]
        tables = tables_of(policy, country, base, active)
        shared = shared_decisions(df, holders(tables), ruleset)
        for name, selections in tables.items():
            table_rows, whole = organisation_cost(df, ruleset, selections, name, shared,
                                                  reference.get(name))
            rows += table_rows
            wholes.append(whole)
    return rows, wholes


def _pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 2) if whole else 0.0


def _share(pair: tuple[int, int] | None) -> float | None:
    return None if pair is None else _pct(*pair)


def figures(rows: list[dict], bound_sites: int) -> dict[str, Figure]:
    """Six figures per table, each a share of its count cells."""
    out = {}
    for r in rows:
        key = f"disclosure_{r['agreement']}_{r['urgency']}_{r['level']}".replace("-", "_")
        where = f"{r['agreement']} {r['urgency']} tier at {r['level']}, {bound_sites}-site round"
        out[f"{key}_hidden_pct"] = Figure(_pct(r["hidden"], r["cells"]),
                                          f"% of count cells hidden, as shipped, {where}",
                                          "near the bound")
        out[f"{key}_alone_hidden_pct"] = Figure(
            _share(r["alone"]), f"% hidden by the same engine for this organisation alone, {where}")
        if r["then"] is not None:
            out[f"{key}_then_hidden_pct"] = Figure(
                _share(r["then"]), f"% hidden by the engine at {REFERENCE}, {where}")
        out[f"{key}_primary_pct"] = Figure(_pct(r["primary"], r["cells"]),
                                           f"% of count cells hidden as primaries, {where}")
        out[f"{key}_perturbed_pct"] = Figure(_pct(r["perturbed"], r["cells"]),
                                             f"% of count cells shown perturbed, {where}")
        out[f"{key}_bound_pct"] = Figure(
            _pct(r["bound"], r["cells"]),
            f"% any pattern must hide (primaries + ILP lower bound), {where}")
    return out


def report(rows: list[dict], wholes: list[dict], sites: int) -> None:
    print(f"{sites}-site rounds, % of count cells: hidden as shipped (decisions shared by every "
          f"holder), by the same engine for the organisation alone, by the engine at "
          f"{REFERENCE}; primaries, perturbed, the bound, hidden though the recipient computes it")
    columns = ("hidden", "alone", "then", "primary", "perturbed", "bound", "computable")
    print(f"  {'agreement':24s} {'tier':6s} {'level':6s} {'cells':>6s}  "
          + "  ".join(f"{c[:7]:>7s}" for c in columns))
    for r in rows:
        shares = [_pct(r[k], r["cells"]) if k not in ("alone", "then") else _share(r[k])
                  for k in columns]
        print(f"  {r['agreement']:24s} {r['urgency']:6s} {r['level']:6s} {r['cells']:6d}  "
              + "  ".join("      -" if v is None else f"{v:7.2f}" for v in shares)
              + (f"  ({r['primary_shown']} primary cells shown)" if r["primary_shown"] else ""))
    for w in wholes:
        print(f"  {w['agreement']:24s} jointly: {w['secondary']} secondary cells hidden, at "
              f"least {w['bound']} needed; {w['computable']} hidden cells computable anyway "
              f"({w['unprotectable']} primaries); {w['identities']} identities")


def main() -> None:
    from dissemination.policy import load_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100_000,
                        help="largest round of the timing sweep")
    parser.add_argument("--agreements", type=int, default=100,
                        help="most agreements of the timing sweep")
    parser.add_argument("--bound-sites", type=int, default=100,
                        help="round size for the shares and the lower bound (small: an ILP)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        include = build_policy(work / "3", 3)
        policy = load_policy(include)
        rows, wholes = cost(policy, args.bound_sites,
                            lambda rounds: built_then(include, rounds, work))
        report(rows, wholes, args.bound_sites)
        rounds = Rounds()
        over_sites, over_agreements = sweep(work / "many", args.sites, args.agreements, rounds)
        slowest = slowest_alone(policy, args.sites, rounds)
    record(**figures(rows, args.bound_sites),
           **timing_report(over_sites, over_agreements, slowest))


if __name__ == "__main__":
    try:
        main()
    except NoReference as missing:
        raise SystemExit(f"bench/disclosure_cost.py: {missing}") from None
