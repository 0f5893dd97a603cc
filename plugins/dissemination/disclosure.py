"""Turn a selection into the table a partner receives: aggregate, redact, suppress small cells.

- **Aggregation** to an admin level: counts are summed per area, categorical and yes/no
  indicators become the number of sites per declared value (``feeling_of_safety=none_feel_safe``:
  column names come from the contract, never from the data), and a
  ``sites`` column counts the sites of each area.
- **Free-text redaction**: phone numbers (any separators), e-mail addresses (also spelled out,
  "name at ngo dot org") and ID-like tokens in allowed free-text columns become ``[redacted]``;
  the number of values touched is reported.
- **Primary suppression**, per table: counts 1..threshold (sdcTable's frequency rule); at an
  aggregated level, every count of an area with fewer than ``min_sites`` sites, and a count of 0
  or of every site for a relational rule's member (it tells each site's value).
- **Secondary suppression**, over every table one organisation receives from the round at once
  (``build_contents`` + ``linked``): more cells are hidden until no protected cell can be
  computed from any linear combination of the rows' identities (additive groups, values against
  ``sites``) and the columns' (an area = the sum of its sites or sub-areas in a finer table).
  ``sites`` itself stays visible: site lists are public.

Pure: a DataFrame and selections in, DataFrames and per-column notes out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import linked
from .classification import Classification
from .contract import PERSONAL
from .errors import PermanentError
from .policy import SITE, RuleSet
from .sensitivity import Selection

SITES = "sites"
_WHOLE = "__whole_round__"
REDACTED = "[redacted]"
RELATIONAL_ZERO = "0 or every site (relational member)"
#: Why cells are hidden, as the package says it: never which reason hid which cell.
SUPPRESSED = ("small counts, areas of too few sites, a relational member's 0 or every site, "
              "and cells that would give them away, jointly with every table the organisation "
              "receives; which is which is not said")


class UndeclaredValue(PermanentError, AssertionError):
    """A value outside its declared set reached a package: a bug (rounds are conformed first),
    never a policy outcome. Column names of aggregated packages come from declared values only."""


@dataclass(frozen=True)
class OutputColumn:
    name: str
    source: str  # the round's column it comes from ("" for the computed ``sites``)
    classification: Classification
    rule: str


@dataclass
class Content:
    """The partner's table, where each column comes from, and what was done to it."""

    frame: pd.DataFrame
    columns: list[OutputColumn]
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    suppressed: dict[str, int] = field(default_factory=dict)  # output column -> cells
    groups: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (total, parts)


def build_content(df: pd.DataFrame, selection: Selection, ruleset: RuleSet) -> Content:
    """One table, protected on its own (see ``build_contents``)."""
    return build_contents(df, [(selection, None)], ruleset)[0]


def build_contents(df: pd.DataFrame, parts: Sequence[tuple[Selection, np.ndarray | None]],
                   ruleset: RuleSet) -> list[Content]:
    """Every table one organisation receives from one round, suppressed jointly.

    ``parts``: each package's selection and the rows it covers (a boolean mask over ``df``,
    e.g. a field focal point's areas; None for every row). Primary suppression is per table;
    secondary suppression (``linked``) looks at all of them at once, so no hidden cell can be
    computed from any combination of the tables the organisation holds.
    """
    tables = []
    areas: dict[frozenset, frozenset] = {}
    for selection, rows in parts:
        positions = np.arange(len(df)) if rows is None else np.flatnonzero(rows)
        sub = df if rows is None else df.iloc[positions]
        shared = selection.shared
        kinds = {d.column: ruleset.indicators[d.column].kind for d in shared}
        if selection.level == SITE:
            content = Content(
                sub[[d.column for d in shared]].reset_index(drop=True),
                [OutputColumn(d.column, d.column, d.classification, d.rule) for d in shared],
            )
            content.groups = _additive_groups(ruleset, set(content.frame.columns))
            supports = positions  # per row: the site's position in the round
        else:
            content, groups = _aggregate(sub, selection, ruleset, kinds)
            # One object per distinct area: cells are keyed by it, and equal keys then compare
            # by identity instead of element by element.
            supports = [areas.setdefault(area, area)
                        for area in (frozenset(positions[members]) for members in groups)]
        for d in shared:
            if kinds[d.column] == "text" and d.column in content.frame:
                content.frame[d.column], n = redact(content.frame[d.column])
                content.notes[d.column].append(
                    f"redacted {n} value(s) with phones, e-mails or IDs")
        tables.append(_primary(content, selection, ruleset, kinds, supports))
    unprotectable = _protect_jointly(tables)
    for table in tables:
        _apply(table, ruleset, unprotectable)
    return [t.content for t in tables]


