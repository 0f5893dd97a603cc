"""Urgent-action signals in a round: conditions the rule set names (e.g. unaccompanied children
per site above a threshold, or a jump since the previous round) that DTM's focal point must
hear about at once, and that start the medium-urgency path for the agreements covering them.

Messages carry counts of sites, never site-level values.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .classification import Urgency
from .policy import Policy, RuleSet


@dataclass(frozen=True)
class Signal:
    name: str
    indicator: str
    sites: int
    detail: str


def detect(df: pd.DataFrame, ruleset: RuleSet, previous: pd.DataFrame | None = None
           ) -> list[Signal]:
    """Signals in a conformed round (and its conformed previous round, for jumps)."""
    key = ruleset.site_key
    found = []
    for s in ruleset.urgent_signals:
        if s.indicator not in df.columns:
            continue
        values = pd.to_numeric(df[s.indicator], errors="coerce")
        if s.above is not None:
            n = int((values > s.above).sum())
            detail = f"{n} site(s) with {s.indicator} above {s.above}"
        else:
            if previous is None or s.indicator not in previous.columns or key not in df.columns:
                continue
            before = pd.to_numeric(
                previous.set_index(key)[s.indicator], errors="coerce").reindex(df[key])
            n = int(((values.to_numpy() - before.to_numpy()) > s.jump).sum())
            detail = f"{n} site(s) where {s.indicator} rose by more than {s.jump} " \
                     "since the previous round"
        if n:
            found.append(Signal(s.name, s.indicator, n, detail))
    return found


def agreements_for_signals(policy: Policy, country: str, signals: list[Signal]) -> list[str]:
    """Agreements whose medium tier covers the signalled indicators."""
    wanted = {s.indicator for s in signals}
    return [a.id for a in policy.agreements_for(country, Urgency.MEDIUM)
            if wanted & set(a.tiers.medium.indicators)]
