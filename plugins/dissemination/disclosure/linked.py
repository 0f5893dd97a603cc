"""Which suppressed cells can still be computed from everything else an organisation holds.

The tables one organisation receives from one round are tied by linear identities it can use:
on every row, declared additive groups (``total = parts``) and, in an aggregated table, ``sites``
= the sum of an indicator's value counts; down every column, an area's cell = the sum of the
cells of the same quantity over the rows of a finer table that cover that area (its sites, or
its sub-areas), in any table the organisation also receives. sdcTable protects such linked and
hierarchical tables with heuristics; here the question "can a hidden cell be computed?" is
answered exactly:

1. every identity becomes an equation over the *unknown* cells only (hidden ones; visible and
   constant cells move to the right-hand side, whose values do not matter for the question);
2. equations with an unknown that no other equation has are peeled off (they constrain nothing
   else; that unknown is known only if the rest of its equation is);
3. on each connected component of what is left, a rank test (SVD): an unknown is determined iff
   its unit vector lies in the row space of the component's equations.

``protect`` then hides, while a protected cell is determined, the smallest non-zero visible cell
of an equation that determines it, and asks again. Pure: keys and equations in, keys out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence

import numpy as np

Key = Hashable  # a cell: (quantity, support)
Equation = tuple[tuple[Key, float], ...]  # sum of coefficient x cell = (a known constant)

HIDDEN, VISIBLE, FIXED = "hidden", "visible", "fixed"  # fixed: visible and never hidden
SMALL = 8  # identities with at most this many cells: one new hidden cell per round


def determined(equations: Sequence[Equation], state: Callable[[Key], str],
               value: Callable[[Key], float] | None = None,
               targets: set[Key] | frozenset = frozenset()) -> set[Key]:
    """Hidden cells that the equations and the visible cells determine: every one of
    ``targets`` that is, and others as far as a peeled equation's are found cheaply.

    With ``value`` (the true values), also the cells pinned because counts are never
    negative: in an identity whose hidden cells all weigh the same way, a hidden sum of 0
    means every one of them is 0, whatever linear algebra says."""
    unknown_eqs = []
    for eq in equations:
        coefs: dict[Key, float] = defaultdict(float)
        for k, c in eq:
            if state(k) == HIDDEN:
                coefs[k] += c
        unknowns = tuple((k, c) for k, c in coefs.items() if c)
        if unknowns:
            unknown_eqs.append(unknowns)
    zeros: set[Key] = set()
    if value is not None:
        for eq in unknown_eqs:
            if (all(c > 0 for _, c in eq) or all(c < 0 for _, c in eq)) and \
                    all(value(k) == 0 for k, _ in eq):
                zeros.update(k for k, _ in eq)
        unknown_eqs = [u for u in (tuple((k, c) for k, c in eq if k not in zeros)
                                   for eq in unknown_eqs) if u]
    peeled, kept = _peel(unknown_eqs)
    known: set[Key] = set(zeros)
    for component in _components(kept):
        known |= _rank_determined(component)
    later = list(kept)  # the equations left when each peeled one was taken out
    for eq, private in reversed(peeled):
        rest = tuple((k, c) for k, c in eq if k != private and k not in known)
        if not rest or private in targets and _combination_determined(rest, later):
            known.add(private)  # the rest of its equation is known, if only as a sum
        later.append(eq)
    return known


def _combination_determined(combination: Equation, equations: list[Equation]) -> bool:
    """Is this linear combination of unknowns fixed by the equations? (Its unknowns need
    not be, one by one: a sum two areas tell apart gives the third site of one of them.)"""
    where: dict[Key, list[int]] = defaultdict(list)
    for i, eq in enumerate(equations):
        for k, _ in eq:
            where[k].append(i)
    todo, seen_keys, rows = [k for k, _ in combination], set(), set()
    while todo:
        k = todo.pop()
        if k in seen_keys:
            continue
        seen_keys.add(k)
        for i in where.get(k, ()):
            if i not in rows:
                rows.add(i)
                todo += [kk for kk, _ in equations[i]]
    if not rows:
        return False
    keys = list(seen_keys)
    index = {k: j for j, k in enumerate(keys)}
    matrix = np.zeros((len(rows) + 1, len(keys)))
    for r, i in enumerate(sorted(rows)):
        for k, c in equations[i]:
            matrix[r, index[k]] += c
    for k, c in combination:
        matrix[-1, index[k]] += c
    return np.linalg.matrix_rank(matrix[:-1]) == np.linalg.matrix_rank(matrix)


def _peel(equations: list[Equation]) -> tuple[list[tuple[Equation, Key]], list[Equation]]:
    """Remove, repeatedly, equations holding an unknown that appears in no other equation."""
    where: dict[Key, set[int]] = defaultdict(set)
    for i, eq in enumerate(equations):
        for k, _ in eq:
            where[k].add(i)
    alive = set(range(len(equations)))
    queue = [k for k, eqs in where.items() if len(eqs) == 1]
    peeled = []
    while queue:
        k = queue.pop()
        if len(where[k]) != 1:
            continue
        (i,) = where[k]
        alive.discard(i)
        peeled.append((equations[i], k))
        for other, _ in equations[i]:
            where[other].discard(i)
            if len(where[other]) == 1:
                queue.append(other)
    return peeled, [equations[i] for i in sorted(alive)]


def _components(equations: list[Equation]) -> list[list[Equation]]:
    parent: dict[Key, Key] = {}

    def find(k):
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for eq in equations:
        root = find(eq[0][0])
        for k, _ in eq[1:]:
            parent[find(k)] = root
    groups: dict[Key, list[Equation]] = defaultdict(list)
    for eq in equations:
        groups[find(eq[0][0])].append(eq)
    return list(groups.values())


def _rank_determined(equations: list[Equation]) -> set[Key]:
    """Unknowns fixed by these equations: a zero row in a basis of their null space."""
    keys = list(dict.fromkeys(k for eq in equations for k, _ in eq))
    index = {k: i for i, k in enumerate(keys)}
    matrix = np.zeros((len(equations), len(keys)))
    for row, eq in enumerate(equations):
        for k, c in eq:
            matrix[row, index[k]] += c
    _, s, vt = np.linalg.svd(matrix)
    rank = int((s > 1e-9 * max(s.max(initial=0), 1)).sum())
    null = vt[rank:]  # rows span the null space
    if null.shape[0] == 0:
        return set(keys)
    free = np.abs(null).max(axis=0) > 1e-9
    return {k for k, f in zip(keys, free, strict=True) if not f}


def _options(key: Key, eqs: Sequence[Equation], containing: dict, state) -> set[Key]:
    """Visible cells that could protect ``key``: in its own equations, or failing that in the
    equations reached through its hidden neighbours (nearest first)."""
    seen_eqs: set[int] = set()
    frontier = {key}
    seen_keys = {key}
    while frontier:
        eq_ids = {i for k in frontier for i in containing[k]} - seen_eqs
        if not eq_ids:
            return set()
        seen_eqs |= eq_ids
        for i in sorted(eq_ids, key=lambda i: (len(eqs[i]), i)):  # the tightest identity first
            options = {k for k, _ in eqs[i] if state(k) == VISIBLE}
            if options:
                return options
        frontier = {k for i in eq_ids for k, _ in eqs[i] if state(k) == HIDDEN} - seen_keys
        seen_keys |= frontier
    return set()


def protect(equations: Callable[[], Sequence[Equation]], targets: Iterable[Key],
            state: Callable[[Key], str], value: Callable[[Key], float],
            hide: Callable[[Key], None], max_rounds: int = 10_000,
            capacity: float = 0, narrow: Callable[[set[Key]], set[Key]] | None = None
            ) -> set[Key]:
    """Hide more cells until no target is determined. Returns the targets that stay
    determined only through constants and fixed cells (nothing left to hide: the organisation
    can already compute them from what it holds, e.g. per-site values it receives exactly).

    A secondary cell widens its target's interval by about its own value (less 1, since a
    hidden count is known not to be 0): of the cells that would protect a target, the smallest
    of at least ``capacity`` is hidden, so that the target's interval reaches the protection
    level; failing one, the largest (sdcTable and tau-ARGUS ask the same of their patterns).
    ``narrow``: of the targets, those an identity holds within less than that level (called
    after ``equations``); they are protected further like determined ones."""
    targets = set(targets)
    unprotectable: set[Key] = set()
    for _ in range(max_rounds):
        eqs = equations()
        exposed = (determined(eqs, state, value, targets) & targets) - unprotectable
        if narrow is not None and not exposed:  # computable ones first, then too narrow
            exposed = narrow(targets) - unprotectable
        if not exposed:
            return unprotectable
        containing: dict[Key, set[int]] = defaultdict(set)
        for i, eq in enumerate(eqs):
            for k, _ in eq:
                containing[k].add(i)
        touched: set[int] = set()  # equations that got a new hidden cell this round
        for key in sorted(exposed, key=repr):
            if touched & containing[key]:
                continue  # may be protected already: ask again next round
            options = _options(key, eqs, containing, state)
            if not options:
                unprotectable.add(key)
                continue
            chosen = min(options, key=lambda k: _cost(value(k), capacity, repr(k)))
            hide(chosen)
            # Wait for the next round before protecting another cell of the same small
            # identity (one hidden cell may protect both); a long identity (an area's sum over
            # its sites) is rarely what determines a cell, and waiting on it costs a round each.
            touched |= {i for i in containing[chosen] if len(eqs[i]) <= SMALL}
    raise RuntimeError("linked suppression did not converge")


def _cost(value: float, capacity: float, name: str) -> tuple:
    """Which cell to hide first: not a zero (it widens nothing); then one of at least
    ``capacity``, the smallest such; else the largest below it."""
    wide = value >= capacity
    return (value == 0, not wide, value if wide else -value, name)