def redact(values: pd.Series) -> tuple[pd.Series, int]:
    text = values.astype("string")
    hit = text.str.contains(PERSONAL, regex=True).fillna(False)
    return text.str.replace(PERSONAL, REDACTED, regex=True), int(hit.sum())


def _additive_groups(ruleset: RuleSet, present: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    return [(g.total, g.parts) for g in ruleset.additive
            if g.total in present and all(p in present for p in g.parts)]


def _aggregate(df, selection: Selection, ruleset: RuleSet, kinds: dict[str, str]
               ) -> tuple[Content, list[np.ndarray]]:
    """The per-area table, and for each of its rows the positions (in ``df``) of its sites."""
    shared = selection.shared
    level_cols = set(ruleset.level_columns(selection.level))
    keys = [d for d in shared if kinds[d.column] == "round" or d.column in level_cols]
    key_names = [d.column for d in keys]
    if not key_names:  # no area column may be shared: one row for the whole round
        df = df.assign(**{_WHOLE: "all"})
    grouped = df.groupby(key_names or [_WHOLE], dropna=False, sort=True)
    number = grouped.ngroup().to_numpy()
    order = np.argsort(number, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(number[order])) + 1) if len(df) else []
    parts = [grouped.size().rename(SITES)]
    columns = [OutputColumn(d.column, d.column, d.classification, d.rule) for d in keys]
    columns.append(OutputColumn(SITES, "", Classification.PUBLIC,
                                f"aggregation to {selection.level}: number of sites"))
    content_notes: dict[str, list[str]] = defaultdict(list)
    groups = []
    for d in shared:
        kind = kinds[d.column]
        if d in keys:
            continue
        if kind == "count":
            parts.append(grouped[d.column].sum(min_count=1))
            columns.append(OutputColumn(d.column, d.column, d.classification, d.rule))
            content_notes[d.column].append(f"aggregated to {selection.level} (sum)")
        else:  # categorical, flag: number of sites per declared value, and only those
            declared = list(ruleset.indicators[d.column].values)
            counts = grouped[d.column].value_counts().unstack(fill_value=0)
            undeclared = set(counts.columns) - set(declared)
            if undeclared:
                raise UndeclaredValue(f"{d.column}: {len(undeclared)} value(s) outside the "
                                      "declared set reached aggregation (conform the round first)")
            counts = counts.reindex(columns=declared, fill_value=0)
            counts.columns = [f"{d.column}={v}" for v in declared]
            parts.append(counts)
            columns += [OutputColumn(c, d.column, d.classification, d.rule) for c in counts]
            groups.append((SITES, tuple(counts.columns)))
            content_notes[d.column].append(
                f"aggregated to {selection.level} (sites per value: {len(counts.columns)} columns)")
    frame = pd.concat(parts, axis=1).reset_index().drop(columns=[_WHOLE], errors="ignore")
    for c in frame.columns:
        if c not in key_names:
            frame[c] = frame[c].astype("int64[pyarrow]")
    content = Content(frame[[c.name for c in columns]], columns, content_notes)
    content.groups = groups + _additive_groups(ruleset, set(frame.columns))
    return content, members


