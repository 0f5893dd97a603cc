"""Cross-checks of one agreement against the rule sets, focal points and organisations."""

from __future__ import annotations

from datetime import date

from .. import normalise
from ..classification import CATEGORIES_BY_URGENCY, Classification, Urgency
from .agreements import Agreement, Organisation, Tier
from .focal_points import FieldFocalPoint, FocalPoints
from .rules import SITE, IndicatorRule, RuleSet


def _check_organisation(agreement: Agreement, source: str,
                        organisations: dict[str, Organisation],
                        focal_points: dict[str, FocalPoints], broken: set[str]) -> list[str]:
    """The agreement's organisation exists, and its focal points belong to the same one."""
    problems = []
    if (agreement.organisation not in organisations
            and f"organisations/{agreement.organisation}" not in broken):
        problems.append(f"{source}: organisation: no file organisations/"
                        f"{agreement.organisation}.yaml (an organisation id, not a display name)")
    people = focal_points.get(agreement.focal_points)
    if people is not None and people.organisation != agreement.organisation:
        problems.append(f"{source}: focal_points: focal_points/{people.id}.yaml belongs to "
                        f"organisation {people.organisation!r}, the agreement to "
                        f"{agreement.organisation!r}")
    return problems


def _check_agreement(
    agreement: Agreement,
    source: str,
    rulesets: dict[str, RuleSet],
    focal_points: dict[str, FocalPoints],
    today: date | None,
    broken: set[str],
) -> list[str]:
    """Every problem of one agreement: its focal points' areas, its file, its date, its tiers.

    The checks run in this order so the report reads the same from one load to the next.
    """
    people = focal_points.get(agreement.focal_points)
    problems = _field_areas_problems(agreement, people, rulesets)
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
            if tier is not None:
                problems += _tier_problems(agreement, source, country, ruleset, urgency, tier)
    return problems


def _field_areas_problems(agreement: Agreement, people: FocalPoints | None,
                          rulesets: dict[str, RuleSet]) -> list[str]:
    """Field focal points' areas name admin columns and their declared values in each country.

    An area the rules do not know would never match a row, so that person would get no notice.
    """
    problems = []
    for i, person in enumerate(people.field if people else ()):
        for column in person.areas:
            for country in agreement.countries:
                if country in rulesets:
                    problems += _area_problems(people.id, i, person, column, country,
                                               rulesets[country])
    return problems


def _area_problems(people_id: str, i: int, person: FieldFocalPoint, column: str, country: str,
                   ruleset: RuleSet) -> list[str]:
    """One area column of one field focal point is an admin column with declared values.

    Values are compared as tokens, as rows are, so a spelling the rules accept is accepted here.
    """
    rule = ruleset.indicators.get(column)
    where = f"focal_points/{people_id}.yaml: field.{i}.areas"
    if rule is None:
        return [f"{where}: unknown column {column!r} in {country}"]
    if rule.kind != "admin":
        return [f"{where}: {column!r} is not an admin column in {country}"]
    if not rule.values:
        return []
    strays = [v for v in person.areas[column] if normalise.token(v) not in rule.canonical]
    if strays:
        return [f"{where}.{column}: {strays} are not declared values of {column} in {country}"]
    return []


def _tier_problems(agreement: Agreement, source: str, country: str, ruleset: RuleSet,
                   urgency: Urgency, tier: Tier) -> list[str]:
    """One urgency tier of the agreement fits ``country``'s rule set.

    Each tier is judged on its own: a fault in one must not hide the faults of another.
    """
    prefix = f"{source}: tiers.{urgency.value}"
    problems = _aggregate_to_problems(prefix, country, ruleset, tier)
    for i, name in enumerate(tier.exact_counts):
        rule = ruleset.indicators.get(name)
        if rule is not None and rule.kind != "count":
            problems.append(f"{prefix}.exact_counts.{i}: {name!r} is not a count")
        elif agreement.max_classification < Classification.CONFIDENTIAL:
            problems.append(f"{prefix}.exact_counts.{i}: exact counts need a "
                            "confidential agreement (max_classification)")
    for i, name in enumerate(tier.indicators):
        field = f"tiers.{urgency.value}.indicators.{i}"
        problem = _indicator_problem(agreement, country, ruleset, urgency, name,
                                     ruleset.indicators.get(name))
        if problem:
            problems.append(f"{source}: {field}: {problem}")
    return problems


def _aggregate_to_problems(prefix: str, country: str, ruleset: RuleSet, tier: Tier) -> list[str]:
    """A tier's ``aggregate_to`` is an admin level of ``country`` whose columns the tier carries.

    Aggregating to a level needs that level's columns, else the groups have no names.
    """
    if tier.aggregate_to is None:
        return []
    level = ruleset.resolve_level(tier.aggregate_to)
    if level is None or level == SITE:
        return [f"{prefix}.aggregate_to: {tier.aggregate_to!r} is not one of "
                f"{country}'s admin_levels {list(ruleset.admin_levels)}"]
    missing = [c for c in ruleset.admin_levels[level] if c not in tier.indicators]
    if missing:
        return [f"{prefix}.aggregate_to: aggregating to "
                f"{tier.aggregate_to} needs {missing} among the indicators"]
    return []


def _indicator_problem(agreement: Agreement, country: str, ruleset: RuleSet, urgency: Urgency,
                       name: str, rule: IndicatorRule | None) -> str | None:
    """Why one indicator of a tier may not be shared under the agreement, or None if it may.

    The first reason only: later ones follow from it (an unknown column has no classification).
    """
    if rule is not None and rule.kind == "text" and not rule.allow_free_text:
        return f"{name!r} is free text, Secret unless the {country} rules set allow_free_text"
    if rule is None:
        return f"unknown indicator {name!r} for {country} (not in {ruleset.country} rules)"
    if rule.classification is Classification.SECRET:
        return f"{name!r} is Secret in {country}; Secret indicators are never shared"
    if agreement.max_classification < rule.classification:
        return (f"{name!r} is {rule.classification.value} in {country}, above the agreement's "
                f"max_classification {agreement.max_classification.value}")
    if rule.category not in CATEGORIES_BY_URGENCY[urgency]:
        return (f"{name!r} has dissemination category {rule.category.value!r} in {country}, "
                f"which the {urgency.value}-urgency tier cannot carry")
    return None
