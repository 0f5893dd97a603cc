"""Medium urgency's deadlines: met, missed, at risk or pending."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..classification import Urgency
from ..errors import PermanentError
from ..intake.source import RoundMeta
from ..ledger.store import Ledger
from ..policy import Policy


@dataclass(frozen=True)
class DeadlineState:
    round_id: str
    country: str
    agreement_id: str
    deadline: datetime
    state: str  # met | missed | at_risk | pending
    detail: str = ""


class DeadlinesMissed(PermanentError, RuntimeError):
    def __init__(self, states: list[DeadlineState]):
        self.states = states
        super().__init__(f"{len(states)} urgent window(s) missed: " + "; ".join(
            f"{s.round_id} -> {s.agreement_id} ({s.detail})" for s in states))


def deadline_states(policy: Policy, rounds: Sequence[RoundMeta], ledger: Ledger, now: datetime,
                    at_risk: float = 0.25) -> list[DeadlineState]:
    """Where each partial round stands against each covering agreement's window.

    ``at_risk``: not delivered with less than this fraction of the window left.
    """
    states = []
    for meta in rounds:
        for agreement in policy.agreements_for(meta.country, Urgency.MEDIUM):
            if not agreement.is_active(now.date()):
                continue
            window = timedelta(hours=agreement.tiers.medium.window_hours)
            deadline = meta.collected_at + window
            done = ledger.find(agreement.id, meta.round_id, Urgency.MEDIUM.value)
            if done is not None:
                late = done.delivered_at - deadline
                state = "met" if late <= timedelta(0) else "missed"
                detail = f"delivered {done.delivered_at:%Y-%m-%d %H:%M} UTC" + (
                    f", {late} late" if state == "missed" else "")
            elif now > deadline:
                state, detail = "missed", f"not delivered, {now - deadline} past the window"
            elif deadline - now <= window * at_risk:
                state, detail = "at_risk", f"not delivered, {deadline - now} left"
            else:
                state, detail = "pending", f"{deadline - now} left"
            states.append(DeadlineState(meta.round_id, meta.country, agreement.id, deadline,
                                        state, detail))
    return states