@dataclass
class _Table:
    """One package's count cells, as the joint suppression sees them."""

    content: Content
    site_level: bool
    supports: Sequence  # per row: the site's position in the round, or the area's positions
    quantity: dict[str, str]  # count column -> what it counts ("c", "c=v" or "sites")
    hidden: dict[str, np.ndarray]  # count column -> True where blank in the package
    reasons: pd.DataFrame  # why a cell is hidden at first ("" for visible cells)
    exact: set[str]
    missing: dict[str, np.ndarray]  # empty in the round: unknown to the recipient
    values: dict[str, np.ndarray] = field(default_factory=dict)  # count column -> float64
    # Site-level tables: row_at[site position] is its row, -1 where the table lacks the site.
    row_at: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # The rule set's additive groups (total, parts), whether or not this table has every member:
    # a total and its parts add up on every row, shown or not.
    additive: list = field(default_factory=list)

    def row(self, site) -> int | None:
        """The row of a site-level table that holds the site at position ``site``, if any
        (an area, a frozenset of positions, is no row of it)."""
        if isinstance(site, frozenset) or not 0 <= site < len(self.row_at):
            return None
        row = int(self.row_at[site])
        return row if row >= 0 else None


def _primary(content: Content, selection: Selection, ruleset: RuleSet, kinds, supports
             ) -> _Table:
    """Cells hidden for themselves: small counts (1..threshold); at aggregated levels, areas
    under ``min_sites`` sites, and 0 or all-sites counts of a relational rule's member (they
    tell every site's value, which completes the rule with per-site data held elsewhere)."""
    frame = content.frame
    cells = ruleset.small_cells
    aggregated = selection.level != SITE
    quantity = {}
    for c in content.columns:
        kind = kinds.get(c.source)
        if c.name == SITES:
            quantity[c.name] = SITES
        elif kind == "count":
            quantity[c.name] = c.source
        elif aggregated and kind in ("categorical", "flag"):
            quantity[c.name] = c.name  # "source=value"
    counts = list(quantity)
    exact = set(selection.exact_counts)
    relational = {m for rule in ruleset.relational for m in rule.indicators
                  if ruleset.relational_at(rule, SITE) is not Classification.PUBLIC}
    reasons = pd.DataFrame("", index=frame.index, columns=counts)
    values = {c: pd.to_numeric(frame[c], errors="coerce") for c in counts}
    for c in counts:
        if c not in exact:
            small = values[c].between(1, cells.threshold).fillna(False).to_numpy()
            reasons.loc[small, c] = f"1..{cells.threshold}"
    if aggregated:
        sites = values[SITES]
        for c in counts:
            source = next(o.source for o in content.columns if o.name == c)
            if c == SITES or source not in relational or c in exact:
                continue
            telling = values[c] == 0  # a sum of 0: every site's count is 0
            if quantity[c] == c:  # a value's number of sites: 0 or all tell every site's
                telling |= values[c] == sites
            telling = telling.fillna(False).to_numpy() & (reasons[c] == "").to_numpy()
            reasons.loc[telling, c] = RELATIONAL_ZERO
        few = (sites < cells.min_sites).fillna(False).to_numpy()
        for c in counts:
            if c not in exact and c != SITES:  # the number of sites is on public site lists
                reasons.loc[few & (reasons[c] == "").to_numpy(), c] = \
                    f"area under {cells.min_sites} sites"
    hidden = {c: np.array(reasons[c] != "", dtype=bool) for c in counts}
    missing = {c: values[c].isna().to_numpy() for c in counts}
    table = _Table(content, not aggregated, supports, quantity, hidden, reasons, exact, missing,
                   {c: values[c].to_numpy(dtype="float64", na_value=np.nan) for c in counts})
    table.additive = [(g.total, g.parts) for g in ruleset.additive
                      if all(ruleset.indicators.get(m) is not None
                             and ruleset.indicators[m].kind == "count"
                             for m in (g.total, *g.parts))]
    if table.site_level:
        table.row_at = np.full(int(supports.max(initial=-1)) + 1, -1, dtype=np.int64)
        table.row_at[supports] = np.arange(len(supports))
    return table


