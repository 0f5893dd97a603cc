"""Linkage across versions: tables of another export of a round, held by the organisation.

A round is delivered raw (partial) and cleaned, and exported again under the same id. Where a
value did not change, the organisation may take the two cells for one number and difference
one table against the other. ``Versions`` puts every version's sites in one space of
positions, so a cell unchanged between versions is one unknown, a changed one two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..classify.sensitivity import Selection
from ..errors import PermanentError
from .content import SITES
from .primary import Table


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



class Versions:
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

    def value(self, v: int, q: str, site: int) -> float:
        """Version ``v``'s value of ``q`` at a site (inf: not in it; NaN: empty)."""
        return float(self._values_cached(v, q)[site])

    def key(self, v: int, q: str, support):
        u = self.first(v, q, support)
        return (q, support) if not u else ((u, q), support)


def _round_of(frame: pd.DataFrame) -> str:
    ids = frame["round_id"].unique()[:1] if "round_id" in frame else []
    return str(ids[0]) if len(ids) else "(unnamed)"


def quantity_of(key) -> tuple[int, str]:
    """A cell key's version and quantity."""
    q = key[0]
    return q if isinstance(q, tuple) else (0, q)



def differs(versions: Versions | None, coarse: Table, fine: Table):
    """For a site-level ``fine`` of another version than ``coarse``: per (quantity, sites),
    where ``fine``'s value is not ``coarse``'s version's (there, it is an unknown)."""
    if versions is None or coarse.version == fine.version:
        return None

    def differs(q: str, sites: np.ndarray) -> np.ndarray:
        first = versions.sites(q)
        return first[coarse.version, sites] != first[fine.version, sites]
    return differs

