"""Linkage: the linear identities that tie the cells of the tables one organisation holds.

On every row, declared additive groups (``total = parts``) and, in an aggregated table,
``sites`` = the sum of an indicator's value counts; down every column, an area's cell = the
sum of the same quantity over the rows of a finer table that cover it (its sites, or its
sub-areas), in any table held, of any version. ``linked`` then answers which hidden cells
these equations determine.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from . import linked
from .content import SITES
from .primary import Table
from .versions import Versions, quantity_of


def row_equations(t: Table, key=lambda q, support: (q, support), linked=None) -> list:
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


def _linked_rows(t: Table, unshown: list, rows: np.ndarray, key, linked: dict) -> np.ndarray:
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


def _composition(t: Table, q: str):
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


def _layout(coarse: Table, fine: Table) -> list:
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


def column_equations(coarse: Table, fine: Table, state, layouts: dict,
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


def union_equations(coarse: Table, site_tables: list[Table], state, layouts: dict, key,
                     versions: Versions | None, options: int = 3) -> list:
    """Each area of ``coarse`` that no single site-level table covers = the sum of its sites
    taken from several (a field focal point's table and another one's, or a site the partial
    version lacks and the cleaned one has), for every quantity ``coarse`` shows. Sites come
    from the first table holding them; as in ``column_equations``, only the cells that are
    not constants are written out (with the ``options`` smallest visible ones). A categorical
    answer a table shows per site is a constant, in its own version; a site none shows it for
    is an unknown (a few such sites per area at most; ``answers`` ties them)."""
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
                hidden_keys += [key(q, s) for s in sites[left].tolist()]  # (``answers``)
            visible.sort(key=lambda vs: (vs[0] == 0, vs[0]))
            terms = [(k, -1.0) for k in hidden_keys] + \
                [(key(q, s), -1.0) for _, s in visible[:options]]
            eq = ((key(q, support), 1.0), *terms)
            if any(state(k) == linked.HIDDEN for k, _ in eq):
                out.append(eq)
    return out


def answers(eqs: list, tables: list[Table], site_tables: list[Table],
             versions: Versions | None, key_of) -> list:
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
             for (version, q), support in [(quantity_of(k), k[1])]
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


def _tied_rows(t: Table, q: str) -> np.ndarray:
    """Rows of a site-level table with a row equation that holds ``q`` (``row_equations``)."""
    tied = np.zeros(len(t.content.frame), dtype=bool)
    by_q = {qq: c for c, qq in t.quantity.items()}
    for total, parts in t.additive:
        members = (total, *parts)
        shown = [by_q[m] for m in members if m in by_q]
        if q in members and shown:
            tied |= np.logical_or.reduce([t.hidden[c] | t.missing[c] for c in shown])
    return tied



#: Two cells of one area whose site sets (or values, across versions) differ by more sites
#: than this isolate none of them: their difference is left out.
DIFFERENCE_SITES = 8


def difference_equations(tables: list[Table], quantities: set[str], key_of,
                         versions: Versions | None) -> tuple[list, list]:
    """Two cells of one area and quantity, in two tables (versions of a round, rounds), whose
    sites differ by a few: their difference is those sites' values (the sites both have, and
    whose values did not change, cancel). Returns those identities, and the few sites' cells
    as cells to protect: a site that appears or disappears must not give its value away.

    ``quantities``: the relational members whose per-site value the holder must not learn
    (it holds another member of the rule per site). The identities are written for every
    quantity the two show: they also tie the areas' own protected cells. Identities over every
    site of an area would be as long as the area; these are as short as the difference."""
    areas = [t for t in tables if not t.site_level]
    equations, targets = [], []
    for i, one in enumerate(areas):
        for other in areas[i + 1:]:
            shared = sorted(set(one.quantity.values()) & set(other.quantity.values()) - {SITES})
            for s1, s2, only1, only2, both in _differing_areas(one, other) if shared else ():
                for q in shared:
                    eq, sites = _difference(q, (one, s1, only1), (other, s2, only2), both,
                                            key_of, versions)
                    if eq:
                        equations.append(eq)
                        targets += sites if q in quantities else []
    return equations, targets


def _differing_areas(one: Table, other: Table):
    """Pairs of cells of ``one`` and ``other`` that share sites and differ by a few:
    (sites of one, of other, only in one, only in other, in both)."""
    where: dict[int, int] = {}
    for row, support in enumerate(other.supports):
        for site in support:
            where[site] = row
    for support in one.supports:
        rows = {where[s] for s in support if s in where}
        for row in rows:
            theirs = other.supports[row]
            only1, only2 = support - theirs, theirs - support
            if 0 < len(only1) + len(only2) <= DIFFERENCE_SITES:
                yield support, theirs, only1, only2, support & theirs


def _difference(q: str, first, second, both: frozenset, key_of, versions: Versions | None):
    """``first`` - ``second`` = the sites only in one, less those only in the other, and the
    change of the sites in both whose value changed between their versions."""
    (t1, s1, only1), (t2, s2, only2) = first, second
    k1, k2 = key_of(t1.version), key_of(t2.version)
    changed: list[int] = []
    if versions is not None and t1.version != t2.version:
        sites = np.fromiter(both, dtype=np.int64, count=len(both))
        first_of = versions.sites(q)
        changed = sites[first_of[t1.version, sites] != first_of[t2.version, sites]].tolist()
    if len(only1) + len(only2) + len(changed) > DIFFERENCE_SITES:
        return None, []
    terms = [(k1(q, s1), 1.0), (k2(q, s2), -1.0)]
    terms += [(k1(q, s), -1.0) for s in sorted(only1)]
    terms += [(k2(q, s), 1.0) for s in sorted(only2)]
    for s in changed:
        terms += [(k1(q, s), -1.0), (k2(q, s), 1.0)]
    sites = [k1(q, s) for s in sorted(only1)] + [k2(q, s) for s in sorted(only2)]
    sites += [k(q, s) for s in changed for k in (k1, k2)]
    return tuple(terms), sites
