"""Cell-key perturbation of area counts (the ONS Census 2021 / ABS method), not yet wired in.

Each site gets a fixed secret record key; an area cell's key is the sum of its sites' keys
modulo ``KEY_RANGE``; a published perturbation table maps (count, key bucket) to the noise to
add. The same set of sites therefore always gets the same noise, in every table, version, round
and package, so pooling copies reveals nothing; two cells whose site sets differ get keys that
differ by a secret uniform amount, so subtracting them yields noise, not a site (issue 32,
findings 1 and 2). See docs/decisions/0009-cell-key-perturbation.md.

Keys are integers in ``[0, 2**32)``, not floats in ``[0, 1)``: an integer sum modulo ``2**32``
is exact and independent of order and platform, whereas float sums round differently with the
order of the sites, which would break "same sites, same key".

The table follows the ptable construction (Giessing 2016; R package ``ptable``): row ``i`` is
the maximum-entropy distribution of the perturbation ``d`` over the allowed targets
``i + d``, with mean 0 and variance ``V`` where feasible. It departs from ``ptable`` in one
respect the issue asks for: a positive count never becomes 0, as well as never ``1..js``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

KEY_RANGE = 2**32
BUCKETS = 256


@dataclass(frozen=True)
class PerturbationTable:
    """A published perturbation table: ``rows[min(count, cap)][bucket]`` is the noise to add.

    Publishing it costs nothing: without the sites' secret keys nobody knows a cell's bucket.
    """

    d: int
    v: float
    js: int
    cap: int
    buckets: int
    rows: tuple[tuple[int, ...], ...]

    def noise(self, count: int, key: int) -> int:
        """The perturbation for ``count`` in a cell whose key is ``key``."""
        return self.rows[min(count, self.cap)][key * self.buckets // KEY_RANGE]


def site_keys(secret: bytes, site_ids: Iterable[object], country: str = "") -> dict[str, int]:
    """Each site's record key: HMAC-SHA256 of (country, site id) under DTM's secret.

    The key is fixed for a site across rounds, so an unchanged cell keeps its noise; without the
    secret (kept by DTM, never shipped) nobody can compute it or a cell's bucket.
    """
    if not secret:
        raise ValueError("the cell-key secret is empty")
    keys = {}
    for site in site_ids:
        message = f"{country}\x1f{site}".encode()
        digest = hmac.new(secret, message, hashlib.sha256).digest()
        keys[str(site)] = int.from_bytes(digest[:4], "big")
    return keys


def cell_key(keys: Iterable[int]) -> int:
    """The ABS cell key: the sum of the cell's record keys modulo ``KEY_RANGE``.

    Two cells whose site sets differ have keys that differ by the (secret, uniform) keys of the
    sites in which they differ, so their buckets are unrelated to anyone without the secret.
    """
    return sum(keys) % KEY_RANGE


def _max_entropy(steps: np.ndarray, variance: float) -> np.ndarray:
    """The maximum-entropy distribution on ``steps`` with mean 0 and ``variance``.

    It has the form ``p(d) ~ exp(a d + b d^2)``; Newton's method on the convex dual finds a, b.
    """
    moments = np.array([0.0, variance])
    features = np.stack([steps, steps**2]).astype(float)
    theta = np.zeros(2)
    for _ in range(200):
        logits = theta @ features
        p = np.exp(logits - logits.max())
        p /= p.sum()
        gradient = features @ p - moments
        if np.abs(gradient).max() < 1e-12:
            break
        centred = features - (features @ p)[:, None]
        hessian = (centred * p) @ centred.T + 1e-12 * np.eye(2)
        theta -= np.linalg.solve(hessian, gradient)
    return p


def _row_distribution(count: int, d: int, v: float, js: int) -> tuple[np.ndarray, np.ndarray]:
    """Allowed perturbations of ``count`` and their probabilities (the documented construction).

    0 stays 0. A positive count goes to ``max(js + 1, count - d) .. count + d``. Counts 1..js
    cannot stay unbiased (every target lies above them): they go uniformly to their targets.
    Otherwise the mean is 0 and the variance ``min(v, m * d / 2)``, where ``m`` is how far the
    count may go down: ``v`` itself whenever ``v < m * d / 2``, and 0 (stay) when ``m = 0``.
    """
    if count == 0:
        return np.array([0]), np.array([1.0])
    low = max(js + 1, count - d)
    steps = np.arange(low - count, d + 1)
    if count <= js:
        return steps, np.full(len(steps), 1.0 / len(steps))
    down = count - low
    if down == 0:
        return np.array([0]), np.array([1.0])
    return steps, _max_entropy(steps, min(v, down * d / 2))


def _unbiased_counts(steps: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Move single buckets one step towards 0 until the row's bucket mean is exactly 0.

    Rounding probabilities to whole buckets leaves a small bias; each move changes the sum of
    the perturbations by 1, so at most a few moves restore mean 0 without changing the support.
    """
    counts = counts.copy()
    total = int(steps @ counts)
    while total != 0:
        # take from the outermost populated step on the side carrying the excess
        side = np.flatnonzero((counts > 0) & (np.sign(steps) == np.sign(total)))
        at = int(side[-1] if total > 0 else side[0])
        counts[at] -= 1
        counts[at - 1 if total > 0 else at + 1] += 1
        total -= int(np.sign(total))
    return counts


