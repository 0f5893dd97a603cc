"""include/rules/<ISO3>.yaml and rules/default.yaml: a country's rule set and round contract.

Sensitivity is contextual (one file per country, over a global default), temporal (the risk
assessment's date and review interval) and relational (indicator combinations that escalate).
"""

from __future__ import annotations

import math
import re
from datetime import date, timedelta
from functools import cached_property
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PositiveInt,
    create_model,
    model_validator,
)

from .. import normalise
from ..classification import Classification, DisseminationCategory
from .base import ColumnName, CountryCode, Identifier, PolicyModel
from .overrides import DefaultDrops
from .sites import SiteRegistry

Kind = Literal[
    "round", "key", "admin", "date", "coordinate", "count", "categorical", "flag", "text",
    "personal",
]
SITE = "site"  # the finest level: one row per site
#: Kinds whose values are a declared set (``values``), and the kinds that may declare one.
SET_KINDS = frozenset({"categorical", "flag"})
VALUE_KINDS = SET_KINDS | {"admin"}
_ADMIN_ALIAS = re.compile(r"^admin([1-9])$")
#: Bounds of a kind when its rule states none (``bounds: [min, max]`` overrides them): a
#: count is what one site plausibly holds, so a phone number typed as digits is out of them.
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {"count": (0, 1_000_000)}


def _scalar_to_text(value: object) -> object:
    """Declared values are text; YAML numbers (``1``, ``2.5``) are read as their text."""
    if isinstance(value, bool):
        raise ValueError("a boolean: write the value in quotes (e.g. 'true' or 'yes')")
    if isinstance(value, int | float):
        return normalise.token(value)
    return value


Value = Annotated[str, BeforeValidator(_scalar_to_text), Field(min_length=1, max_length=200)]
Header = Annotated[str, Field(min_length=1, max_length=300)]


