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
- **Versions of a round** (partial, then cleaned): tables the organisation already holds from
  another version (``Delivered``) join the joint suppression as delivered. A cell is the same
  unknown in both versions where its value did not change, two where it did (``_Versions``);
  delivered blanks and the same cells as they are now stay protected.

Pure: a DataFrame and selections in, DataFrames and per-column notes out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..classification import Classification
from ..classify.sensitivity import Selection
from ..disclosure import linked
from ..errors import PermanentError
from ..intake.contacts import REDACTED as REDACTED
from ..intake.contacts import redact
from ..policy import SITE, RuleSet

SITES = "sites"
_WHOLE = "__whole_round__"
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


@dataclass(frozen=True)
class Delivered:
    """A table an earlier run delivered to the same organisation from another version of the
    round (its partial export, before cleaning), rebuilt from that version's rows.

    The organisation holds it: what it showed is known, what it hid must stay hidden. The
    versions differ where cleaning changed a value; where it did not, the organisation may
    assume the two are one and the same number, and difference one table against the other."""

    round: pd.DataFrame  # the version it was made from, conformed
    selection: Selection
    rows: np.ndarray | None  # which rows of ``round`` it covered (None: all)
    hidden: dict[str, np.ndarray]  # output column -> True where the delivered cell was blank


