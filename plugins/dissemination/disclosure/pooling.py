"""Pooling: one protection decision per cell and round, shared by every holder.

Cluster members share what they receive. If each organisation got its own suppression pattern,
one's secondary blanks would be visible in another's package, and two pooling would recover
cells both were refused (issue #32, finding 5). So the round's decisions are made once: every
holder's tables are protected pooled, as one holder's, then each holder's alone (it may know
exactly what the others do not), until neither hides more. Every table then hides the same
cells, and a coalition holds no visible cell that the pooled protection did not allow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from ..classify.sensitivity import Selection
from ..policy import RuleSet
from .engine import Shared, build_contents
from .versions import Delivered

Part = tuple[Selection, np.ndarray | None]
#: Rounds of "pooled, then each alone" before giving up: each round only ever hides more,
#: and in practice the second adds nothing.
MAX_ROUNDS = 16


class NoSharedDecision(RuntimeError):
    """The pooled and the per-holder protections kept hiding more: a bug, never a policy
    outcome (each round only hides more cells, of which there are finitely many)."""


def shared_decisions(df: pd.DataFrame, holders: Sequence[tuple[Sequence[Part],
                                                                Sequence[Delivered]]],
                     ruleset: RuleSet) -> Shared:
    """The cells every holder's tables hide, for ``holders`` (each: its tables' parts and the
    tables it holds of linked rounds, as ``build_contents`` takes them). One holder alone
    shares with no one: nothing is decided for it here."""
    if len(holders) < 2:
        return Shared()
    parts = list({_part_key(p): p for parts, _ in holders for p in parts}.values())
    held = list({_held_key(d): d for _, tables in holders for d in tables}.values())
    hidden: frozenset = frozenset()
    for _ in range(MAX_ROUNDS):
        hidden = _blanks(build_contents(df, parts, ruleset, held, Shared(hidden, pooled=True)),
                         hidden)
        grown = hidden
        for own, tables in holders:
            grown = _blanks(build_contents(df, own, ruleset, tables, Shared(hidden)), grown)
        if grown == hidden:
            return Shared(hidden)
        hidden = grown
    raise NoSharedDecision(f"protection decisions did not settle in {MAX_ROUNDS} rounds")


def _blanks(contents, hidden: frozenset) -> frozenset:
    return hidden.union(*(c.blank_keys for c in contents))


def _part_key(part: Part) -> tuple:
    selection, rows = part
    return (replace(selection, agreement_id=""), None if rows is None else rows.tobytes())


def _held_key(table: Delivered) -> tuple:
    return (id(table.round), replace(table.selection, agreement_id=""),
            None if table.rows is None else table.rows.tobytes(),
            tuple((c, h.tobytes()) for c, h in sorted(table.hidden.items())))