class IndicatorRule(PolicyModel):
    """One column of a round: how sensitive it is, on which path it may travel, and its contract
    (how an export writes it and which values it may hold)."""

    classification: Classification
    category: DisseminationCategory
    kind: Kind = "categorical"
    description: str = ""
    # Free text is Secret unless this is set; even then phones, e-mails and IDs are redacted.
    allow_free_text: bool = False
    # Required, with a reason, to be less strict than include/rules/default.yaml.
    loosens_default: str | None = Field(default=None, min_length=1)

    # --- the round contract --------------------------------------------------------------------
    # Export headers as the export writes them ("Total IDP individuals (ind)"); the indicator's
    # own name always matches too. Compared in normal form (case, spaces, Unicode NFKC).
    headers: tuple[Header, ...] = ()
    # The HXL hashtag of the column (e.g. "#affected+idps+ind"), matched on an HXL row.
    hxl: str | None = None
    # categorical and flag: the declared set (required); admin: optional (e.g. the gazetteer).
    values: tuple[Value, ...] = ()
    # declared value -> other spellings exports use for it (e.g. yes: ["true", "1", "oui"]).
    synonyms: dict[Value, tuple[Value, ...]] = Field(default_factory=dict)
    # Tokens that mean "no answer" in this column. An empty cell always does; "None", "NA" and
    # the like are answers unless listed here.
    missing: tuple[Value, ...] = ()
    # count: [min, max] (default DEFAULT_BOUNDS); coordinate: required, e.g. [-90, 90].
    bounds: tuple[float, float] | None = None
    # date: a strptime format (e.g. "%d/%m/%Y"); default ISO 8601 (2026-11-03).
    date_format: str | None = None
    # key, admin, round: a regular expression every value must match in full.
    pattern: str | None = None

    @model_validator(mode="after")
    def _contract_fits_the_kind(self) -> IndicatorRule:
        problems = (self._kind_problems() + self._bounds_problems() + self._format_problems()
                    + self._spellings_problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _kind_problems(self) -> list[str]:
        """What the kind requires or forbids: free text, declared values, a coordinate's bounds.

        Checked first so an author sees the kind mismatch before the details it explains.
        """
        problems = []
        if self.allow_free_text and self.kind != "text":
            problems.append("allow_free_text applies to kind: text only")
        if self.kind in SET_KINDS and not self.values:
            problems.append(f"kind {self.kind} needs its declared values (values: [...])")
        if self.values and self.kind not in VALUE_KINDS:
            problems.append(f"values apply to kinds {sorted(VALUE_KINDS)}, not {self.kind}")
        if self.synonyms and not self.values:
            problems.append("synonyms need declared values")
        if self.kind == "coordinate" and self.bounds is None:
            problems.append("kind coordinate needs bounds: [min, max] (e.g. [-90, 90])")
        return problems

    def _bounds_problems(self) -> list[str]:
        """Whether the stated bounds are a real range for a kind that has one.

        A NaN bound would let every value through (nothing compares below or above NaN).
        """
        if self.bounds is None:
            return []
        low, high = self.bounds
        if math.isnan(low) or math.isnan(high):
            return ["bounds: .nan is no bound"]
        if self.kind not in ("count", "coordinate"):
            return ["bounds apply to kinds count and coordinate"]
        if low > high:
            return [f"bounds: {low} is above {high}"]
        if self.kind == "count" and low < 0:
            return ["bounds: a count cannot be negative"]
        return []

    def _format_problems(self) -> list[str]:
        """Whether date_format, pattern and hxl are usable and fit the kind.

        A format that cannot parse would reject every row of a round at intake instead of here.
        """
        problems = []
        if self.date_format is not None:
            if self.kind != "date":
                problems.append("date_format applies to kind: date only")
            elif "%" not in self.date_format:
                problems.append(f"date_format {self.date_format!r} has no strptime directive")
        if self.pattern is not None:
            if self.kind not in ("key", "admin", "round"):
                problems.append("pattern applies to kinds key, admin and round")
            else:
                try:
                    re.compile(self.pattern)
                except re.error as exc:
                    problems.append(f"pattern is not a regular expression: {exc}")
        if self.hxl is not None and not normalise.hxl(self.hxl):
            problems.append(f"hxl {self.hxl!r} is not an HXL hashtag (e.g. #affected+idps+ind)")
        return problems

    def _spellings_problems(self) -> list[str]:
        problems, seen = [], {}
        for value in self.values:
            if normalise.token(value) in seen:
                problems.append(f"values: {value!r} and {seen[normalise.token(value)]!r} are the "
                                "same value once case and spaces are ignored")
            seen[normalise.token(value)] = value
        for value, spellings in self.synonyms.items():
            if value not in self.values:
                problems.append(f"synonyms: {value!r} is not one of the declared values")
            for spelling in spellings:
                other = seen.get(normalise.token(spelling))
                if other is not None and other != value:
                    problems.append(f"synonyms.{value}: {spelling!r} already means {other!r}")
                seen[normalise.token(spelling)] = value
        return problems

    @property
    def limits(self) -> tuple[float, float]:
        """The bounds values are checked against: the rule's own, or its kind's default.

        A count with no stated bound was unbounded, so a phone number typed as digits fit."""
        return self.bounds or DEFAULT_BOUNDS.get(self.kind, (-math.inf, math.inf))

    @cached_property
    def canonical(self) -> dict[str, str]:
        """Normal form of every accepted spelling -> the declared value it stands for."""
        out = {normalise.token(v): v for v in self.values}
        for value, spellings in self.synonyms.items():
            out.update({normalise.token(s): value for s in spellings})
        return out

    def looser_than(self, other: IndicatorRule) -> bool:
        return (self.classification < other.classification
                or self.category.strictness < other.category.strictness)


#: A country file's entry for an indicator of the default: only what it changes (e.g. its export
#: headers, or a tighter classification). A new indicator must say all that IndicatorRule needs.
IndicatorPatch = create_model(
    "IndicatorPatch", __base__=PolicyModel,
    **{name: (info.annotation | None, None) for name, info in IndicatorRule.model_fields.items()},
)


class RelationalRule(PolicyModel):
    """Indicators harmless alone but sensitive together (Table A guidance, 'relational').

    ``when`` limits the rule to rounds where some site has these values (e.g. military present).
    Either ``escalate_to`` (with ``safe_at``: the admin level at which, once aggregated, the
    combination may be shared) or ``levels``: a classification per level, e.g. {site: secret,
    district: confidential, province: public}; a level not listed takes the next finer one's.
    """

    name: Identifier
    indicators: tuple[ColumnName, ...] = Field(min_length=2)
    reason: str = Field(min_length=1)
    when: dict[ColumnName, tuple[Value, ...]] = Field(default_factory=dict)
    escalate_to: Classification | None = None
    safe_at: Identifier | None = None
    levels: dict[Identifier, Classification] = Field(default_factory=dict)
    loosens_default: str | None = Field(default=None, min_length=1)  # replacing the default's

    @model_validator(mode="after")
    def _well_formed(self) -> RelationalRule:
        outside = sorted(set(self.when) - set(self.indicators))
        if outside:
            raise ValueError(f"when names {outside}, which are not among its indicators")
        if (self.escalate_to is None) == (not self.levels):
            raise ValueError("set either escalate_to (with safe_at) or levels, not both")
        if self.levels and self.safe_at is not None:
            raise ValueError("safe_at goes with escalate_to; with levels, give each level's "
                             "classification")
        if self.levels and SITE not in self.levels:
            raise ValueError("levels must give the classification at site level (site: ...)")
        return self


class RiskAssessment(PolicyModel):
    """When the country's risk assessment was done and how often it must be repeated."""

    date: date
    review_every_days: PositiveInt

    @property
    def review_due(self) -> date:
        return self.date + timedelta(days=self.review_every_days)


class SmallCells(PolicyModel):
    """Counts 1..threshold are suppressed (sdcTable's frequency rule); 0 stays visible, except
    where it would tell every site's value of a relational rule's member. An aggregated area
    is published only with at least ``min_sites`` sites (3 at least; a country may only raise
    it: an area of one or two sites shows their values)."""

    threshold: int = Field(default=3, ge=1, le=1000)
    min_sites: int = Field(default=3, ge=3, le=1000)
    loosens_default: str | None = Field(default=None, min_length=1)


class AdditiveGroup(PolicyModel):
    """``total`` = sum of ``parts`` on every row: a hidden part must not be recomputable."""

    total: ColumnName
    parts: tuple[ColumnName, ...] = Field(min_length=2)
    loosens_default: str | None = Field(default=None, min_length=1)  # replacing the default's


class UrgentSignal(PolicyModel):
    """A condition in the data that calls for organisational urgent action: any site above a
    threshold, or a jump since the previous round at the same site."""

    name: Identifier
    indicator: ColumnName
    above: PositiveInt | None = None
    jump: PositiveInt | None = None
    # firing less than the default's
    loosens_default: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_condition(self) -> UrgentSignal:
        if (self.above is None) == (self.jump is None):
            raise ValueError("set exactly one of above or jump")
        return self


class _RulesFile(PolicyModel):
    version: str = Field(min_length=1)
    relational: tuple[RelationalRule, ...] = ()
    # Ordered from the coarsest to the finest, named as the country names them, e.g.
    # {province: [province_pcode, province_name], district: [...]}. Rules elsewhere may also say
    # admin1, admin2, ... for the first, second, ... level.
    admin_levels: dict[Identifier, tuple[ColumnName, ...]] | None = None
    # The indicator that identifies a site in a round, and the one that dates its collection.
    site_key: ColumnName | None = None
    collection_date: ColumnName | None = None
    small_cells: SmallCells | None = None
    additive: tuple[AdditiveGroup, ...] = ()
    urgent_signals: tuple[UrgentSignal, ...] = ()
    site_registry: SiteRegistry | None = None  # policy/sites.py


class DefaultRules(_RulesFile):
    """include/rules/default.yaml: the global baseline every country file starts from."""

    scope: Literal["default"]
    indicators: dict[ColumnName, IndicatorRule] = Field(default_factory=dict)


class CountryRules(_RulesFile):
    """include/rules/<ISO3>.yaml: the country's risk assessment and contract, tightening the
    default. An entry for a default indicator lists only what changes."""

    country: CountryCode
    risk_assessment: RiskAssessment
    indicators: dict[ColumnName, IndicatorPatch] = Field(default_factory=dict)  # type: ignore[valid-type]
    drops_default: DefaultDrops = DefaultDrops()


class RuleSet(PolicyModel):
    """The effective rules of one country: its file merged over the default."""

    country: CountryCode
    version: str = Field(min_length=1)
    risk_assessment: RiskAssessment
    indicators: dict[ColumnName, IndicatorRule]
    relational: tuple[RelationalRule, ...] = ()
    admin_levels: dict[Identifier, tuple[ColumnName, ...]] = Field(default_factory=dict)
    site_key: ColumnName
    collection_date: ColumnName
    small_cells: SmallCells = SmallCells()
    additive: tuple[AdditiveGroup, ...] = ()
    urgent_signals: tuple[UrgentSignal, ...] = ()
    site_registry: SiteRegistry = SiteRegistry()
    default_version: str | None = None
    loosened: tuple[str, ...] = ()  # every explicit loosening of the default, for reports

    @model_validator(mode="after")
    def _references_are_known(self) -> RuleSet:
        problems = self._level_problems() + self._contract_problems()
        for i, rule in enumerate(self.relational):
            where = f"relational.{i} ({rule.name})"
            unknown = [c for c in rule.indicators if c not in self.indicators]
            if unknown:
                problems.append(f"{where} names unknown indicator(s) {unknown}")
            for level in [*([rule.safe_at] if rule.safe_at else []), *rule.levels]:
                if self.resolve_level(level) is None:
                    problems.append(f"{where}: level {level!r} is not site nor one of "
                                    f"admin_levels {list(self.admin_levels)}")
            for column, values in rule.when.items():
                accepted = self.indicators[column].canonical if column in self.indicators else {}
                strays = [v for v in values if normalise.token(v) not in accepted]
                if column in self.indicators and strays:
                    problems.append(f"{where}: when.{column}: {strays} are not declared values "
                                    f"of {column}")
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

    def _level_problems(self) -> list[str]:
        problems = []
        for position, (level, columns) in enumerate(self.admin_levels.items(), start=1):
            alias = _ADMIN_ALIAS.match(level)
            if level == SITE or (alias and int(alias[1]) != position):
                problems.append(f"admin_levels.{level}: this name is reserved for "
                                f"{'the site level' if level == SITE else f'level {alias[1]}'}")
            for c in columns:
                if c not in self.indicators or self.indicators[c].kind != "admin":
                    problems.append(
                        f"admin_levels.{level}: {c!r} is not an indicator of kind admin")
        return problems

    def _contract_problems(self) -> list[str]:
        problems = []
        for field, kind in (("site_key", "key"), ("collection_date", "date")):
            name = getattr(self, field)
            if name not in self.indicators or self.indicators[name].kind != kind:
                problems.append(f"{field}: {name!r} is not an indicator of kind {kind}")
        claimed: dict[str, str] = {}
        for name, rule in self.indicators.items():
            for header in (name, *rule.headers):
                other = claimed.setdefault(normalise.token(header), name)
                if other != name:
                    problems.append(f"indicators.{name}.headers: {header!r} already names "
                                    f"{other}")
        tags: dict[str, str] = {}
        for name, rule in self.indicators.items():
            if rule.hxl and tags.setdefault(normalise.hxl(rule.hxl), name) != name:
                problems.append(f"indicators.{name}.hxl: {rule.hxl!r} already names "
                                f"{tags[normalise.hxl(rule.hxl)]}")
        return problems

    @cached_property
    def header_index(self) -> dict[str, str]:
        """Normal form of every header an export may use -> indicator."""
        return {normalise.token(h): name for name, rule in self.indicators.items()
                for h in (name, *rule.headers)}

    @cached_property
    def hxl_index(self) -> dict[str, str]:
        return {normalise.hxl(rule.hxl): name for name, rule in self.indicators.items()
                if rule.hxl}

    def review_overdue(self, today: date) -> bool:
        """Past its review, or dated after ``today``: an assessment not yet made is none, and a
        typo (2062 for 2026) would otherwise keep the review from ever falling due."""
        return self.risk_assessment.review_due < today or self.risk_assessment.date > today

    def resolve_level(self, level: str) -> str | None:
        """The country's name of a level: itself, site, or ``adminN`` for the N-th level."""
        if level == SITE or level in self.admin_levels:
            return level
        alias = _ADMIN_ALIAS.match(level)
        names = list(self.admin_levels)
        return names[int(alias[1]) - 1] if alias and int(alias[1]) <= len(names) else None

    def level_rank(self, level: str) -> int:
        """0 for the coarsest admin level ... len(admin_levels) for site level."""
        level = self.resolve_level(level) or level
        if level == SITE:
            return len(self.admin_levels)
        return list(self.admin_levels).index(level)

    def relational_at(self, rule: RelationalRule, level: str) -> Classification:
        """What the combination is at ``level``: escalate_to below safe_at, public from there;
        or the rule's own classification per level (the next finer listed level's if unlisted)."""
        rank = self.level_rank(level)
        if rule.levels:
            listed = sorted(((self.level_rank(lvl), c) for lvl, c in rule.levels.items()),
                            key=lambda item: item[0])
            return next(c for r, c in listed if r >= rank)  # site is always listed
        if rule.safe_at is not None and rank <= self.level_rank(rule.safe_at):
            return Classification.PUBLIC
        return rule.escalate_to

    def level_columns(self, level: str) -> tuple[str, ...]:
        """Admin columns that identify rows at ``level`` (itself and every coarser level)."""
        level = self.resolve_level(level) or level
        if level == SITE:
            return tuple(c for cols in self.admin_levels.values() for c in cols)
        names = list(self.admin_levels)
        return tuple(c for n in names[: names.index(level) + 1] for c in self.admin_levels[n])
