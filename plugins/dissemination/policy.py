"""The policy: country rule sets, data-sharing agreements and focal points, as typed YAML.

Three kinds of file live under ``include/``:

- ``rules/<ISO3>.yaml``: one rule set per country (contextual), with its risk assessment date and
  review interval (temporal) and the indicator combinations that escalate (relational);
- ``agreements/<id>.yaml``: what an organisation may receive, on which urgency tier, where to;
- ``focal_points/<id>.yaml``: who receives it, kept apart so that turnover revises no agreement;
- ``focal_points/dtm/<ISO3>.yaml``: DTM's own primary and secondary focal point in the country
  (Table C's other column): who is alerted, and who phones partners their passwords.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting.
Loading collects every problem of every file before failing, and each message names the file and
the field, because the person fixing a policy file is rarely the person who wrote the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from .classification import (
    CATEGORIES_BY_URGENCY,
    Classification,
    DisseminationCategory,
    Urgency,
)
from .errors import PermanentError

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$", max_length=64)]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
ColumnName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]


class PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


# --- agreements --------------------------------------------------------------------------------


class Tier(PolicyModel):
    indicators: tuple[ColumnName, ...] = Field(min_length=1)
    # Share counts per admin area (e.g. admin1) instead of per site.
    aggregate_to: Identifier | None = None
    # Count indicators shared exactly, without small-cell suppression (e.g. for the follow-up of
    # each unaccompanied child); Confidential agreements only.
    exact_counts: tuple[ColumnName, ...] = ()

    @model_validator(mode="after")
    def _exact_counts_are_requested(self) -> Tier:
        extra = sorted(set(self.exact_counts) - set(self.indicators))
        if extra:
            raise ValueError(f"exact_counts {extra} are not among the tier's indicators")
        return self


class MediumTier(Tier):
    """Raw partial data, shared before cleaning, within ``window_hours`` of collection."""

    window_hours: PositiveInt


class LowTier(Tier):
    """Cleaned data, on a schedule."""

    schedule: Literal["monthly"] = "monthly"


class Tiers(PolicyModel):
    medium: MediumTier | None = None
    low: LowTier | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Tiers:
        if self.medium is None and self.low is None:
            raise ValueError("an agreement needs at least one tier (medium or low)")
        return self

    def get(self, urgency: Urgency) -> Tier | None:
        return self.medium if urgency is Urgency.MEDIUM else self.low


class SftpDestination(PolicyModel):
    """An Airflow connection id (host, login, key and pinned host key live there) and a folder."""

    sftp_conn_id: Identifier
    # Path segments may not start with a dot: no "..", no hidden folders.
    remote_dir: str = Field(pattern=r"^/?[\w\-][\w.\-]*(/[\w\-][\w.\-]*)*/?$")


class PasswordPlan(PolicyModel):
    """Where the package password is kept (an Airflow Variable) and how often it changes."""

    variable: Identifier
    rotate_every_days: PositiveInt


class Agreement(PolicyModel):
    id: Identifier
    organisation: str = Field(min_length=1)
    focal_points: Identifier
    purpose: str = Field(min_length=1)
    valid_from: date
    valid_until: date
    countries: tuple[CountryCode, ...] = Field(min_length=1)
    # Secret is not a choice: the type itself makes "agreement allows Secret" unrepresentable.
    max_classification: Literal[Classification.PUBLIC, Classification.CONFIDENTIAL]
    tiers: Tiers
    destination: SftpDestination
    password: PasswordPlan

    @model_validator(mode="after")
    def _dates_in_order(self) -> Agreement:
        if self.valid_until < self.valid_from:
            raise ValueError(
                f"valid_until {self.valid_until} is before valid_from {self.valid_from}"
            )
        return self

    def is_active(self, on: date) -> bool:
        return self.valid_from <= on <= self.valid_until

    def covers(self, country: str, urgency: Urgency) -> bool:
        return country in self.countries and self.tiers.get(urgency) is not None


# --- focal points ------------------------------------------------------------------------------


class Person(PolicyModel):
    name: str = Field(min_length=1)
    title: str = Field(min_length=1)
    mobile: str = Field(pattern=r"^\+?[0-9 ()\-]{6,20}$")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    # false while on leave or during a handover: the secondary stands in.
    available: bool = True


class FocalPoint(Person):
    # Where this person receives packages; default: the agreement's destination.
    destination: SftpDestination | None = None


class FieldFocalPoint(FocalPoint):
    """A location-specific focal point (the guideline's 48-hour example): only their rows."""

    areas: dict[ColumnName, tuple[str, ...]] = Field(min_length=1)  # e.g. admin2_pcode: [...]
    destination: SftpDestination


class FocalPoints(PolicyModel):
    """Table C: each organisation has a primary and a secondary focal point, and may list field
    focal points by area. Replacing a person edits this file only, never the agreement."""

    id: Identifier
    organisation: str = Field(min_length=1)
    primary: FocalPoint
    secondary: FocalPoint
    field: tuple[FieldFocalPoint, ...] = ()


class DtmFocalPoints(PolicyModel):
    """Table C, IOM DTM's column: DTM's primary and secondary focal point in one country. They
    receive the pipeline's alerts (urgent signals, deadlines at risk, rotated passwords) and are
    the people partners hear their package passwords from. The primary, or the secondary while the
    primary is unavailable: the same rule as for partners' deliveries."""

    country: CountryCode
    organisation: str = Field(min_length=1)
    primary: Person
    secondary: Person

    def on_duty(self) -> Person:
        return self.primary if self.primary.available else self.secondary


# --- the whole policy --------------------------------------------------------------------------


class Policy(PolicyModel):
    rulesets: dict[CountryCode, RuleSet]
    agreements: dict[Identifier, Agreement]
    focal_points: dict[Identifier, FocalPoints]
    dtm: dict[CountryCode, DtmFocalPoints]
    sources: dict[str, str] = Field(default_factory=dict)  # "agreement:<id>" -> file, for messages

    def alert_to(self, *countries: str) -> tuple[str, ...]:
        """E-mail of DTM's focal point on duty in each country, once each: who an alert goes to."""
        return tuple(dict.fromkeys(self.dtm[c].on_duty().email for c in sorted(countries)))

    def agreements_for(self, country: str, urgency: Urgency) -> list[Agreement]:
        return sorted(
            (a for a in self.agreements.values() if a.covers(country, urgency)),
            key=lambda a: a.id,
        )


DEFAULT_RULES = "default"  # include/rules/default.yaml


class PolicyError(PermanentError, ValueError):
    """Every problem found in the policy files, one ``file: field: message`` line each."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the policy files:\n  "
            + "\n  ".join(self.problems)
        )


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML silently keeps the last of two equal keys; a policy file must not."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<file>"


def _load_file(path: Path, model: type[PolicyModel], problems: list[str]):
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        problems.append(f"{path}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot be read: {exc}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            value = f" (got {err['input']!r})" if "input" in err and err["type"] != "missing" else ""
            if err["type"] == "extra_forbidden":
                value = ""
            problems.append(f"{path}: {_format_loc(err['loc'])}: {err['msg']}{value}")
        return None


def load_policy(include_dir: Path | str, *, today: date | None = None) -> Policy:
    """Load and cross-check every policy file under ``include_dir``.

    ``today`` turns on the checks that depend on the calendar (expired agreements). The DAGs pass
    the run's logical date, ``check`` passes the current date.
    """
    root = Path(include_dir)
    problems: list[str] = []
    sources: dict[str, str] = {}
    rulesets: dict[str, RuleSet] = {}
    agreements: dict[str, Agreement] = {}
    focal_points: dict[str, FocalPoints] = {}
    broken: set[str] = set()  # "<folder>/<stem>" of files that failed: no cascade of errors

    for kind, folder, model, target in (
        ("agreement", "agreements", Agreement, agreements),
        ("focal_points", "focal_points", FocalPoints, focal_points),
    ):
        directory = root / folder
        if not directory.is_dir():
            problems.append(f"{directory}: folder missing")
            continue
        for path in sorted(directory.glob("*.y*ml")):
            obj = _load_file(path, model, problems)
            if obj is None:
                broken.add(f"{folder}/{path.stem}")
                continue
            if path.stem != obj.id:
                problems.append(f"{path}: id: {obj.id!r} must match the file name {path.stem!r}")
                continue
            target[obj.id] = obj
            sources[f"{kind}:{obj.id}"] = str(path)

    rules_dir = root / "rules"
    default = None
    default_path = rules_dir / f"{DEFAULT_RULES}.yaml"
    if default_path.exists():
        default = _load_file(default_path, DefaultRules, problems)
        if default is None:
            broken.add(f"rules/{DEFAULT_RULES}")
    if not rules_dir.is_dir():
        problems.append(f"{rules_dir}: folder missing")
    for path in sorted(rules_dir.glob("*.y*ml")) if rules_dir.is_dir() else ():
        if path.stem == DEFAULT_RULES:
            continue
        country = _load_file(path, CountryRules, problems)
        if country is None or f"rules/{DEFAULT_RULES}" in broken:
            broken.add(f"rules/{path.stem}")
            continue
        if path.stem != country.country:
            problems.append(f"{path}: country: {country.country!r} must match the file name "
                            f"{path.stem!r}")
            continue
        fields, merge_problems = merge_rules(default, country)
        problems.extend(f"{path}: {p}" for p in merge_problems)
        try:
            rulesets[country.country] = RuleSet(**fields)
        except ValidationError as exc:
            problems.extend(f"{path}: {e['msg'].removeprefix('Value error, ')}"
                            for e in exc.errors())
            broken.add(f"rules/{path.stem}")
            continue
        if merge_problems:
            broken.add(f"rules/{path.stem}")
        sources[f"rules:{country.country}"] = str(path)

    dtm: dict[str, DtmFocalPoints] = {}
    dtm_dir = root / "focal_points" / "dtm"
    for path in sorted(dtm_dir.glob("*.y*ml")):
        people = _load_file(path, DtmFocalPoints, problems)
        if people is not None and path.stem != people.country:
            problems.append(f"{path}: country: {people.country!r} must match the file name "
                            f"{path.stem!r}")
        elif people is not None:
            dtm[people.country] = people
            sources[f"dtm:{people.country}"] = str(path)
    for country in sorted(set(rulesets) - set(dtm)):
        if not (dtm_dir / f"{country}.yaml").exists():
            problems.append(f"{sources[f'rules:{country}']}: no DTM focal points for {country}: "
                            f"add {dtm_dir / country}.yaml (who is alerted, who phones "
                            "partners their passwords)")

    for agreement in agreements.values():
        problems.extend(
            _check_agreement(agreement, sources[f"agreement:{agreement.id}"], rulesets,
                             focal_points, today, broken)
        )
    if problems:
        raise PolicyError(problems)
    return Policy(
        rulesets=rulesets, agreements=agreements, focal_points=focal_points, dtm=dtm,
        sources=sources,
    )


def _check_agreement(
    agreement: Agreement,
    source: str,
    rulesets: dict[str, RuleSet],
    focal_points: dict[str, FocalPoints],
    today: date | None,
    broken: set[str],
) -> list[str]:
    problems = []
    people = focal_points.get(agreement.focal_points)
    for i, person in enumerate(people.field if people else ()):
        for column in person.areas:
            for country in agreement.countries:
                rule = rulesets[country].indicators.get(column) if country in rulesets else None
                if rule is not None and rule.kind != "admin":
                    problems.append(f"focal_points/{people.id}.yaml: field.{i}.areas: {column!r} "
                                    f"is not an admin column in {country}")
                elif rule is None and country in rulesets:
                    problems.append(f"focal_points/{people.id}.yaml: field.{i}.areas: unknown "
                                    f"column {column!r} in {country}")
    if (agreement.focal_points not in focal_points
            and f"focal_points/{agreement.focal_points}" not in broken):
        problems.append(
            f"{source}: focal_points: no file focal_points/{agreement.focal_points}.yaml"
        )
    if today is not None and agreement.valid_until < today:
        problems.append(
            f"{source}: valid_until: agreement expired on {agreement.valid_until} "
            f"(today is {today}); renew it or remove the file"
        )
    for c_index, country in enumerate(agreement.countries):
        ruleset = rulesets.get(country)
        if ruleset is None and f"rules/{country}" in broken:
            continue  # already reported as that file's own problem
        if ruleset is None:
            problems.append(f"{source}: countries.{c_index}: no rule set rules/{country}.yaml")
            continue
        for urgency in Urgency:
            tier = agreement.tiers.get(urgency)
            if tier is None:
                continue
            allowed_categories = CATEGORIES_BY_URGENCY[urgency]
            prefix = f"{source}: tiers.{urgency.value}"
            if tier.aggregate_to is not None:
                if tier.aggregate_to not in ruleset.admin_levels:
                    problems.append(f"{prefix}.aggregate_to: {tier.aggregate_to!r} is not one of "
                                    f"{country}'s admin_levels {list(ruleset.admin_levels)}")
                else:
                    missing = [c for c in ruleset.admin_levels[tier.aggregate_to]
                               if c not in tier.indicators]
                    if missing:
                        problems.append(f"{prefix}.aggregate_to: aggregating to "
                                        f"{tier.aggregate_to} needs {missing} among the indicators")
            for i, name in enumerate(tier.exact_counts):
                rule = ruleset.indicators.get(name)
                if rule is not None and rule.kind != "count":
                    problems.append(f"{prefix}.exact_counts.{i}: {name!r} is not a count")
                elif agreement.max_classification < Classification.CONFIDENTIAL:
                    problems.append(f"{prefix}.exact_counts.{i}: exact counts need a "
                                    "confidential agreement (max_classification)")
            for i, name in enumerate(tier.indicators):
                field = f"tiers.{urgency.value}.indicators.{i}"
                rule = ruleset.indicators.get(name)
                if rule is not None and rule.kind == "text" and not rule.allow_free_text:
                    problems.append(
                        f"{source}: {field}: {name!r} is free text, Secret unless the {country} "
                        "rules set allow_free_text"
                    )
                elif rule is None:
                    problems.append(
                        f"{source}: {field}: unknown indicator {name!r} for {country} "
                        f"(not in {ruleset.country} rules)"
                    )
                elif rule.classification is Classification.SECRET:
                    problems.append(
                        f"{source}: {field}: {name!r} is Secret in {country}; "
                        "Secret indicators are never shared"
                    )
                elif agreement.max_classification < rule.classification:
                    problems.append(
                        f"{source}: {field}: {name!r} is {rule.classification.value} in "
                        f"{country}, above the agreement's max_classification "
                        f"{agreement.max_classification.value}"
                    )
                elif rule.category not in allowed_categories:
                    problems.append(
                        f"{source}: {field}: {name!r} has dissemination category "
                        f"{rule.category.value!r} in {country}, which the {urgency.value}-urgency "
                        f"tier cannot carry"
                    )
    return problems

