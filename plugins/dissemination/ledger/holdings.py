"""What an organisation holds: the state every disclosure decision is judged against.

A package is never judged alone. An auditor at the receiving organisation holds every package
it ever received, under all its agreements and tiers, and joins them on the site key. So each
organisation has one state per country: every source column it holds, per level and round,
from the ledger (loaded once per run) plus everything this run has planned for it so far.
Relational rules are evaluated against that state whether or not the current round has every
member of the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Held:
    """One source column an organisation holds at one level of one round, and how it got it."""

    indicator: str
    level: str
    round_id: str
    via: str  # "delivered 2026-11-03 under unicef-nga" or "planned in this run for unicef-ssd"
    agreement_id: str = ""
    delivered: bool = True  # False: planned earlier in this run


@dataclass
class Holdings:
    """Everything one organisation holds for one country."""

    organisation: str  # the organisation's id
    name: str  # its display name, for explanations
    country: str
    items: list[Held] = field(default_factory=list)

    def add(self, held: Iterable[Held]) -> None:
        self.items.extend(held)

    def of(self, indicator: str) -> list[Held]:
        return [h for h in self.items if h.indicator == indicator]

    def finest(self, indicator: str, rank: Callable[[str], int]) -> Held | None:
        """The finest level at which the organisation holds the indicator (``rank``: higher is
        finer), the latest such holding if several."""
        held = self.of(indicator)
        return max(reversed(held), key=lambda h: rank(h.level)) if held else None


class DisclosureState:
    """One ``Holdings`` per organisation and country for a whole run: loaded from the ledger
    on first use, then extended with every delivery the run plans, across its rounds and
    agreements, so that two agreements of one organisation cannot split a combination."""

    def __init__(self, load: Callable[[str, str], Iterable[Held]] | None = None):
        self._load = load
        self._state: dict[tuple[str, str], Holdings] = {}

    def of(self, organisation: str, name: str, country: str) -> Holdings:
        key = (organisation, country)
        if key not in self._state:
            self._state[key] = Holdings(organisation, name, country,
                                        list(self._load(organisation, country))
                                        if self._load else [])
        return self._state[key]
