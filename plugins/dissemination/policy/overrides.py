"""What a country does with what it inherits from rules/default.yaml: keep, retune or drop.

A country's file adds and tightens freely. Retuning an inherited entry (an urgent signal, a
relational rule or an additive group of the same name) the looser way, or dropping one, is
allowed as loosening an indicator is: with a stated reason (``loosens_default`` on the entry,
or ``drops_default``), which ``check`` and the Dissemination page report. The default's "more
than 10 unaccompanied children at a site" fired on every round of a country with large sites,
cleaned rounds included, and started an urgent run each time: that country may now say 50, and
why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import Field

from .base import ColumnName, Identifier, PolicyModel

Reason = Annotated[str, Field(min_length=1)]


class DefaultDrops(PolicyModel):
    """``drops_default`` in a country's file: what of the default it does without, and why."""

    indicators: dict[ColumnName, Reason] = Field(default_factory=dict)
    urgent_signals: dict[Identifier, Reason] = Field(default_factory=dict)
    relational: dict[Identifier, Reason] = Field(default_factory=dict)
    additive: dict[ColumnName, Reason] = Field(default_factory=dict)  # by its total

#: The inherited lists, each entry named by a field of its own.
KEYS = {"urgent_signals": "name", "relational": "name", "additive": "total"}


def _plain(entry: Any) -> dict:
    return entry.model_dump(exclude={"loosens_default"})


def signal_change(old: Any, new: Any) -> str | None:
    """How an urgent signal is retuned, if it may now fire less often (else None: a lower
    threshold on the same count needs no reason)."""
    def test(s: Any, indicator: bool) -> str:
        return (f"{s.indicator} " if indicator else "") + (
            f"above {s.above}" if s.above is not None else f"jump {s.jump}")

    same_test = new.indicator == old.indicator and (new.above is None) == (old.above is None)
    if same_test and (new.above or new.jump) <= (old.above or old.jump):
        return None
    named = new.indicator != old.indicator
    return f"{test(old, named)} -> {test(new, named)}, firing less often than the default's"


def _any_change(old: Any, new: Any) -> str:
    return "replaces the default's entry of that name"


CHANGES: dict[str, Callable[[Any, Any], str | None]] = {
    "urgent_signals": signal_change, "relational": _any_change, "additive": _any_change}


def inherit(field: str, inherited: Sequence[Any], own: Sequence[Any],
            drops: Mapping[str, str], country: str) -> tuple[tuple, list[str], list[str]]:
    """The effective entries of ``field``: the default's in order (dropped or retuned as the
    country says), then the country's new ones; the problems (``field.name: message``), and the
    reasons to report."""
    key = KEYS[field]
    problems, reported = [], []
    mine: dict[str, Any] = {}
    for entry in own:
        name = getattr(entry, key)
        if name in mine:
            problems.append(f"{field}: {name!r} is listed twice in this file")
        mine[name] = entry
    out = []
    for entry in inherited:
        name = getattr(entry, key)
        if name in drops:
            if name in mine:
                problems.append(f"{field}.{name}: both dropped (drops_default) and retuned here")
            reported.append(f"{country}: drops {field}.{name} of the default ({drops[name]})")
            continue
        new = mine.pop(name, None)
        if new is None or _plain(new) == _plain(entry):
            out.append(new or entry)
            continue
        change = CHANGES[field](entry, new)
        if change and new.loosens_default is None:
            problems.append(f"{field}.{name}: {change} (rules/default.yaml); set "
                            "loosens_default: <reason> if that is intended")
        elif change:
            reported.append(f"{country}: {field}.{name}: {change} ({new.loosens_default})")
        out.append(new)
    problems += [f"drops_default.{field}.{name}: rules/default.yaml has no such entry"
                 for name in drops if name not in {getattr(e, key) for e in inherited}]
    return tuple(out) + tuple(mine.values()), problems, reported


def drop_indicators(indicators: dict, drops: Mapping[str, str], patched: Sequence[str],
                    country: str) -> tuple[list[str], list[str]]:
    """Remove the default's indicators a country drops (an unmatched column is then Secret,
    dropped unread); the problems and the reasons to report."""
    problems, reported = [], []
    for name, reason in drops.items():
        if name in patched:
            problems.append(f"indicators.{name}: both dropped (drops_default) and set here")
        elif indicators.pop(name, None) is None:
            problems.append(f"drops_default.indicators.{name}: rules/default.yaml has no such "
                            "indicator")
        else:
            reported.append(f"{country}: drops indicator {name} of the default ({reason})")
    return problems, reported