def _bucket_row(steps: np.ndarray, probabilities: np.ndarray, buckets: int,
                unbiased: bool) -> tuple[int, ...]:
    """The row's perturbation per key bucket: intervals of the key range by cumulative probability.

    Whole buckets are allotted by largest remainder (deterministic, ties to the smaller step),
    then, where the row is unbiased, repaired to a bucket mean of exactly 0.
    """
    exact = probabilities * buckets
    counts = np.floor(exact).astype(int)
    remainder = exact - counts
    order = sorted(range(len(steps)), key=lambda k: (-remainder[k], abs(steps[k]), steps[k]))
    for k in order[: buckets - int(counts.sum())]:
        counts[k] += 1
    if unbiased:
        counts = _unbiased_counts(steps, counts)
    return tuple(int(s) for s, c in zip(steps, counts, strict=True) for _ in range(c))


def perturbation_table(d: int = 3, v: float = 2.0, js: int = 1, cap: int | None = None,
                       buckets: int = BUCKETS) -> PerturbationTable:
    """The perturbation table for maximum noise ``d``, variance ``v`` and threshold ``js``.

    Rows ``0..cap`` are built; larger counts use row ``cap``. By default ``cap = d + js + 1``,
    the first count whose row is unrestricted (symmetric), as in ``ptable``.
    """
    if d < 1 or js < 0 or not 0 < v < d * d:
        raise ValueError(f"need d >= 1, js >= 0 and 0 < v < d**2; got d={d}, v={v}, js={js}")
    cap = d + js + 1 if cap is None else cap
    if cap < d + js + 1:
        raise ValueError(f"cap {cap} is below d + js + 1 = {d + js + 1}: larger counts would "
                         "use a restricted row")
    rows = []
    for count in range(cap + 1):
        steps, probabilities = _row_distribution(count, d, v, js)
        rows.append(_bucket_row(steps, probabilities, buckets, unbiased=count > js))
    return PerturbationTable(d=d, v=v, js=js, cap=cap, buckets=buckets, rows=tuple(rows))


def distribution(table: PerturbationTable, count: int) -> dict[int, float]:
    """The perturbation of ``count`` over uniform cell keys: step -> probability."""
    row = table.rows[min(count, table.cap)]
    return {int(s): row.count(s) / len(row) for s in sorted(set(row))}


def perturb(count: int, key: int, table: PerturbationTable) -> int:
    """``count`` as published: the count plus its perturbation for the cell key ``key``."""
    if count < 0:
        raise ValueError(f"a count is not negative: {count}")
    return count + table.noise(count, key)


def perturb_cells(counts: Sequence[int], site_sets: Sequence[Iterable[object]], secret: bytes,
                  table: PerturbationTable, country: str = "") -> list[int]:
    """Perturbed counts of area cells, each given with the set of sites it aggregates.

    A count of sites with a property aggregates the sites that have it; a total over sites
    aggregates the sites that contribute. Duplicate ids count once: a cell is a set of sites.
    """
    if len(counts) != len(site_sets):
        raise ValueError(f"{len(counts)} counts but {len(site_sets)} site sets")
    sets = [frozenset(str(s) for s in sites) for sites in site_sets]
    keys = site_keys(secret, sorted(frozenset().union(*sets)), country)
    return [perturb(count, cell_key(keys[s] for s in sites), table)
            for count, sites in zip(counts, sets, strict=True)]


def bound(table: PerturbationTable) -> int:
    """The largest absolute perturbation the table can add (what the manifest states)."""
    return max(abs(step) for row in table.rows for step in row)


def bounds_by_count(table: PerturbationTable) -> Mapping[int, tuple[int, int]]:
    """Per table row, the smallest and largest perturbation: for a manifest's finer statement."""
    return {count: (min(row), max(row)) for count, row in enumerate(table.rows)}