def blanks(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """A delivered table's blank cells, per column (what ``Delivered.hidden`` holds)."""
    return {c: frame[c].isna().to_numpy() for c in frame.columns}


class DeliveredMismatch(PermanentError, ValueError):
    """A delivered table rebuilt from its round does not have the shape it was delivered with:
    its hidden cells cannot be placed, so nothing may be judged against it."""


def build_contents(df: pd.DataFrame, parts: Sequence[tuple[Selection, np.ndarray | None]],
                   ruleset: RuleSet, delivered: Sequence[Delivered] = ()) -> list[Content]:
    """Every table one organisation receives from one round, suppressed jointly.

    ``parts``: each package's selection and the rows it covers (a boolean mask over ``df``,
    e.g. a field focal point's areas; None for every row). Primary suppression is per table;
    secondary suppression (``linked``) looks at all of them at once, so no hidden cell can be
    computed from any combination of the tables the organisation holds: these, and the
    ``delivered`` tables of other versions of the round, which only constrain (their blanks
    are targets, their visible cells known).
    """
    areas: dict[frozenset, frozenset] = {}
    tables = [_table(df, selection, rows, ruleset, areas) for selection, rows in parts]
    if any(d.round is df for d in delivered):  # this very export: a version of its own,
        same = df.copy(deep=False)  # its cells linked to this run's by value like any other
        delivered = [replace(d, round=same) if d.round is df else d for d in delivered]
    if delivered:
        versions = _Versions(df, [d.round for d in delivered], ruleset.site_key)
        extra: list = []  # cells to protect that no table holds
        views: list = []  # tables no one holds, whose cells are protected
        for d in delivered:
            table = _table(d.round, d.selection, d.rows, ruleset, areas,
                           versions.positions(d.round))
            if set(table.hidden) - set(d.hidden) or any(
                    len(d.hidden[c]) != len(table.hidden[c]) for c in table.hidden):
                raise DeliveredMismatch(
                    f"a table delivered to {d.selection.agreement_id} at {d.selection.level} "
                    "does not rebuild from its round as delivered (other columns or rows)")
            table.hidden = {c: np.asarray(d.hidden[c], dtype=bool) | table.missing[c]
                            for c in table.hidden}
            table.version = versions.of(d.round)
            tables.append(table)
            # The same cells as they are now: where cleaning changed one, differencing gives
            # the new value, as small as the old one may have been. (A column cleaning
            # removed has no value now: only the table's own blanks are protected then.)
            if not all(c.column in df for c in d.selection.shared):
                continue
            there = np.zeros(versions.size, dtype=bool)
            there[table.supports if table.site_level else
                  [s for area in table.supports for s in area]] = True
            now = _table(df, d.selection, there[versions.at[0]], ruleset, areas, versions.at[0])
            if now.site_level:  # its cells are this run's per-site values: protect them
                extra += [(now.quantity[c], now.supports[i]) for c in now.hidden
                          for i in np.flatnonzero(now.hidden[c] & ~now.missing[c]
                                                  & _sensitive(now, c))]
            else:  # areas: equations tie them to what is shown; the organisation sees none
                now.virtual, now.exact = True, set()
                now.hidden = {c: np.ones(len(h), dtype=bool) for c, h in now.hidden.items()}
                views.append(now)
        unprotectable = _protect_jointly(tables + views, versions, extra)
    else:
        unprotectable = _protect_jointly(tables)
    for table in tables[:len(parts)]:
        _apply(table, ruleset, unprotectable)
    return [t.content for t in tables[:len(parts)]]


def rebuild(df: pd.DataFrame, selection: Selection, rows: np.ndarray | None, ruleset: RuleSet,
            blanks: dict[str, np.ndarray]) -> Content:
    """A delivered table, from its round and where its blanks were (``blanks``: as
    ``_apply`` left them), for checking against what was delivered."""
    table = _table(df, selection, rows, ruleset, {})
    frame = table.content.frame
    for c in table.hidden:
        if len(blanks[c]) != len(frame):
            raise ValueError(f"{c}: {len(blanks[c])} blanks for {len(frame)} rows")
        if blanks[c].any():
            frame[c] = frame[c].mask(blanks[c])
    return table.content


def _table(df: pd.DataFrame, selection: Selection, rows: np.ndarray | None, ruleset: RuleSet,
           areas: dict, at: np.ndarray | None = None) -> _Table:
    """One package's table after primary suppression. ``at``: each row's position in the
    shared space of several versions (default: its position in ``df``)."""
    positions = np.arange(len(df)) if rows is None else np.flatnonzero(rows)
    sub = df if rows is None else df.iloc[positions]
    placed = positions if at is None else at[positions]
    shared = selection.shared
    kinds = {d.column: ruleset.indicators[d.column].kind for d in shared}
    if selection.level == SITE:
        content = Content(
            sub[[d.column for d in shared]].reset_index(drop=True),
            [OutputColumn(d.column, d.column, d.classification, d.rule) for d in shared],
        )
        content.groups = _additive_groups(ruleset, set(content.frame.columns))
        supports = placed  # per row: the site's position in the round
    else:
        content, groups = _aggregate(sub, selection, ruleset, kinds)
        # One object per distinct area: cells are keyed by it, and equal keys then compare
        # by identity instead of element by element.
        supports = [areas.setdefault(area, area)
                    for area in (frozenset(placed[members].tolist()) for members in groups)]
    for d in shared:
        if kinds[d.column] == "text" and d.column in content.frame:
            content.frame[d.column], n = redact(content.frame[d.column])
            content.notes[d.column].append(
                f"redacted {n} value(s) with phones, e-mails or IDs")
    return _primary(content, selection, ruleset, kinds, supports)


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
    version: int = 0  # 0: this run's round; else a ``Delivered`` table's version (_Versions)
    virtual: bool = False  # held by no one: a delivered table's cells as they are now

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


class _Versions:
    """Several versions of one round (this run's first, then those delivered tables came
    from) in one space of site positions, matched by site key (in any case).

    A cell of a version is the same unknown as the cell of an earlier version (in this order)
    with the same value: the organisation may assume a value did not change, and is right
    where it did not. Where it did, the two are distinct unknowns. ``key`` names a cell so:
    ``(q, support)`` for this run's value, ``((version, q), support)`` for another one."""

    def __init__(self, now: pd.DataFrame, others: Sequence[pd.DataFrame], site_key: str):
        self.frames = [now]
        for frame in others:
            if not any(frame is f for f in self.frames):
                self.frames.append(frame)
        where: dict[str, int] = {}
        self.at = []
        for frame in self.frames:
            if site_key not in frame:
                raise DeliveredMismatch(f"a version of round {_round_of(frame)} has no "
                                        f"{site_key} to match its sites with the others'")
            keys = frame[site_key].astype("string").str.lower().to_numpy(dtype=object)
            self.at.append(np.fromiter((where.setdefault(k, len(where)) for k in keys),
                                       dtype=np.int64, count=len(keys)))
        self.size = len(where)
        self._sites: dict[str, np.ndarray] = {}
        self._areas: dict = {}

    def of(self, frame: pd.DataFrame) -> int:
        return next(v for v, f in enumerate(self.frames) if f is frame)

    def positions(self, frame: pd.DataFrame) -> np.ndarray:
        return self.at[self.of(frame)]

    def _values(self, v: int, q: str) -> np.ndarray:
        """Version ``v``'s value of quantity ``q`` at every shared position (inf: no such site
        or column in it; NaN: empty in the round)."""
        frame, out = self.frames[v], np.full(self.size, np.inf)
        source, _, value = q.partition("=")
        if q == SITES:
            out[self.at[v]] = 1.0
        elif value and source in frame:
            out[self.at[v]] = (frame[source] == value).fillna(False).to_numpy(dtype="float64")
        elif not value and q in frame:
            out[self.at[v]] = pd.to_numeric(frame[q], errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan)
        return out

    def sites(self, q: str) -> np.ndarray:
        """Per version and shared position: the earliest version with the same value."""
        if q not in self._sites:
            values = [self._values_cached(v, q) for v in range(len(self.frames))]
            first = np.tile(np.arange(len(values))[:, None], (1, self.size))
            for v in range(len(values)):
                for u in range(v - 1, -1, -1):
                    same = (values[u] == values[v]) & np.isfinite(values[v]) | \
                        np.isnan(values[u]) & np.isnan(values[v])
                    first[v, same] = u
            self._sites[q] = first
        return self._sites[q]

    def first(self, v: int, q: str, support) -> int:
        if not v:
            return 0
        if not isinstance(support, frozenset):
            return int(self.sites(q)[v, support])
        if (v, q, support) not in self._areas:
            sites = np.fromiter(support, dtype=np.int64, count=len(support))

            def total(u):
                values = self._values_cached(u, q)[sites]
                if np.isinf(values).any():
                    return None  # a site this version lacks: no such area in it
                return np.nan if np.isnan(values).all() else float(np.nansum(values))

            mine = total(v)
            self._areas[(v, q, support)] = next(
                (u for u in range(v) if (t := total(u)) is not None
                 and (t == mine or (np.isnan(t) and np.isnan(mine)))), v)
        return self._areas[(v, q, support)]

    def _values_cached(self, v: int, q: str) -> np.ndarray:
        cache = self.__dict__.setdefault("_cache", {})
        if (v, q) not in cache:
            cache[(v, q)] = self._values(v, q)
        return cache[(v, q)]

    def key(self, v: int, q: str, support):
        u = self.first(v, q, support)
        return (q, support) if not u else ((u, q), support)


def _round_of(frame: pd.DataFrame) -> str:
    ids = frame["round_id"].unique()[:1] if "round_id" in frame else []
    return str(ids[0]) if len(ids) else "(unnamed)"


def _quantity_of(key) -> tuple[int, str]:
    """A cell key's version and quantity."""
    q = key[0]
    return q if isinstance(q, tuple) else (0, q)


def _protect_jointly(tables: list[_Table], versions: _Versions | None = None,
                     extra: Sequence = ()) -> set:
    """Secondary suppression over every table at once (``linked``); returns the cells that
    stay computable only from what the organisation holds exactly (nothing left to hide).
    Tables of another version (``versions``: delivered earlier) are never changed: their
    visible cells are known, their blanks protected like this run's; ``extra``: more cells
    to protect (their cells as they are in this run's version)."""
    site_tables = [t for t in tables if t.site_level]

    def key_of(v):
        if versions is None or not v:
            return lambda q, support: (q, support)
        return lambda q, support: versions.key(v, q, support)

    def copies(key):
        q, support = key
        if isinstance(support, frozenset):
            return published.get(key, [])
        version, q = _quantity_of(key)
        return [(t, row, col) for t in site_tables if (row := t.row(support)) is not None
                for col, qq in t.quantity.items() if qq == q
                and (versions is None or versions.first(t.version, q, support) == version)]

    published: dict = defaultdict(list)
    for t in tables:
        if not t.site_level:
            key = key_of(t.version)
            for col, q in t.quantity.items():
                for i, support in enumerate(t.supports):
                    published[key(q, support)].append((t, i, col))

    def state(key):
        _, q = _quantity_of(key)
        found = copies(key)
        if q == SITES:
            return linked.FIXED  # the number of sites: public in site lists
        if not found:
            return linked.HIDDEN  # a value no table shows: an unknown
        if any(t.missing[c][i] for t, i, c in found):
            return linked.HIDDEN  # empty in the round: unknown, but never protected
        if any(c in t.exact for t, _, c in found):
            return linked.FIXED
        if versions is not None and any(t.version and not t.hidden[c][i] for t, i, c in found):
            return linked.FIXED  # shown by a table delivered earlier: known, for good
        return linked.HIDDEN if all(t.hidden[c][i] for t, i, c in found) else linked.VISIBLE

    zeros: dict = {}  # quantity -> its area cells of value 0 (on first use)
    zero_sites: dict = {}  # (quantity, site) -> the zero areas holding the site

    def zero_links(eqs) -> list:
        """Counts are never negative: under a 0, every part is 0. Written as "part = that
        0", so that hiding the 0 is among the ways to protect the part; under a hidden 0 too,
        since its own equations may give it away (a value's count equal to the sites)."""
        if not zeros:
            zeros[None] = []
            for key in published:
                if value(key) == 0:
                    zeros.setdefault(key[0], []).append(key)
            for q, keys in zeros.items():
                for zero in keys:
                    for site in zero[1]:
                        zero_sites.setdefault((q, site), []).append(zero)
        links = []
        for key in {k for eq in eqs for k, _ in eq if state(k) == linked.HIDDEN}:
            q, support = key
            if isinstance(support, frozenset):
                above = [z for z in zeros.get(q, ()) if z != key and support <= z[1]]
            else:
                above = zero_sites.get((q, support), ())
            links += [((key, 1.0), (zero, -1.0)) for zero in above]
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
            if not t.version and not t.virtual:
                t.hidden[c][i] = True

    layouts: dict = {}

    def equations():
        eqs = [eq for t in tables for eq in _row_equations(t, key_of(t.version))] + \
            [eq for coarse in tables if not coarse.site_level for fine in tables
             if fine is not coarse and not fine.virtual for eq in _column_equations(
                 coarse, fine, state, layouts, key_of(coarse.version),
                 _differs(versions, coarse, fine))]
        if site_tables:
            eqs += [eq for coarse in tables if not coarse.site_level
                    for eq in _union_equations(coarse, site_tables, state, layouts,
                                               key_of(coarse.version), versions)]
        eqs += _answers(eqs, tables, site_tables, versions, key_of)
        if partly_shown:
            linked_keys: dict = defaultdict(set)  # quantity -> supports of its cells in eqs
            for eq in eqs:
                for (q, support), _ in eq:
                    linked_keys[q].add(support)
            eqs += [eq for t in partly_shown
                    for eq in _row_equations(t, key_of(t.version), linked_keys)]
        return eqs + zero_links(eqs)

    # Tables showing some members of an additive group, not all (and more than one table to
    # link them): their rows without a hidden cell can still tie what they do not show.
    partly_shown = [t for t in tables if len(tables) > 1 and any(
        any(m in t.quantity.values() for m in (total, *parts))
        and not all(m in t.quantity.values() for m in (total, *parts))
        for total, parts in t.additive)]

    targets = [key(t.quantity[c], t.supports[i]) for t in tables
               for key in (key_of(t.version),) for c in t.hidden
               for i in np.flatnonzero(t.hidden[c] & ~t.missing[c] & _sensitive(t, c))]
    seen = set(targets)
    targets += [key for key in dict.fromkeys(extra) if key not in seen]
    for key in targets if versions is not None else ():
        if state(key) == linked.VISIBLE:  # blank in a delivered table, shown by this run's
            hide(key)
    return linked.protect(equations, targets, state, value, hide)


def _differs(versions: _Versions | None, coarse: _Table, fine: _Table):
    """For a site-level ``fine`` of another version than ``coarse``: per (quantity, sites),
    where ``fine``'s value is not ``coarse``'s version's (there, it is an unknown)."""
    if versions is None or coarse.version == fine.version:
        return None

    def differs(q: str, sites: np.ndarray) -> np.ndarray:
        first = versions.sites(q)
        return first[coarse.version, sites] != first[fine.version, sites]
    return differs


def _sensitive(t: _Table, column: str) -> np.ndarray:
    """Cells that must not be computable: hidden for themselves, and not a plain 0 (a zero is
    not sensitive, as in sdcTable's frequency rule, unless it is a relational member's: a
    zero elsewhere may be told by a zero total, which says every part is 0)."""
    reasons = t.reasons[column].to_numpy()
    zero = t.values[column] == 0
    return (reasons != "") & (~zero | (reasons == RELATIONAL_ZERO))


def _row_equations(t: _Table, key=lambda q, support: (q, support), linked=None) -> list:
    """On every row with a hidden cell: total = sum of parts, for the table's groups (values
    against ``sites``) and every additive group of the rule set with a member in the table
    (members it does not show are unknowns, or known zeros).

    ``linked``: cells other equations hold. Then the rows without a hidden cell whose members
    the table does not show include one of them: those members are unknowns here, but a
    visible total still ties them (a total of 0: each is 0), and another table may need it."""
    out = []
    by_q = {q: c for c, q in t.quantity.items()}
    groups = [(total, parts) for total, parts in t.content.groups if total == SITES]
    groups += [(total, parts) for total, parts in t.additive
               if any(m in by_q for m in (total, *parts))]
    for total, parts in groups:
        shown = [by_q[m] for m in (total, *parts) if m in by_q]
        hidden = np.logical_or.reduce([t.hidden[c] | t.missing[c] for c in shown])
        quantity = (t.quantity.get(total, total), *(t.quantity.get(p, p) for p in parts))
        rows = np.flatnonzero(hidden)
        if linked is not None:
            rows = _linked_rows(t, [q for q in quantity if q not in by_q], np.flatnonzero(~hidden),
                                key, linked)
        for i in rows:
            support = t.supports[i]
            out.append(((key(quantity[0], support), 1.0),
                        *((key(q, support), -1.0) for q in quantity[1:])))
    return out


def _linked_rows(t: _Table, unshown: list, rows: np.ndarray, key, linked: dict) -> np.ndarray:
    """Of ``rows``, those where a cell of ``unshown`` is in ``linked`` (quantity -> cells)."""
    if not unshown or not len(rows):
        return rows[:0]
    if t.version or not t.site_level:
        return np.array([i for i in rows if any(
            key(q, t.supports[i])[1] in linked.get(key(q, t.supports[i])[0], ())
            for q in unshown)], dtype=np.int64)
    keep = np.zeros(len(rows), dtype=bool)
    for q in unshown:
        sites = [s for s in linked.get(q, ()) if not isinstance(s, frozenset)]
        if sites:
            keep |= np.isin(t.supports[rows], np.fromiter(sites, dtype=np.int64,
                                                            count=len(sites)))
    return rows[keep]


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
                      key=lambda q, support: (q, support), differs=None,
                      options: int = 3) -> list:
    """Each area of ``coarse`` = the sum of ``fine``'s rows inside it, when they cover it, for
    every quantity ``coarse`` shows or implies (an additive member).

    Against a site-level table only the hidden site cells are written out, with the
    ``options`` smallest visible ones (what a secondary suppression would hide): the other
    visible cells are known constants, irrelevant to whether a hidden cell can be computed. A
    quantity the site table does not give is written out only where every site's row equation
    can tie it to something; otherwise it is a free unknown and the identity says nothing."""
    out = []
    pair = (id(coarse), id(fine))
    if pair not in layouts:
        layouts[pair] = _layout(coarse, fine)
    areas = layouts[pair]
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
            head = [(key(q2, support), c) for q2, c in own]
            if fine.site_level:
                sites, rows = areas[i]
                if recipe == FREE:
                    if not tied[rows].all():
                        continue  # a site's value is free: nothing follows
                    terms = [(key(q, int(s)), -1.0) for s in sites]
                else:
                    terms = []
                    if not recipe and differs is not None:  # shown per site, as it was then
                        terms = [(key(q, int(s)), -1.0) for s in sites[differs(q, sites)]]
                    for qq, coef in recipe:
                        hidden, values = columns[qq]
                        hid = hidden[rows]
                        if differs is not None:  # another version's value: not a constant
                            hid = hid | differs(qq, sites)
                        visible = np.flatnonzero(~hid)
                        order = np.lexsort((values[rows][visible], values[rows][visible] == 0))
                        picked = np.concatenate([np.flatnonzero(hid), visible[order[:options]]])
                        terms += [(key(qq, int(s)), -coef) for s in sites[picked]]
            else:
                parts = [(q, 1.0)] if recipe == FREE else recipe
                terms = [(key(qq, fine.supports[j]), -coef) for j in areas[i]
                         for qq, coef in parts]
            eq = (*head, *terms)
            if any(state(k) == linked.HIDDEN for k, _ in eq):
                out.append(eq)
    return out


