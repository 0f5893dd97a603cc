"""include/rules/<ISO3>.yaml and rules/default.yaml: a country's rule set and round contract.

Sensitivity is contextual (one file per country, over a global default), temporal (the risk
assessment's date and review interval) and relational (indicator combinations that escalate).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from ..classification import Classification, DisseminationCategory
from .base import ColumnName, CountryCode, Identifier, PolicyModel

# --- rules -------------------------------------------------------------------------------------

Kind = Literal[
    "round", "key", "admin", "date", "coordinate", "count", "categorical", "flag", "text",
    "personal",
]
SITE = "site"  # the finest level: one row per site


class IndicatorRule(PolicyModel):
    """One column of a round: how sensitive it is, and on which path it may travel."""

    classification: Classification
    category: DisseminationCategory
    kind: Kind = "categorical"
    description: str = ""
    # Free text is Secret unless this is set; even then phones, e-mails and IDs are redacted.
    allow_free_text: bool = False
    # Required, with a reason, to be less strict than include/rules/default.yaml.
    loosens_default: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _free_text_only_on_text(self) -> IndicatorRule:
        if self.allow_free_text and self.kind != "text":
            raise ValueError("allow_free_text applies to kind: text only")
        return self

    def looser_than(self, other: IndicatorRule) -> bool:
        return (self.classification < other.classification
                or self.category.strictness < other.category.strictness)


class RelationalRule(PolicyModel):
    """Indicators harmless alone but sensitive together (Table A guidance, 'relational').

    ``when`` limits the rule to rounds where some site has these values (e.g. military present);
    ``safe_at`` is the admin level at which, once aggregated, the combination may be shared.
    """

    name: Identifier
    indicators: tuple[ColumnName, ...] = Field(min_length=2)
    escalate_to: Classification
    reason: str = Field(min_length=1)
    when: dict[ColumnName, tuple[str, ...]] = Field(default_factory=dict)
    safe_at: Identifier | None = None

    @model_validator(mode="after")
    def _conditions_on_members(self) -> RelationalRule:
        outside = sorted(set(self.when) - set(self.indicators))
        if outside:
            raise ValueError(f"when names {outside}, which are not among its indicators")
        return self


class RiskAssessment(PolicyModel):
    """When the country's risk assessment was done and how often it must be repeated."""

    date: date
    review_every_days: PositiveInt

    @property
    def review_due(self) -> date:
        return self.date + timedelta(days=self.review_every_days)


class SmallCells(PolicyModel):
    """Counts 1..threshold are suppressed (sdcTable's frequency rule); 0 stays visible."""

    threshold: int = Field(default=3, ge=1, le=1000)
    loosens_default: str | None = Field(default=None, min_length=1)


class AdditiveGroup(PolicyModel):
    """``total`` = sum of ``parts`` on every row: a hidden part must not be recomputable."""

    total: ColumnName
    parts: tuple[ColumnName, ...] = Field(min_length=2)


class UrgentSignal(PolicyModel):
    """A condition in the data that calls for organisational urgent action: any site above a
    threshold, or a jump since the previous round at the same site."""

    name: Identifier
    indicator: ColumnName
    above: PositiveInt | None = None
    jump: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> UrgentSignal:
        if (self.above is None) == (self.jump is None):
            raise ValueError("set exactly one of above or jump")
        return self


class _RulesFile(PolicyModel):
    version: str = Field(min_length=1)
    indicators: dict[ColumnName, IndicatorRule] = Field(default_factory=dict)
    relational: tuple[RelationalRule, ...] = ()
    # Ordered from the coarsest to the finest, e.g. {admin1: [admin1_pcode, admin1_name], ...}.
    admin_levels: dict[Identifier, tuple[ColumnName, ...]] | None = None
    small_cells: SmallCells | None = None
    additive: tuple[AdditiveGroup, ...] = ()
    urgent_signals: tuple[UrgentSignal, ...] = ()


class DefaultRules(_RulesFile):
    """include/rules/default.yaml: the global baseline every country file starts from."""

    scope: Literal["default"]


class CountryRules(_RulesFile):
    """include/rules/<ISO3>.yaml: the country's risk assessment, tightening the default."""

    country: CountryCode
    risk_assessment: RiskAssessment


