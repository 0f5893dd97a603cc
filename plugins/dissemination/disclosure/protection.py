"""Protection: secondary suppression over every table one organisation holds, at once.

The step after primary suppression. Each table's count cells become keys ``(quantity,
support)``; ``linkage`` writes the identities that tie them; ``linked.protect`` hides cells
until no protected cell can be computed. ``JointProtection`` holds what those steps share:
which copies a key has in the tables, its state (hidden, visible, fixed) and its true value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from . import linked
from .content import SITES
from .linkage import (
    answers,
    column_equations,
    difference_equations,
    row_equations,
    union_equations,
)
from .primary import Table, sensitive
from .versions import Versions, differs, quantity_of


def _plain_key(q, support):
    return (q, support)


class JointProtection:
    """Secondary suppression over ``tables`` (``run``).

    Tables of another version (``versions``: delivered earlier) are never changed: their
    visible cells are known, their blanks protected like this run's. ``extra``: more cells to
    protect, as they are in this run's version. Virtual tables (held by no one) only tie."""

    def __init__(self, tables: list[Table], versions: Versions | None = None,
                 extra: Sequence = (), forced: frozenset = frozenset(), pooled: bool = False,
                 relational: Mapping[str, frozenset] | None = None, level: int = 0):
        self.tables = tables
        self.versions = versions
        self.extra = extra
        self.forced = forced  # hidden by the round's shared decisions: never shown here
        # A secondary of at least the protection level plus 1 (a hidden count is not 0)
        # moves its target's upper bound by the protection level at least.
        self.capacity = level + 1
        self.pooled = pooled  # every holder's tables: exact counts unknown to the others
        self.site_tables = [t for t in tables if t.site_level]
        self.published: dict = defaultdict(list)  # an area cell's key -> (table, row, column)
        for t in tables:
            if not t.site_level:
                key = self.key_of(t.version)
                for col, q in t.quantity.items():
                    for i, support in enumerate(t.supports):
                        self.published[key(q, support)].append((t, i, col))
        # Tables showing some members of an additive group, not all (and more than one table
        # to link them): their rows without a hidden cell can still tie what they do not show.
        self.partly_shown = [t for t in tables if len(tables) > 1 and any(
            any(m in t.quantity.values() for m in (total, *parts))
            and not all(m in t.quantity.values() for m in (total, *parts))
            for total, parts in t.additive)]
        # A site that appears or disappears between versions or rounds: the difference of its
        # area's two cells is its value, which must stay unknown where it completes a
        # relational rule with what the holder has per site.
        self.differences, self.dropped = difference_equations(
            tables, self._per_site_secrets(relational or {}), self.key_of, versions)
        self._zeros: dict = {}  # quantity -> its area cells of value 0 (on first use)
        self._zero_sites: dict = {}  # (quantity, site) -> the zero areas holding the site
        self._layouts: dict = {}

    def _per_site_secrets(self, relational: Mapping[str, frozenset]) -> set[str]:
        """The area quantities of relational members whose per-site value the holder must not
        learn: it holds another member of the rule per site, and not this one."""
        per_site = {c for t in self.site_tables for c in t.content.frame.columns}
        members = {m for m, others in relational.items() if m not in per_site and others & per_site}
        return {q for t in self.tables if not t.site_level for q in t.quantity.values()
                if q.partition("=")[0] in members}

    def key_of(self, version: int):
        """How a table of ``version`` names its cells (``Versions.key``)."""
        if self.versions is None or not version:
            return _plain_key
        return lambda q, support: self.versions.key(version, q, support)

    def copies(self, key) -> list:
        """Every (table, row, column) that shows the cell ``key``."""
        q, support = key
        if isinstance(support, frozenset):
            return self.published.get(key, [])
        version, q = quantity_of(key)
        return [(t, row, col) for t in self.site_tables if (row := t.row(support)) is not None
                for col, qq in t.quantity.items() if qq == q
                and (self.versions is None
                     or self.versions.first(t.version, q, support) == version)]

    def state(self, key) -> str:
        """``linked.HIDDEN``, ``VISIBLE`` or ``FIXED`` (known for good) for the organisation."""
        _, q = quantity_of(key)
        found = self.copies(key)
        if q == SITES:
            return linked.FIXED  # the number of sites: public in site lists
        if self.pooled:  # what one agreement receives exactly, the others do not know
            found = [(t, i, c) for t, i, c in found if c not in t.exact]
        if not found or any(t.missing[c][i] for t, i, c in found):
            return linked.HIDDEN  # no table shows it, or empty in the round: an unknown
        if any(c in t.exact for t, _, c in found):
            return linked.FIXED
        if self.versions is not None and any(t.version and not t.hidden[c][i]
                                             for t, i, c in found):
            return linked.FIXED  # shown by a table delivered earlier: known, for good
        return linked.HIDDEN if all(t.hidden[c][i] for t, i, c in found) else linked.VISIBLE

    def value(self, key) -> float:
        """The true value; a value no table shows counts as 0 (the cautious guess)."""
        found = self.copies(key)
        if not found:
            return 0.0
        t, i, c = found[0]
        return float(t.values[c][i])

    def _shown_value(self, key) -> float:
        """The true value of a cell some table shows; NaN for one none does (not a guess:
        what no table shows cannot be said to be 0)."""
        return self.value(key) if self.copies(key) else float("nan")

    def hide(self, key) -> None:
        for t, i, c in self.copies(key):
            if not t.version and not t.virtual and c not in t.exact:
                t.hidden[c][i] = True

    def equations(self, known_zeros_only: bool = False) -> list:
        """Every identity the organisation can write over the cells, as they stand now.

        Under a zero, every part is 0: written "part = that 0" for a hidden zero too, so that
        protection may hide it, though the organisation cannot use a zero it does not see.
        ``known_zeros_only``: what it can use, no more (to find what protects nothing)."""
        tables, site_tables, state = self.tables, self.site_tables, self.state
        eqs = [eq for t in tables for eq in row_equations(t, self.key_of(t.version))]
        areas = [t for t in tables if not t.site_level]
        eqs += [eq for coarse in areas for fine in tables if fine is not coarse and not fine.virtual
                for eq in column_equations(coarse, fine, state, self._layouts,
                                           self.key_of(coarse.version),
                                           differs(self.versions, coarse, fine))]
        if site_tables:
            eqs += [eq for coarse in areas for eq in union_equations(
                coarse, site_tables, state, self._layouts, self.key_of(coarse.version),
                self.versions)]
        eqs += self.differences
        self._identities = list(eqs)
        eqs += answers(eqs, tables, site_tables, self.versions, self.key_of)
        if self.partly_shown:
            linked_keys: dict = defaultdict(set)  # quantity -> supports of its cells in eqs
            for eq in eqs:
                for (q, support), _ in eq:
                    linked_keys[q].add(support)
            eqs += [eq for t in self.partly_shown
                    for eq in row_equations(t, self.key_of(t.version), linked_keys)]
        return eqs + self._zero_links(eqs, known_zeros_only)

    def _zero_links(self, eqs, known_zeros_only: bool = False) -> list:
        """Counts are never negative: under a 0, every part is 0. Written as "part = that
        0", so that hiding the 0 is among the ways to protect the part; under a hidden 0 too,
        since its own equations may give it away (a value's count equal to the sites)."""
        if not self._zeros:
            self._index_zeros()
        links = []
        for key in {k for eq in eqs for k, _ in eq if self.state(k) == linked.HIDDEN}:
            q, support = key
            if isinstance(support, frozenset):
                above = [z for z in self._zeros.get(q, ()) if z != key and support <= z[1]]
            else:
                above = self._zero_sites.get((q, support), ())
            if known_zeros_only:
                above = [z for z in above if self.state(z) != linked.HIDDEN]
            links += [((key, 1.0), (zero, -1.0)) for zero in above]
        return links

    def _index_zeros(self) -> None:
        self._zeros[None] = []
        for key in self.published:
            if self.value(key) == 0:
                self._zeros.setdefault(key[0], []).append(key)
        for q, keys in self._zeros.items():
            for zero in keys:
                for site in zero[1]:
                    self._zero_sites.setdefault((q, site), []).append(zero)

    def narrow(self, targets: set) -> set:
        """Targets an identity holds within less than the protection level above their value.

        In ``total = a + b`` with ``a`` and ``b`` hidden, ``a`` can grow only as far as ``b``
        can shrink: to 1, a hidden count being known not to be 0 (to 0 for a zero). A hidden
        cell on the other side can grow without bound. Each identity bounds its cells so; a
        combination of several may bound them more (not checked here: docs/disclosure.md)."""
        out = set()
        for eq in self._identities:
            hidden = [(k, c) for k, c in eq if self.state(k) == linked.HIDDEN]
            for key, coef in hidden:
                if key not in targets or key in out:
                    continue
                others = [(k, c) for k, c in hidden if k != key]
                if any(c * coef < 0 for _, c in others):
                    continue  # a cell on the other side can grow as the target does
                room = sum(abs(c) * (v - min(1.0, v)) for k, c in others
                           for v in (self._room_value(k),))
                if room < self.capacity - 1:
                    out.add(key)
        return out

    def _room_value(self, key) -> float:
        """A cell's true value, for how far it can shrink: a site's value in its version where
        no table shows it (a value cleaning changed), else as ``value`` (0: no room)."""
        support = key[1]
        if self.copies(key) or self.versions is None or isinstance(support, frozenset):
            return self.value(key)
        version, q = quantity_of(key)
        found = self.versions.value(version, q, support)
        return found if np.isfinite(found) else 0.0

    def targets(self) -> list:
        """The cells to protect: every table's sensitive blanks, then ``extra``."""
        targets = [key(t.quantity[c], t.supports[i]) for t in self.tables
                   for key in (self.key_of(t.version),) for c in t.hidden
                   for i in np.flatnonzero(t.hidden[c] & ~t.missing[c] & sensitive(t, c))]
        seen = set(targets)
        return targets + [key for key in dict.fromkeys([*self.extra, *self.dropped])
                          if key not in seen]

    def run(self) -> set:
        """Hide what protects the targets, then show what protects nothing; return the hidden
        cells the organisation can still compute from what it holds (nothing left to hide)."""
        targets = self.targets()
        for key in targets if self.versions is not None else ():
            if self.state(key) == linked.VISIBLE:  # blank in a delivered table, shown now
                self.hide(key)
        linked.protect(self.equations, targets, self.state, self.value, self.hide,
                       capacity=self.capacity, narrow=self.narrow)
        return self.show_what_protects_nothing()

    def show_what_protects_nothing(self) -> set:
        """Show every hidden cell no rule hid for itself that the organisation can compute
        anyway; return the computable cells that stay hidden (primary ones).

        A computable cell's value is implied by what is visible, so showing it adds nothing,
        and showing several at once implies no more than each did. A blank that protects
        nothing only costs the partner a number and misleads about what it can know."""
        eqs = self.equations(known_zeros_only=True)
        hidden = {k for eq in eqs for k, _ in eq if self.state(k) == linked.HIDDEN}
        known = linked.determined(eqs, self.state, self._shown_value, hidden) & hidden
        kept = set()
        for key in known:
            copies = [(t, i, c) for t, i, c in self.copies(key)
                      if not t.version and not t.virtual]
            if not copies or key in self.forced:
                continue
            if any(t.reasons[c].iat[i] for t, i, c in copies):
                kept.add(key)  # a primary cell: hidden, and the manifest says it is computable
                continue
            for t, i, c in copies:
                t.hidden[c][i] = False
        return kept
