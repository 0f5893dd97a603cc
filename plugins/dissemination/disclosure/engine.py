"""Turn a selection into the tables a partner receives, one step per module.

1. **Aggregate** to an admin level (``aggregate``): counts summed per area, categorical and
   yes/no indicators as sites per declared value, and a ``sites`` column.
2. **Redact** free text (``redaction``): phones, e-mails and ID-like tokens.
3. **Primary** suppression per table (``primary``): small counts, areas of too few sites, a
   relational member's 0 or every site.
4. **Linkage** (``linkage``, ``versions``): the identities that tie every table one
   organisation holds of the round, this run's and those delivered from other versions.
5. **Protection** (``protection``, ``linked``): secondary suppression over all of them at once,
   until no protected cell can be computed. ``sites`` stays visible: site lists are public.
6. **Explanation** (``explanation``): per column, what was done and which rule decided.

Cell-key **perturbation** (``cellkey``) is built and not yet wired in (decision 0009).
Pure: a DataFrame and selections in, DataFrames and per-column notes out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..classification import Classification
from ..classify.sensitivity import Selection
from ..policy import SITE, RuleSet
from .aggregate import additive_groups, aggregate
from .content import SITES, SUPPRESSED, Content, OutputColumn
from .primary import Table, primary, sensitive
from .protection import JointProtection
from .redaction import redact_text
from .versions import Delivered, DeliveredMismatch, Versions

__all__ = ["Shared", "build_content", "build_contents", "rebuild"]


def build_content(df: pd.DataFrame, selection: Selection, ruleset: RuleSet) -> Content:
    """One table, protected on its own (see ``build_contents``)."""
    return build_contents(df, [(selection, None)], ruleset)[0]


@dataclass(frozen=True)
class Shared:
    """The round's protection decisions that every holder's tables share.

    A cell hidden for one holder is hidden wherever it appears, so packages pooled by several
    organisations show no cell one of them was refused (issue #32, finding 5). ``hidden``:
    those cells, as ``Content.blank_keys`` names them. ``pooled``: judge the tables as every
    holder's pooled, where counts one agreement receives exactly are unknown to the others."""

    hidden: frozenset = frozenset()
    pooled: bool = False


def build_contents(df: pd.DataFrame, parts: Sequence[tuple[Selection, np.ndarray | None]],
                   ruleset: RuleSet, delivered: Sequence[Delivered] = (),
                   shared: Shared = Shared()) -> list[Content]:
    """Every table one organisation receives from one round, suppressed jointly.

    ``parts``: each package's selection and the rows it covers (a boolean mask over ``df``,
    e.g. a field focal point's areas; None for every row). Primary suppression is per table;
    secondary suppression (``linked``) looks at all of them at once, so no hidden cell can be
    computed from any combination of the tables the organisation holds: these, and the
    ``delivered`` tables of other versions of the round, which only constrain (their blanks
    are targets, their visible cells known). ``shared``: cells hidden for other holders too.
    """
    areas: dict[frozenset, frozenset] = {}
    tables = [_table(df, selection, rows, ruleset, areas) for selection, rows in parts]
    for table in tables:
        _force(table, shared.hidden)
    versions, held, extra = _held_tables(df, delivered, ruleset, areas)
    unprotectable = JointProtection(tables + held, versions, extra, shared.hidden,
                                    shared.pooled, _relational(ruleset),
                                    ruleset.small_cells.threshold).run()
    for table in tables:
        _apply(table, ruleset, unprotectable)
    return [t.content for t in tables]


def _held_tables(df: pd.DataFrame, delivered: Sequence[Delivered], ruleset: RuleSet,
                 areas: dict) -> tuple[Versions | None, list[Table], list]:
    """The ``delivered`` tables as protection reads them, in one space of sites with ``df``
    (``Versions``), with the tables no one holds whose cells are protected (their cells as
    they are now), and more cells to protect that no table holds."""
    if not delivered:
        return None, [], []
    if any(d.round is df for d in delivered):  # this very export: a version of its own,
        same = df.copy(deep=False)  # its cells linked to this run's by value like any other
        delivered = [replace(d, round=same) if d.round is df else d for d in delivered]
    versions = Versions(df, [d.round for d in delivered], ruleset.site_key)
    tables: list[Table] = []
    extra: list = []  # cells to protect that no table holds
    views: list[Table] = []  # tables no one holds, whose cells are protected
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
                                              & sensitive(now, c))]
        else:  # areas: equations tie them to what is shown; the organisation sees none
            now.virtual, now.exact = True, set()
            now.hidden = {c: np.ones(len(h), dtype=bool) for c, h in now.hidden.items()}
            views.append(now)
    return versions, tables + views, extra


def _relational(ruleset: RuleSet) -> dict[str, frozenset]:
    """Each member of a relational rule not Public per site, with the rules' other members."""
    out: dict[str, frozenset] = {}
    for rule in ruleset.relational:
        if ruleset.relational_at(rule, SITE) is not Classification.PUBLIC:
            for m in rule.indicators:
                out[m] = out.get(m, frozenset()) | (frozenset(rule.indicators) - {m})
    return out


def _force(table: Table, hidden: frozenset) -> None:
    """Hide the table's cells that the round's shared decisions hide (``Shared.hidden``)."""
    if not hidden:
        return
    for c, q in table.quantity.items():
        if q != SITES and c not in table.exact:
            table.hidden[c] |= np.fromiter(((q, s) in hidden for s in table.supports),
                                           dtype=bool, count=len(table.supports))


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
           areas: dict, at: np.ndarray | None = None) -> Table:
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
        content.groups = additive_groups(ruleset, set(content.frame.columns))
        supports = placed  # per row: the site's position in the round
    else:
        content, groups = aggregate(sub, selection, ruleset, kinds)
        # One object per distinct area: cells are keyed by it, and equal keys then compare
        # by identity instead of element by element.
        supports = [areas.setdefault(area, area)
                    for area in (frozenset(placed[members].tolist()) for members in groups)]
    redact_text(content, selection, kinds)
    return primary(content, selection, ruleset, kinds, supports)



def _apply(t: Table, ruleset: RuleSet, unprotectable: set) -> None:
    content, frame = t.content, t.content.frame
    content.blank_keys = frozenset((t.quantity[c], t.supports[i]) for c in t.hidden
                                   if t.quantity[c] != SITES
                                   for i in np.flatnonzero(t.hidden[c] & ~t.missing[c]))
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
                f"{c}: {kept} hidden cell(s) the organisation can compute from other cells "
                "it receives (hidden for the rule, not for protection)")