def _protect_jointly(tables: list[_Table]) -> set:
    """Secondary suppression over every table at once (``linked``); returns the cells that
    stay computable only from what the organisation holds exactly (nothing left to hide)."""
    site_tables = [t for t in tables if t.site_level]

    def copies(key):
        q, support = key
        if isinstance(support, frozenset):
            return published.get(key, [])
        return [(t, row, col) for t in site_tables if (row := t.row(support)) is not None
                for col, qq in t.quantity.items() if qq == q]

    published: dict = defaultdict(list)
    for t in tables:
        if not t.site_level:
            for col, q in t.quantity.items():
                for i, support in enumerate(t.supports):
                    published[(q, support)].append((t, i, col))

    def state(key):
        q, _ = key
        found = copies(key)
        if q == SITES:
            return linked.FIXED  # the number of sites: public in site lists
        if not found:
            return linked.HIDDEN  # a value no table shows: an unknown
        if any(t.missing[c][i] for t, i, c in found):
            return linked.HIDDEN  # empty in the round: unknown, but never protected
        if any(c in t.exact for t, _, c in found):
            return linked.FIXED
        return linked.HIDDEN if all(t.hidden[c][i] for t, i, c in found) else linked.VISIBLE

    def zero_links(eqs) -> list:
        """Counts are never negative: under a visible 0, every part is 0. Written as
        "part = that 0", so that hiding the 0 is among the ways to protect the part."""
        zeros = defaultdict(list)
        for key in published:
            if state(key) == linked.VISIBLE and value(key) == 0:
                zeros[key[0]].append(key)
        links = []
        for key in {k for eq in eqs for k, _ in eq if state(k) == linked.HIDDEN}:
            q, support = key
            inside = support if isinstance(support, frozenset) else frozenset((support,))
            for zero in zeros.get(q, ()):
                if zero != key and inside <= zero[1]:
                    links.append(((key, 1.0), (zero, -1.0)))
                    break
        return links

    def value(key):
        """The true value; a value no table shows counts as 0 (the cautious guess)."""
        found = copies(key)
        if not found:
            return 0.0
        t, i, c = found[0]
        return float(t.values[c][i])

    def hide(key):
        for t, i, c in copies(key):
            t.hidden[c][i] = True

    layouts: dict = {}

    def equations():
        eqs = [eq for t in tables for eq in _row_equations(t)] + \
            [eq for coarse in tables if not coarse.site_level for fine in tables
             if fine is not coarse for eq in _column_equations(coarse, fine, state, layouts)]
        return eqs + zero_links(eqs)

    targets = [(t.quantity[c], t.supports[i]) for t in tables for c in t.hidden
               for i in np.flatnonzero(t.hidden[c] & ~t.missing[c]
                                       & _sensitive(t, c))]
    return linked.protect(equations, targets, state, value, hide)


def _sensitive(t: _Table, column: str) -> np.ndarray:
    """Cells that must not be computable: hidden for themselves, and not a plain 0 (a zero is
    not sensitive, as in sdcTable's frequency rule, unless it is a relational member's: a
    zero elsewhere may be told by a zero total, which says every part is 0)."""
    reasons = t.reasons[column].to_numpy()
    zero = t.values[column] == 0
    return (reasons != "") & (~zero | (reasons == RELATIONAL_ZERO))


