"""Primary suppression: the cells hidden for themselves, and each table's cells as keys.

Per table: counts 1..threshold (sdcTable's frequency rule); at an aggregated level, every count
of an area with fewer than ``min_sites`` sites, and a count of 0 or of every site for a
relational rule's member (it tells each site's value). ``Table`` is what the later steps
(linkage, protection) read and change: which cell is hidden, why at first, and its value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..classification import Classification
from ..classify.sensitivity import Selection
from ..policy import SITE, RuleSet
from .content import RELATIONAL_ZERO, SITES, Content


@dataclass
class Table:
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
    version: int = 0  # 0: this run's round; else a ``Delivered`` table's version (Versions)
    virtual: bool = False  # held by no one: a delivered table's cells as they are now

    def row(self, site) -> int | None:
        """The row of a site-level table that holds the site at position ``site``, if any
        (an area, a frozenset of positions, is no row of it)."""
        if isinstance(site, frozenset) or not 0 <= site < len(self.row_at):
            return None
        row = int(self.row_at[site])
        return row if row >= 0 else None


def primary(content: Content, selection: Selection, ruleset: RuleSet, kinds, supports
             ) -> Table:
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
        if c not in exact and c != SITES:  # the number of sites is on public site lists
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
    table = Table(content, not aggregated, supports, quantity, hidden, reasons, exact, missing,
                   {c: values[c].to_numpy(dtype="float64", na_value=np.nan) for c in counts})
    table.additive = [(g.total, g.parts) for g in ruleset.additive
                      if all(ruleset.indicators.get(m) is not None
                             and ruleset.indicators[m].kind == "count"
                             for m in (g.total, *g.parts))]
    if table.site_level:
        table.row_at = np.full(int(supports.max(initial=-1)) + 1, -1, dtype=np.int64)
        table.row_at[supports] = np.arange(len(supports))
    return table



def sensitive(t: Table, column: str) -> np.ndarray:
    """Cells that must not be computable: hidden for themselves, and not a plain 0 (a zero is
    not sensitive, as in sdcTable's frequency rule, unless it is a relational member's: a
    zero elsewhere may be told by a zero total, which says every part is 0)."""
    reasons = t.reasons[column].to_numpy()
    zero = t.values[column] == 0
    return (reasons != "") & (~zero | (reasons == RELATIONAL_ZERO))