#: An area's sites that no table shows a categorical answer for, written out one by one (with
#: the identity "one answer per site") up to this many; beyond, the identity is left out.
FREE_ANSWERS = 64


def _union_equations(coarse: _Table, site_tables: list[_Table], state, layouts: dict, key,
                     versions: _Versions | None, options: int = 3) -> list:
    """Each area of ``coarse`` that no single site-level table covers = the sum of its sites
    taken from several (a field focal point's table and another one's, or a site the partial
    version lacks and the cleaned one has), for every quantity ``coarse`` shows. Sites come
    from the first table holding them; as in ``_column_equations``, only the cells that are
    not constants are written out (with the ``options`` smallest visible ones). A categorical
    answer a table shows per site is a constant, in its own version; a site none shows it for
    is an unknown (a few such sites per area at most; ``_answers`` ties them)."""
    out = []
    covered = [layouts.get((id(coarse), id(fine))) or [None] * len(coarse.supports)
               for fine in site_tables]
    gives = {q: [_composition(fine, q) != FREE for fine in site_tables]
             for q in coarse.quantity.values()}
    for i, support in enumerate(coarse.supports):
        sites = None
        for q in coarse.quantity.values():
            if q == SITES or any(areas[i] is not None and given
                                 for areas, given in zip(covered, gives[q], strict=True)):
                continue  # a single table's equation says it already
            if sites is None:
                sites = np.fromiter(support, dtype=np.int64, count=len(support))
            source, _, value = q.partition("=")
            left = np.ones(len(sites), dtype=bool)  # sites no table has given q for yet
            hidden_keys, visible = [], []
            for fine in site_tables:
                column = next((c for c, qq in fine.quantity.items() if qq == q), None)
                constant = bool(value) and source in fine.content.frame.columns
                if (column is None and not constant) or not left.any():
                    continue
                inside = sites[left] < len(fine.row_at)
                at = sites[left][inside]
                rows = fine.row_at[at]
                have = rows >= 0
                at, rows = at[have], rows[have]
                other = versions is not None and fine.version != coarse.version
                if constant:  # the answer is shown: known, where this version's is the same
                    given = ~(versions.sites(q)[coarse.version, at]
                              != versions.sites(q)[fine.version, at]) if other else \
                        np.ones(len(at), dtype=bool)
                    left[np.flatnonzero(left)[np.flatnonzero(inside)[have][given]]] = False
                    continue
                hid = fine.hidden[column][rows] | fine.missing[column][rows]
                if other:
                    first = versions.sites(q)
                    hid = hid | (first[coarse.version, at] != first[fine.version, at])
                hidden_keys += [key(q, int(s)) for s in at[hid]]
                visible += [(fine.values[column][r], int(s)) for s, r in zip(at[~hid], rows[~hid],
                                                                            strict=True)]
                left[np.flatnonzero(left)[np.flatnonzero(inside)[have]]] = False
            if left.any():
                if not value or left.sum() > FREE_ANSWERS:
                    continue  # a site none of them shows: the identity says nothing
                hidden_keys += [key(q, s) for s in sites[left].tolist()]  # (``_answers``)
            visible.sort(key=lambda vs: (vs[0] == 0, vs[0]))
            terms = [(k, -1.0) for k in hidden_keys] + \
                [(key(q, s), -1.0) for _, s in visible[:options]]
            eq = ((key(q, support), 1.0), *terms)
            if any(state(k) == linked.HIDDEN for k, _ in eq):
                out.append(eq)
    return out


def _answers(eqs: list, tables: list[_Table], site_tables: list[_Table],
             versions: _Versions | None, key_of) -> list:
    """One answer per site and question: for every site whose answer to a categorical
    question is an unknown in ``eqs``, its values add up to 1 (less those a table shows it
    does not have, or has: known, in their version)."""
    values: dict[str, list[str]] = defaultdict(list)  # source -> its "source=value" quantities
    for t in tables:
        for q in t.quantity.values():
            source, _, value = q.partition("=")
            if value and q not in values[source]:
                values[source].append(q)
    asked = {(version, q.partition("=")[0], support) for eq in eqs for k, _ in eq
             for (version, q), support in [(_quantity_of(k), k[1])]
             if not isinstance(support, frozenset) and q.partition("=")[0] in values}
    out = []
    for version, source, site in asked:
        key = key_of(version)
        out.append(tuple((key(q, site), 1.0) for q in values[source]
                         if not any(source in t.content.frame.columns and t.row(site) is not None
                                    and (t.version == version or versions.sites(q)[version, site]
                                         == versions.sites(q)[t.version, site])
                                    for t in site_tables)))
    return [eq for eq in out if eq]


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
