"""The rounds and tables the disclosure benches build, as a run builds them.

Shared by ``disclosure_cost`` (what protection hides), ``disclosure_timing`` (what it takes) and
``disclosure_then`` (the engine before issue 32, in a subprocess with that engine's package). It
uses only the parts of ``dissemination`` that 082bcdf and main share (policy, synthetic rounds,
intake, classification), so the reference engine's process imports it too.
"""

from __future__ import annotations

from dataclasses import replace


def prepared(ruleset, sites: int):
    """A synthetic round of ``sites`` sites, conformed and classified once (as a pull does)."""
    from dissemination.devkit.synthetic import generate_round
    from dissemination.intake.contract import conform

    _, raw = generate_round(ruleset, 1, sites, seed=1)
    conformed = conform(raw, ruleset, first_row=1)
    assert not conformed.violations, conformed.violations[:3]
    df = conformed.frame
    return (df, *classified(df, ruleset))


def classified(df, ruleset) -> tuple:
    """The round's base classification and the relational rules its values trigger."""
    from dissemination.classify.sensitivity import active_relational, classify_round

    return classify_round(df.columns, ruleset), active_relational(df, ruleset)


def tables_of(policy, country: str, base, active) -> dict[str, list]:
    """Each agreement of ``country``: the selections of its tiers, one organisation's tables
    (each agreement of the benches' policies is its own organisation's)."""
    from dissemination.classification import Urgency
    from dissemination.classify.sensitivity import select_for_agreement

    ruleset = policy.rulesets[country]
    return {a.id: [select_for_agreement(base, ruleset, a, u, active=active)
                   for u in Urgency if a.tiers.get(u) is not None]
            for a in sorted(policy.agreements.values(), key=lambda a: a.id)
            if country in a.countries}


def countries(policy) -> list[str]:
    return sorted({c for a in policy.agreements.values() for c in a.countries})


def holders(tables: dict[str, list], grouped: bool = True) -> list[tuple[list, tuple]]:
    """The holders ``shared_decisions`` takes, each its parts and (none here) tables of linked
    rounds. ``grouped``: as ``runs.packaging`` calls it, organisations receiving the same tables
    but for the agreement's id are one holder (``alike``); else every organisation its own."""
    out: dict = {}
    for name, selections in tables.items():
        key = tuple(replace(s, agreement_id="") for s in selections) if grouped else name
        out.setdefault(key, ([(s, None) for s in selections], ()))
    return list(out.values())
