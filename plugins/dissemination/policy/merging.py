"""Merging a country's rule file over rules/default.yaml: add and tighten freely, loosen only
with a stated reason.

Apart from the models (rules.py) because the merge is where every inherited entry is judged.
"""

from __future__ import annotations

from pydantic import ValidationError

from ..classification import Classification
from .overrides import KEYS, drop_indicators, inherit
from .rules import CountryRules, DefaultRules, IndicatorRule, SmallCells
from .sites import merge_site_registry


def _merge_indicator(base: IndicatorRule | None, patch) -> IndicatorRule:
    """A country's entry over the default's: the fields it sets win."""
    fields = base.model_dump(exclude={"loosens_default"}) if base is not None else {}
    return IndicatorRule.model_validate({**fields, **patch.model_dump(exclude_unset=True)})


def _undated(indicators: dict[str, IndicatorRule], collection_date: str | None) -> list[str]:
    """A Secret collection date passes every model, then blocks every round: the contract
    drops Secret columns unread, and a round without its date cannot be dated."""
    rule = indicators.get(collection_date)
    return [f"collection_date: {collection_date!r} is Secret, and a Secret column is dropped "
            "unread, so no round could be dated and every round would be blocked; make it "
            "confidential and leave it out of agreements' indicators to keep it from partners"
            ] if rule is not None and rule.classification is Classification.SECRET else []


def merge_rules(default: DefaultRules | None, country: CountryRules) -> tuple[dict, list[str]]:
    """The country file over the default: it may add and tighten; loosening must say why.

    Returns the effective rule set's fields and the problems, each ``field: message``.
    """
    problems: list[str] = []
    loosened: list[str] = []
    indicators = _merge_indicators(default, country, problems, loosened)
    drops = country.drops_default
    found, reported = drop_indicators(indicators, drops.indicators, list(country.indicators),
                                      country.country)
    problems += found
    loosened += reported
    lists = {}
    for field in KEYS:
        lists[field], found, reported = inherit(
            field, getattr(default, field) if default else (), getattr(country, field),
            getattr(drops, field), country.country)
        problems += found
        loosened += reported
    small_cells = _merge_small_cells(default, country, problems, loosened)
    registry, registry_problems, registry_loosened = merge_site_registry(
        default.site_registry if default else None, country.site_registry, country.country)
    problems += registry_problems
    loosened += registry_loosened

    def inherited(field: str):
        return getattr(country, field) or (getattr(default, field) if default else None)

    problems += _undated(indicators, inherited("collection_date"))
    fields = dict(
        country=country.country,
        version=country.version,
        risk_assessment=country.risk_assessment,
        indicators=indicators,
        relational=lists["relational"],
        admin_levels=inherited("admin_levels") or {},
        site_key=inherited("site_key"),
        collection_date=inherited("collection_date"),
        small_cells=small_cells,
        additive=lists["additive"],
        urgent_signals=lists["urgent_signals"],
        site_registry=registry,
        default_version=default.version if default else None,
        loosened=tuple(loosened),
    )
    return fields, problems


def _merge_indicators(default: DefaultRules | None, country: CountryRules, problems: list[str],
                      loosened: list[str]) -> dict[str, IndicatorRule]:
    """The country's indicator entries over the default's; a loosening without a reason is a
    problem, one with a reason is reported."""
    indicators = dict(default.indicators) if default else {}
    for name, patch in country.indicators.items():
        base = indicators.get(name)
        try:
            rule = _merge_indicator(base, patch)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(f"indicators.{name}{'.' + loc if loc else ''}: "
                                f"{err['msg'].removeprefix('Value error, ')}")
            continue
        if base is not None and rule.looser_than(base):
            change = (f"{base.classification.value}/{base.category.value} -> "
                      f"{rule.classification.value}/{rule.category.value}")
            if rule.loosens_default is None:
                problems.append(f"indicators.{name}: {change} loosens rules/default.yaml; set "
                                "loosens_default: <reason> if that is intended")
            else:
                loosened.append(f"{country.country}: {name}: {change} ({rule.loosens_default})")
        indicators[name] = rule
    return indicators


def _merge_small_cells(default: DefaultRules | None, country: CountryRules, problems: list[str],
                       loosened: list[str]) -> SmallCells:
    """The country's small-cell rule: it may raise the default's, lowering the threshold needs a
    reason and lowering ``min_sites`` is refused."""
    small_cells = country.small_cells or (default.small_cells if default else None) or SmallCells()
    if default and default.small_cells and small_cells.min_sites < default.small_cells.min_sites:
        problems.append(f"small_cells.min_sites: {small_cells.min_sites} is below the default "
                        f"{default.small_cells.min_sites}; it can only be raised")
    if default and default.small_cells and small_cells.threshold < default.small_cells.threshold:
        if small_cells.loosens_default is None:
            problems.append(f"small_cells.threshold: {small_cells.threshold} is below the "
                            f"default {default.small_cells.threshold}; set loosens_default")
        else:
            loosened.append(f"{country.country}: small_cells.threshold "
                            f"{default.small_cells.threshold} -> {small_cells.threshold} "
                            f"({small_cells.loosens_default})")
    return small_cells