class RuleSet(PolicyModel):
    """The effective rules of one country: its file merged over the default."""

    country: CountryCode
    version: str = Field(min_length=1)
    risk_assessment: RiskAssessment
    indicators: dict[ColumnName, IndicatorRule]
    relational: tuple[RelationalRule, ...] = ()
    admin_levels: dict[Identifier, tuple[ColumnName, ...]] = Field(default_factory=dict)
    small_cells: SmallCells = SmallCells()
    additive: tuple[AdditiveGroup, ...] = ()
    urgent_signals: tuple[UrgentSignal, ...] = ()
    default_version: str | None = None
    loosened: tuple[str, ...] = ()  # every explicit loosening of the default, for reports

    @model_validator(mode="after")
    def _references_are_known(self) -> RuleSet:
        problems = []
        for i, rule in enumerate(self.relational):
            unknown = [c for c in rule.indicators if c not in self.indicators]
            if unknown:
                problems.append(f"relational.{i} ({rule.name}) names unknown indicator(s) {unknown}")
            if rule.safe_at is not None and rule.safe_at not in self.admin_levels:
                problems.append(f"relational.{i} ({rule.name}): safe_at {rule.safe_at!r} is not "
                                f"one of admin_levels {list(self.admin_levels)}")
        for level, columns in self.admin_levels.items():
            for c in columns:
                if c not in self.indicators or self.indicators[c].kind != "admin":
                    problems.append(f"admin_levels.{level}: {c!r} is not an indicator of kind admin")
        for i, signal in enumerate(self.urgent_signals):
            rule = self.indicators.get(signal.indicator)
            if rule is None or rule.kind != "count":
                problems.append(f"urgent_signals.{i} ({signal.name}): {signal.indicator!r} is "
                                "not an indicator of kind count")
        for i, group in enumerate(self.additive):
            for c in (group.total, *group.parts):
                if c not in self.indicators or self.indicators[c].kind != "count":
                    problems.append(f"additive.{i}: {c!r} is not an indicator of kind count")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def review_overdue(self, today: date) -> bool:
        return self.risk_assessment.review_due < today

    def level_rank(self, level: str) -> int:
        """0 for the coarsest admin level ... len(admin_levels) for site level."""
        if level == SITE:
            return len(self.admin_levels)
        return list(self.admin_levels).index(level)

    def safe_at_level(self, rule: RelationalRule, level: str) -> bool:
        return rule.safe_at is not None and self.level_rank(level) <= self.level_rank(rule.safe_at)

    def level_columns(self, level: str) -> tuple[str, ...]:
        """Admin columns that identify rows at ``level`` (itself and every coarser level)."""
        if level == SITE:
            return tuple(c for cols in self.admin_levels.values() for c in cols)
        names = list(self.admin_levels)
        return tuple(c for n in names[: names.index(level) + 1] for c in self.admin_levels[n])


def merge_rules(default: DefaultRules | None, country: CountryRules) -> tuple[dict, list[str]]:
    """The country file over the default: it may add and tighten; loosening must say why.

    Returns the effective rule set's fields and the problems, each ``field: message``.
    """
    problems: list[str] = []
    loosened: list[str] = []
    indicators = dict(default.indicators) if default else {}
    for name, rule in country.indicators.items():
        base = indicators.get(name)
        if base is not None and rule.looser_than(base):
            change = (f"{base.classification.value}/{base.category.value} -> "
                      f"{rule.classification.value}/{rule.category.value}")
            if rule.loosens_default is None:
                problems.append(f"indicators.{name}: {change} loosens rules/default.yaml; set "
                                "loosens_default: <reason> if that is intended")
            else:
                loosened.append(f"{country.country}: {name}: {change} ({rule.loosens_default})")
        indicators[name] = rule
    relational = (default.relational if default else ()) + country.relational
    seen: set[str] = set()
    for rule in relational:
        if rule.name in seen:
            problems.append(f"relational: rule name {rule.name!r} is already used in "
                            "rules/default.yaml (a country cannot replace a default rule)")
        seen.add(rule.name)
    small_cells = country.small_cells or (default.small_cells if default else None) or SmallCells()
    if default and default.small_cells and small_cells.threshold < default.small_cells.threshold:
        if small_cells.loosens_default is None:
            problems.append(f"small_cells.threshold: {small_cells.threshold} is below the "
                            f"default {default.small_cells.threshold}; set loosens_default")
        else:
            loosened.append(f"{country.country}: small_cells.threshold "
                            f"{default.small_cells.threshold} -> {small_cells.threshold} "
                            f"({small_cells.loosens_default})")
    fields = dict(
        country=country.country,
        version=country.version,
        risk_assessment=country.risk_assessment,
        indicators=indicators,
        relational=relational,
        admin_levels=country.admin_levels or (default.admin_levels if default else None) or {},
        small_cells=small_cells,
        additive=(default.additive if default else ()) + country.additive,
        urgent_signals=(default.urgent_signals if default else ()) + country.urgent_signals,
        default_version=default.version if default else None,
        loosened=tuple(loosened),
    )
    return fields, problems

