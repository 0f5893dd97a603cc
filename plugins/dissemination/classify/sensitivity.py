"""Decide, column by column, what a partner may receive, and say why.

Two steps, so a round is classified once however many partners there are:

1. ``classify_round`` (once per round): every column gets its classification from the country's
   effective rule set (contextual). A column no rule covers is Secret; free text is Secret unless
   a rule allows it. ``active_relational`` tells which relational rules the round's values
   trigger (a rule with ``when`` applies only if some site matches).
2. ``select_for_agreement`` (per agreement and urgency): keep the requested columns; when the
   tier aggregates, drop what only makes sense per site; apply the relational rules to what would
   really be shared, together with everything the organisation holds (``holdings``); drop
   whatever is Secret, outside the tier's categories, or above the agreement's ceiling.

Each decision carries the rule that made it, for the package's explanation and the task log.
Pure functions: column names, a few values and the policy in, decisions out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import pandas as pd

from .. import normalise
from ..classification import CATEGORIES_BY_URGENCY, Classification, Urgency
from ..errors import PermanentError
from ..ledger.holdings import Held, Holdings
from ..policy import SITE, Agreement, RuleSet

UNCOVERED = "default: no rule covers this column"
#: Kinds that describe one site; they cannot survive aggregation to an admin level.
SITE_KINDS = frozenset({"key", "coordinate", "date", "text", "personal"})


@dataclass(frozen=True)
class ColumnDecision:
    column: str
    classification: Classification
    rule: str
    shared: bool = False
    reason: str = ""
    notes: tuple[str, ...] = ()  # escalations and the like, for the explanation


class SecretLeak(PermanentError, AssertionError):
    """Raised if a Secret column ever reaches a package; a bug, never a policy outcome."""


def _ref(ruleset: RuleSet, what: str) -> str:
    return f"rules/{ruleset.country} v{ruleset.version}: {what}"


def classify_round(columns: Iterable[str], ruleset: RuleSet) -> dict[str, ColumnDecision]:
    """Base classification of every column of a round under one country's rule set."""
    decisions = {}
    for column in columns:
        rule = ruleset.indicators.get(column)
        if rule is None:
            decisions[column] = ColumnDecision(column, Classification.SECRET, UNCOVERED)
        elif rule.kind == "text" and not rule.allow_free_text:
            decisions[column] = ColumnDecision(
                column, Classification.SECRET,
                _ref(ruleset, f"indicators.{column} (free text without allow_free_text)"))
        else:
            decisions[column] = ColumnDecision(
                column, rule.classification, _ref(ruleset, f"indicators.{column}"))
    return decisions


def active_relational(df: pd.DataFrame, ruleset: RuleSet) -> frozenset[str]:
    """Names of the relational rules that may apply to this round: ``when`` matched by some
    site, or not decidable from this round (a ``when`` column is absent, yet the organisation
    may hold it from another round). A rule with members absent here still needs them from
    what the organisation holds before it changes anything (``select_for_agreement``).

    ``df`` is a conformed round (``contract.conform``): its values are the declared ones, so the
    condition compares canonical values, whatever spelling the export used."""
    active = set()
    for rule in ruleset.relational:
        if not all(c in df.columns for c in rule.when):
            active.add(rule.name)
            continue
        match = pd.Series(True, index=df.index)
        for column, values in rule.when.items():
            declared = ruleset.indicators[column].canonical
            wanted = [declared[normalise.token(v)] for v in values]
            match &= df[column].astype("string").isin(wanted).fillna(False)
        if bool(match.any()):
            active.add(rule.name)
    return frozenset(active)


@dataclass(frozen=True)
class Selection:
    """What one agreement receives from one round: shared columns in round order, and why."""

    agreement_id: str
    urgency: Urgency
    decisions: tuple[ColumnDecision, ...]
    level: str = SITE  # "site" or the admin level the tier aggregates to
    exact_counts: tuple[str, ...] = field(default_factory=tuple)

    @property
    def columns(self) -> list[str]:
        return [d.column for d in self.decisions if d.shared]

    @property
    def shared(self) -> list[ColumnDecision]:
        return [d for d in self.decisions if d.shared]


