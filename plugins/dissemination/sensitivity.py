"""Decide, column by column, what a partner may receive, and say why.

Two steps, so a round is classified once however many partners there are:

1. ``classify_round`` (once per round): every column gets its classification from the country's
   effective rule set (contextual). A column no rule covers is Secret; free text is Secret unless
   a rule allows it. ``active_relational`` tells which relational rules the round's values
   trigger (a rule with ``when`` applies only if some site matches).
2. ``select_for_agreement`` (per agreement and urgency): keep the requested columns; when the
   tier aggregates, drop what only makes sense per site; apply the relational rules to what would
   really be shared, together with what the organisation already received (the ledger); drop
   whatever is Secret, outside the tier's categories, or above the agreement's ceiling.

Each decision carries the rule that made it, for the package's explanation and the task log.
Pure functions: column names, a few values and the policy in, decisions out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import pandas as pd

from . import normalise
from .classification import CATEGORIES_BY_URGENCY, Classification, Urgency
from .errors import PermanentError
from .policy import SITE, Agreement, RelationalRule, RuleSet

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
    """Names of the relational rules this round triggers: members present, ``when`` matched.

    ``df`` is a conformed round (``contract.conform``): its values are the declared ones, so the
    condition compares canonical values, whatever spelling the export used."""
    active = set()
    for rule in ruleset.relational:
        if not all(c in df.columns for c in rule.indicators):
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
    previously_shared: Mapping[str, Iterable[str]] | None = None,
) -> Selection:
    """Per-agreement selection.

    ``active``: relational rules the round triggers (None: all of them, the safe assumption).
    ``previously_shared``: level -> columns the same organisation already received for this
    country (from the ledger); a combination they complete counts as if it were in this package.
    """
    tier = agreement.tiers.get(urgency)
    requested = set(tier.indicators) if tier is not None else set()
    level = ruleset.resolve_level((tier.aggregate_to if tier is not None else None) or SITE)
    allowed_categories = CATEGORIES_BY_URGENCY[urgency]
    ceiling = agreement.max_classification
    active_rules = None if active is None else set(active)
    previous = {lvl: set(cols) for lvl, cols in (previously_shared or {}).items()}

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

    # Relational rules apply to the combination that would really be shared, here or together
    # with earlier deliveries. A combination whose level exceeds the ceiling is broken by
    # dropping its last-listed member in this package (rule files list the most useful first);
    # otherwise the members in this package are escalated.
    changed = True
    while changed:
        changed = False
        for rule in ruleset.relational:
            if active_rules is not None and rule.name not in active_rules:
                continue
            together = ruleset.relational_at(rule, level)
            if together is Classification.PUBLIC:
                continue
            earlier = _earlier(rule, ruleset, previous)
            here = [c for c in rule.indicators if c in candidates]
            if not here or not all(c in candidates or c in earlier for c in rule.indicators):
                continue
            partners = [c for c in rule.indicators if c != here[-1]]
            told = _together(partners, candidates, earlier)
            if ceiling < together:
                victim = here[-1]
                decided[victim] = replace(
                    candidates.pop(victim),
                    reason=f"relational rule {rule.name}: together with {told} it is "
                    f"{together.value} at {level} level, above the agreement's "
                    f"{ceiling.value}",
                    rule=_ref(ruleset, f"relational.{rule.name}"),
                )
                changed = True
                continue
            for c in here:
                if candidates[c].classification < together:
                    candidates[c] = replace(
                        candidates[c],
                        classification=together,
                        rule=_ref(ruleset, f"relational.{rule.name}"),
                        notes=candidates[c].notes + (
                            f"escalated to {together.value} by relational rule "
                            f"{rule.name} (with {_together([x for x in rule.indicators if x != c], candidates, earlier)})",
                        ),
                    )
                    changed = True

    for column, d in candidates.items():
        if ceiling < d.classification:
            decided[column] = replace(
                d, reason=f"{d.classification.value} is above the agreement's {ceiling.value}"
            )
        else:
            decided[column] = replace(d, shared=True, reason="shared")

    ordered = tuple(decided[c] for c in base)
    for d in ordered:
        if d.shared and d.classification is Classification.SECRET:
            raise SecretLeak(f"column {d.column!r} is Secret and was selected")
    exact = tuple(c for c in (tier.exact_counts if tier else ()) if c in candidates)
    return Selection(agreement.id, urgency, ordered, level, exact)


def _site_only(column: str, kind: str, ruleset: RuleSet, level: str) -> bool:
    if kind in SITE_KINDS:
        return True
    if kind == "admin":
        return column not in ruleset.level_columns(level)
    return False


def _earlier(rule: RelationalRule, ruleset: RuleSet, previous: Mapping[str, set[str]]) -> set:
    """Columns delivered earlier at levels where this rule is not yet safe."""
    cols: set[str] = set()
    for level, columns in previous.items():
        if ruleset.resolve_level(level) is None:
            continue
        if ruleset.relational_at(rule, level) is not Classification.PUBLIC:
            cols |= columns
    return cols


def _together(columns: list[str], candidates: Mapping, earlier: set[str]) -> str:
    return ", ".join(
        c if c in candidates else f"{c} (delivered earlier)" for c in columns if c
    ) or "itself"
