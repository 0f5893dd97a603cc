"""Urgent-action signals in a round: conditions the rule set names (e.g. unaccompanied children
per site above a threshold, or a jump since the previous round) that DTM's focal point must
hear about at once, and that start the medium-urgency path for the agreements covering them.

Messages carry counts of sites, never site-level values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from ..classification import Urgency
from ..delivery.notices import Email, signal_alert
from ..policy import Policy, RuleSet
from .contract import conform
from .reading import read_round
from .source import RoundMeta, previous_round_id


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


def signal_new_rounds(survey: sa.Engine, policy: Policy, new: Iterable[Mapping],
                      send: Callable[[Email], None],
                      say: Callable[[str], None] = print) -> list[dict]:
    """Read each new round's signals, alert DTM's focal point, and name who must hear at once.

    ``new``: the rounds intake found (round_id, country). A round with no rule set, or one that
    breaks its contract, is not read here: its dissemination run blocks it and says why. Returns
    one entry per signalled round (round_id, agreements, signal names) for the urgent path.
    """
    signalled = []
    for r in new:
        ruleset = policy.rulesets.get(r["country"])
        meta, df = read_round(survey, r["round_id"])
        round_ = conform(df, ruleset, first_row=1) if ruleset else None
        if round_ is None or round_.violations:
            say(f"{r['round_id']}: no signals read (no rule set, or it breaks its "
                "contract: the dissemination run blocks it and says why)")
            continue
        found = detect(round_.frame, ruleset, _previous_frame(survey, meta, ruleset))
        if not found:
            continue
        agreements = agreements_for_signals(policy, meta.country, found)
        for s in found:
            say(f"SIGNAL {r['round_id']}: {s.name}: {s.detail}")
        send(signal_alert(r["round_id"], found, agreements, policy.alert_to(meta.country)))
        signalled.append({"round_id": r["round_id"], "agreements": agreements,
                          "signals": [s.name for s in found]})
    return signalled


def _previous_frame(survey: sa.Engine, meta: RoundMeta, ruleset: RuleSet
                    ) -> pd.DataFrame | None:
    """The conformed round collected just before this one, for jumps; None if there is none.

    Conformed like the round itself, so a jump compares declared values, not spellings.
    """
    before = previous_round_id(survey, meta)
    return conform(read_round(survey, before)[1], ruleset, first_row=1).frame if before else None