def select_for_agreement(
    base: Mapping[str, ColumnDecision],
    ruleset: RuleSet,
    agreement: Agreement,
    urgency: Urgency,
    *,
    active: Iterable[str] | None = None,
    held: Holdings | None = None,
) -> Selection:
    """Per-agreement selection.

    ``active``: relational rules the round triggers (None: all of them, the safe assumption).
    ``held``: what the agreement's organisation already holds for this country (the ledger and
    this run's earlier plans); a combination completed with it counts as if it were in this
    package, and a rule with a held member is judged even if this round does not trigger it.
    """
    tier = agreement.tiers.get(urgency)
    level = ruleset.resolve_level((tier.aggregate_to if tier is not None else None) or SITE)
    decided, candidates = _screen(base, ruleset, urgency, tier, level)
    # Relational rules apply to the combination the organisation would really hold: this
    # package together with everything it already holds, and whatever an additive group gives
    # back from both (a total from its parts, a part from its total and the other parts). The
    # combination is as coarse as its coarsest member (each member taken at the finest level
    # held). Above the ceiling, it is broken by withholding its last-listed member in this
    # package (rule files list the most useful first), or a column it comes back from;
    # otherwise the members in this package, or the columns they come back from, are escalated.
    rank = _ranker(ruleset)
    holding = {c: h for c in _named_columns(ruleset) if held and (h := held.finest(c, rank))}
    scope = _Scope(ruleset, level, agreement.max_classification,
                   None if active is None else set(active), held, holding, rank)
    while _relational_pass(scope, decided, candidates):
        pass
    _settle(scope, decided, candidates)
    ordered = tuple(decided[c] for c in base)
    _refuse_secret(ordered)
    exact = tuple(c for c in (tier.exact_counts if tier else ()) if c in candidates)
    return Selection(agreement.id, urgency, ordered, level, exact)


def _screen(base: Mapping[str, ColumnDecision], ruleset: RuleSet, urgency: Urgency,
            tier, level: str) -> tuple[dict[str, ColumnDecision], dict[str, ColumnDecision]]:
    """Split the round's columns into those decided before any relational rule and candidates.

    Secret, unrequested, disallowed-category and site-only columns never reach the relational
    rules, so each is decided here with the first reason that applies, in that order.
    """
    requested = set(tier.indicators) if tier is not None else set()
    allowed_categories = CATEGORIES_BY_URGENCY[urgency]
    decided: dict[str, ColumnDecision] = {}
    candidates: dict[str, ColumnDecision] = {}
    for column, d in base.items():
        rule = ruleset.indicators.get(column)
        if d.classification is Classification.SECRET:
            decided[column] = replace(d, reason="Secret never leaves")
        elif column not in requested:
            decided[column] = replace(d, reason=f"not in the agreement's {urgency.value} tier")
        elif rule is None or rule.category not in allowed_categories:
            category = rule.category.value if rule else "none"
            decided[column] = replace(
                d, reason=f"dissemination category {category!r} not allowed at {urgency.value}"
            )
        elif level != SITE and _site_only(column, rule.kind, ruleset, level):
            decided[column] = replace(
                d, reason=f"site-level column, dropped by aggregation to {level}")
        else:
            candidates[column] = d
    return decided, candidates


@dataclass(frozen=True)
class _Scope:
    """What stays fixed while the relational rules are applied to one agreement's package."""

    ruleset: RuleSet
    level: str
    ceiling: Classification
    active_rules: set[str] | None
    held: Holdings | None
    holding: dict[str, Held]
    rank: Callable[[str], int]


def _relational_pass(scope: _Scope, decided: dict, candidates: dict) -> bool:
    """Apply every relational rule once; True if the package changed.

    A withheld column changes what comes back from the package, so the pass stops there and
    the caller starts over until nothing changes (a fixed point).
    """
    changed = False
    given_back = _implied(set(candidates) | set(scope.holding), scope.ruleset)
    for rule in scope.ruleset.relational:
        before = {c: scope.holding[c] for c in rule.indicators if c in scope.holding}
        if scope.active_rules is not None and rule.name not in scope.active_rules and not before:
            continue
        # each member's columns in this package: itself, or those it comes back from
        from_here = {c: ({c} if c in candidates else set()) | (
            given_back.get(c, set()) & set(candidates)) for c in rule.indicators}
        here = [c for c in rule.indicators if from_here[c]]
        if not here or not all(c in candidates or c in before or c in given_back
                               for c in rule.indicators):
            continue
        finest = {c: _finest(c, scope.level, candidates, scope.holding, given_back, scope.rank)
                  for c in rule.indicators}
        combined = min(finest.values(), key=scope.rank)
        together = scope.ruleset.relational_at(rule, combined)
        if together is Classification.PUBLIC:
            continue
        if scope.ceiling < together:
            above = (f"{together.value} at {combined} level, above the "
                     f"agreement's {scope.ceiling.value}")
            _withhold_one(scope, rule, here, from_here, before, above, decided, candidates)
            return True
        changed = _escalate(scope, rule, here, from_here, before, together,
                            candidates) or changed
    return changed