def _row_equations(t: _Table) -> list:
    """On every row with a hidden cell: total = sum of parts, for the table's groups (values
    against ``sites``) and every additive group of the rule set with a member in the table
    (members it does not show are unknowns, or known zeros)."""
    out = []
    by_q = {q: c for c, q in t.quantity.items()}
    groups = [(total, parts) for total, parts in t.content.groups if total == SITES]
    groups += [(total, parts) for total, parts in t.additive
               if any(m in by_q for m in (total, *parts))]
    for total, parts in groups:
        shown = [by_q[m] for m in (total, *parts) if m in by_q]
        rows = np.flatnonzero(np.logical_or.reduce([t.hidden[c] | t.missing[c] for c in shown]))
        quantity = (t.quantity.get(total, total), *(t.quantity.get(p, p) for p in parts))
        for i in rows:
            support = t.supports[i]
            out.append((((quantity[0], support), 1.0),
                        *(((q, support), -1.0) for q in quantity[1:])))
    return out


FREE = "free"  # a quantity a table neither shows nor implies: an unknown per row


def _composition(t: _Table, q: str):
    """How a table gives quantity ``q`` on each row: its own column ([(q, 1)]), a constant
    ([]: one per site, or a categorical answer shown per site), a sum of its other columns (an
    additive group whose other members it shows), or ``FREE`` (an unknown it does not give)."""
    shown = set(t.quantity.values())
    if q in shown:
        return [(q, 1.0)]
    source, _, _ = q.partition("=")
    if t.site_level and (q == SITES or (source != q and source in t.content.frame.columns)):
        return []
    for total, parts in t.additive:
        members = (total, *parts)
        if q in members and all(m in shown for m in members if m != q):
            if q == total:
                return [(p, 1.0) for p in parts]
            return [(total, 1.0)] + [(p, -1.0) for p in parts if p != q]
    return FREE


def _layout(coarse: _Table, fine: _Table) -> list:
    """For each area of ``coarse``: the rows of ``fine`` that exactly cover it (site-level:
    (site positions, rows)), or None if ``fine`` does not cover it."""
    areas = []
    if fine.site_level:
        row_at = fine.row_at
        for support in coarse.supports:
            sites = np.fromiter(support, dtype=np.int64, count=len(support))
            rows = row_at[sites[sites < len(row_at)]] if len(row_at) else sites[:0]
            areas.append((sites, rows) if len(rows) == len(sites) and (rows >= 0).all()
                         else None)
        return areas
    for support in coarse.supports:
        rows = [j for j, sub in enumerate(fine.supports) if sub < support]
        whole = bool(rows) and frozenset().union(*(fine.supports[j] for j in rows)) == support
        areas.append(rows if whole else None)
    return areas


def _column_equations(coarse: _Table, fine: _Table, state, layouts: dict,
                      options: int = 3) -> list:
    """Each area of ``coarse`` = the sum of ``fine``'s rows inside it, when they cover it, for
    every quantity ``coarse`` shows or implies (an additive member).

    Against a site-level table only the hidden site cells are written out, with the
    ``options`` smallest visible ones (what a secondary suppression would hide): the other
    visible cells are known constants, irrelevant to whether a hidden cell can be computed. A
    quantity the site table does not give is written out only where every site's row equation
    can tie it to something; otherwise it is a free unknown and the identity says nothing."""
    out = []
    key = (id(coarse), id(fine))
    if key not in layouts:
        layouts[key] = _layout(coarse, fine)
    areas = layouts[key]
    if fine.site_level:
        columns = {c: (fine.hidden[c] | fine.missing[c], fine.values[c]) for c in fine.hidden}
    implied = {m for total, parts in coarse.additive for m in (total, *parts)}
    for q in dict.fromkeys([*coarse.quantity.values(), *sorted(implied)]):
        recipe = _composition(fine, q)
        tied = _tied_rows(fine, q) if recipe == FREE and fine.site_level else None
        own = _composition(coarse, q)
        own = [(q, 1.0)] if own == FREE else own
        for i, support in enumerate(coarse.supports):
            if areas[i] is None:
                continue
            head = [((q2, support), c) for q2, c in own]
            if fine.site_level:
                sites, rows = areas[i]
                if recipe == FREE:
                    if not tied[rows].all():
                        continue  # a site's value is free: nothing follows
                    terms = [((q, int(s)), -1.0) for s in sites]
                else:
                    terms = []
                    for qq, coef in recipe:
                        hidden, values = columns[qq]
                        hid = hidden[rows]
                        visible = np.flatnonzero(~hid)
                        order = np.lexsort((values[rows][visible], values[rows][visible] == 0))
                        picked = np.concatenate([np.flatnonzero(hid), visible[order[:options]]])
                        terms += [((qq, int(s)), -coef) for s in sites[picked]]
            else:
                parts = [(q, 1.0)] if recipe == FREE else recipe
                terms = [((qq, fine.supports[j]), -coef) for j in areas[i] for qq, coef in parts]
            eq = (*head, *terms)
            if any(state(k) == linked.HIDDEN for k, _ in eq):
                out.append(eq)
    return out