def _withhold_one(scope: _Scope, rule, here: list[str], from_here: dict, before: dict,
                  above: str, decided: dict, candidates: dict) -> None:
    """Break a combination above the ceiling by withholding its last-listed member here.

    Rule files list the most useful member first; a member that only comes back from this
    package is broken by withholding a column it comes back from.
    """
    victim = here[-1]
    others = [c for c in rule.indicators if c != victim]
    why = _withheld(rule.name, victim, others, candidates, before, scope.held, above)
    if victim not in candidates:  # it comes back from columns of this package
        source = _giving_back(from_here[victim], scope.ruleset)
        why = f"would give back {victim} ({_sums(victim, scope.ruleset)}); {why}"
        victim = source
    decided[victim] = replace(candidates.pop(victim), reason=why,
                              rule=_ref(scope.ruleset, f"relational.{rule.name}"))


def _escalate(scope: _Scope, rule, here: list[str], from_here: dict, before: dict,
              together: Classification, candidates: dict) -> bool:
    """Raise the members here (or the columns they come back from) to the combination's class.

    True if any column was raised, so the caller knows the package changed.
    """
    changed = False
    for member in here:
        for c in sorted(from_here[member]):
            if candidates[c].classification < together:
                others = [x for x in rule.indicators if x != member]
                via = "" if c == member else f" through {member}, which it gives back"
                candidates[c] = replace(
                    candidates[c],
                    classification=together,
                    rule=_ref(scope.ruleset, f"relational.{rule.name}"),
                    notes=candidates[c].notes + (
                        f"escalated to {together.value} by relational rule "
                        f"{rule.name}{via} (with {_together(others, candidates, before)})",
                    ),
                )
                changed = True
    return changed


def _settle(scope: _Scope, decided: dict, candidates: dict) -> None:
    """Withhold what is above the ceiling or adds back to it, and share the rest.

    Runs after the relational rules, since escalation may have lifted a column above the
    agreement's ceiling.
    """
    for column, d in list(candidates.items()):
        if scope.ceiling < d.classification:
            decided[column] = replace(
                candidates.pop(column),
                reason=f"{d.classification.value} is above the agreement's "
                       f"{scope.ceiling.value}")
    _withhold_what_adds_back(decided, candidates, scope.ruleset, scope.ceiling,
                             set(scope.holding))
    for column, d in candidates.items():
        decided[column] = replace(d, shared=True, reason="shared")


def _refuse_secret(ordered: tuple[ColumnDecision, ...]) -> None:
    """Raise if a Secret column was selected.

    A last guard independent of the steps above: a Secret column shipped is a bug, never policy.
    """
    for d in ordered:
        if d.shared and d.classification is Classification.SECRET:
            raise SecretLeak(f"column {d.column!r} is Secret and was selected")


def _site_only(column: str, kind: str, ruleset: RuleSet, level: str) -> bool:
    if kind in SITE_KINDS:
        return True
    if kind == "admin":
        return column not in ruleset.level_columns(level)
    return False


def _withhold_what_adds_back(decided: dict, candidates: dict, ruleset: RuleSet,
                             ceiling: Classification, holding: set[str]) -> None:
    """A column the agreement may not have (Secret, above its ceiling, or withheld by a
    relational rule; also one the round lacks, whose values its additive group still holds)
    must not come back as a sum or difference of what the organisation would hold: this
    package and its holdings, at the coarsest level of the columns it comes back from (a
    state's total minus the state's women summed from site rows is the state's men), and
    whatever their round (as relational rules judge holdings). While it would, withhold one
    more of the columns it comes back from in this package (its total, or its last part)."""
    members = {m for g in ruleset.additive for m in (g.total, *g.parts)}
    protected = [m for m in sorted(members) if _denied(m, decided, ruleset, ceiling)]
    for p in protected:
        while sources := _implied(set(candidates) | (holding - {p}), ruleset).get(p):
            if not (here := sources & set(candidates)):
                break  # it comes back from holdings alone: no package of this run gave it
            extra = _giving_back(here, ruleset)
            decided[extra] = replace(
                candidates.pop(extra),
                reason=f"withheld with {p}: {_sums(p, ruleset)} would give it back",
                rule=decided[p].rule if p in decided else _ref(ruleset, f"indicators.{p}"))