def _tied_rows(t: _Table, q: str) -> np.ndarray:
    """Rows of a site-level table with a row equation that holds ``q`` (``_row_equations``)."""
    tied = np.zeros(len(t.content.frame), dtype=bool)
    by_q = {qq: c for c, qq in t.quantity.items()}
    for total, parts in t.additive:
        members = (total, *parts)
        shown = [by_q[m] for m in members if m in by_q]
        if q in members and shown:
            tied |= np.logical_or.reduce([t.hidden[c] | t.missing[c] for c in shown])
    return tied


def _apply(t: _Table, ruleset: RuleSet, unprotectable: set) -> None:
    content, frame = t.content, t.content.frame
    for c in t.hidden:
        mask = t.hidden[c]
        n = int(mask.sum())
        source = next(o.source for o in content.columns if o.name == c) or SITES
        if n:
            frame[c] = frame[c].mask(mask)
            content.suppressed[c] = n
            # One count, no reasons: "1 cell, 0 or every site" in a row of known sum pins it,
            # and "1 small, 1 secondary" narrows the secondary cell to the sum minus 1..k.
            content.notes[source].append(f"{c}: suppressed {n} cell(s) ({SUPPRESSED})")
        elif c in t.exact:
            content.notes[c].append("exact counts by agreement (no small-cell suppression)")
        kept = sum(1 for q, support in unprotectable if q == t.quantity[c]
                   and (t.row(support) is not None if t.site_level else support in t.supports))
        if kept:
            content.notes[source].append(
                f"{c}: {kept} hidden cell(s) the organisation can compute from per-site "
                "values it receives exactly")


def explain(selection: Selection, content: Content | None = None) -> list[dict]:
    """One entry per source column: what happened to it and which rule decided. No values."""
    entries = []
    for d in selection.decisions:
        notes = list(d.notes) + (list(content.notes.get(d.column, [])) if content else [])
        actions = []
        if d.shared:
            actions = [a for a in ("escalated", "aggregated", "suppressed", "redacted")
                       if any(a in n for n in notes)] or ["shared"]
        entries.append({
            "column": d.column,
            "decision": "shared" if d.shared else "dropped",
            "actions": actions or ["dropped"],
            "classification": d.classification.value,
            "reason": d.reason,
            "rule": d.rule,
            "notes": notes,
        })
    if content is not None and content.notes.get(SITES):
        entries.append({"column": SITES, "decision": "shared", "actions": ["suppressed"],
                        "classification": "public", "reason": "computed by aggregation",
                        "rule": "aggregation", "notes": content.notes[SITES]})
    return entries


def explanation_lines(entries: list[dict]) -> list[str]:
    """The explanation for a task log: one line per source column."""
    lines = []
    for e in entries:
        details = [e["classification"]]
        if e["reason"] != "shared":
            details.append(e["reason"])
        details += e["notes"]
        lines.append(f"{e['column']}: {'/'.join(e['actions'])} ({'; '.join(details)}) "
                     f"[{e['rule']}]")
    return lines