def _denied(column: str, decided: Mapping, ruleset: RuleSet, ceiling: Classification) -> bool:
    if column in decided:
        d = decided[column]
        return ceiling < d.classification or "relational." in d.rule.split(": ", 1)[-1]
    rule = ruleset.indicators.get(column)
    return rule is None or ceiling < rule.classification


def _named_columns(ruleset: RuleSet) -> set[str]:
    """The columns whose holdings selection reads: relational members and additive groups."""
    return ({c for r in ruleset.relational for c in r.indicators}
            | {m for g in ruleset.additive for m in (g.total, *g.parts)})


def _implied(known: set[str], ruleset: RuleSet) -> dict[str, set[str]]:
    """What the additive groups give back from ``known`` columns, each with the known columns
    it comes from: a total from all its parts, a part from its total and the other parts,
    repeated (a group's result may complete another)."""
    sources = {c: {c} for c in known}
    changed = True
    while changed:
        changed = False
        for group in ruleset.additive:
            members = (group.total, *group.parts)
            missing = [m for m in members if m not in sources]
            if len(missing) == 1:
                sources[missing[0]] = set().union(*(sources[m] for m in members
                                                    if m != missing[0]))
                changed = True
    return {c: s for c, s in sources.items() if c not in known}


def _giving_back(columns: set[str], ruleset: RuleSet) -> str:
    """Of the columns something comes back from, the one to withhold: a total if one is among
    them (parts are the finer, more useful data), else the last-listed part."""
    order = [m for g in ruleset.additive for m in (g.total, *g.parts)]
    totals = {g.total for g in ruleset.additive}
    return max(columns, key=lambda c: (c in totals, order.index(c)))


def _sums(column: str, ruleset: RuleSet) -> str:
    """The additive equation(s) a column appears in, as the explanation shows them."""
    return "; ".join(f"{g.total} = {' + '.join(g.parts)}" for g in ruleset.additive
                     if column in (g.total, *g.parts))


def _finest(column: str, level: str, candidates: Mapping, holding: Mapping[str, Held],
            given_back: Mapping[str, set[str]], rank) -> str:
    """The finest level at which the organisation would hold ``column``: in this package, in
    its holdings, or given back by an additive group as coarse as the coarsest column it
    comes from."""
    levels = ([level] if column in candidates else []) + (
        [holding[column].level] if column in holding else [])
    if column in given_back:
        levels.append(min((_finest(c, level, candidates, holding, {}, rank)
                           for c in given_back[column]), key=rank))
    return max(levels, key=rank)


def _ranker(ruleset: RuleSet) -> Callable[[str], int]:
    """Finer levels rank higher; a level the rule set no longer knows counts as site level."""
    site = ruleset.level_rank(SITE)
    return lambda level: ruleset.level_rank(level) if ruleset.resolve_level(level) else site


def _held_text(h: Held) -> str:
    return f"{h.indicator}: round {h.round_id}, level {h.level}, {h.via}"


def _withheld(rule: str, victim: str, others: list[str], candidates: Mapping,
              before: Mapping[str, Held], held: Holdings | None, why: str) -> str:
    outside = [before[c] for c in others if c not in candidates and c in before]
    if outside and held is not None:
        return (f"withheld: would complete {rule} with what {held.name} already holds ("
                + "; ".join(_held_text(h) for h in outside) + f"): {why}")
    return f"relational rule {rule}: together with {_together(others, candidates, before)} " \
        f"it is {why}"


def _together(columns: list[str], candidates: Mapping, before: Mapping[str, Held]) -> str:
    return ", ".join(
        c if c in candidates else f"{c} (held: round {before[c].round_id}, {before[c].level})"
        for c in columns if c in candidates or c in before
    ) or "itself"
