"""Property tests: random rounds, rule sets, agreements and ledger histories; every package
respects the invariants of the policy, whatever the combination."""

from __future__ import annotations

from datetime import date

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dissemination.classification import Classification, DisseminationCategory, Urgency
from dissemination.disclosure import SITES, build_content
from dissemination.policy import SITE, Agreement, RuleSet
from dissemination.sensitivity import active_relational, classify_round, select_for_agreement

KINDS = {
    "round_id": "round", "site_id": "key", "admin1_pcode": "admin", "admin2_pcode": "admin",
    "latitude": "coordinate", "idp_individuals": "count", "idp_female": "count",
    "idp_male": "count", "children": "count", "safety": "categorical", "military": "flag",
    "need": "categorical", "comments": "text",
}
COUNTS = [c for c, k in KINDS.items() if k == "count"]
RELATABLE = ["latitude", "idp_individuals", "children", "safety", "military", "need", "comments"]
LEVELS = {"admin1": ("admin1_pcode",), "admin2": ("admin2_pcode",)}


@st.composite
def rounds(draw):
    n = draw(st.integers(1, 25))
    a1 = draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=n, max_size=n))
    female = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    male = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    return pd.DataFrame({
        "round_id": "R1",
        "site_id": [f"S{i}" for i in range(n)],
        "admin1_pcode": a1,
        "admin2_pcode": [f"{a}{draw(st.integers(1, 2))}" for a in a1],
        "latitude": [float(i) for i in range(n)],
        "idp_female": female,
        "idp_male": male,
        "idp_individuals": [f + m for f, m in zip(female, male, strict=True)],
        "children": draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)),
        "safety": draw(st.lists(st.sampled_from(["all", "some", "none"]), min_size=n, max_size=n)),
        "military": draw(st.lists(st.sampled_from(["yes", "no"]), min_size=n, max_size=n)),
        "need": draw(st.lists(st.sampled_from(["food", "water"]), min_size=n, max_size=n)),
        "comments": draw(st.lists(st.sampled_from(["ok", "call +211 912 000 111", ""]),
                                  min_size=n, max_size=n)),
        "uncovered": "x",
    })


@st.composite
def rulesets(draw):
    levels = list(Classification)
    indicators = {}
    for column, kind in KINDS.items():
        indicators[column] = {
            "classification": draw(st.sampled_from(levels)).value,
            "category": draw(st.sampled_from(list(DisseminationCategory))).value,
            "kind": kind,
            "allow_free_text": kind == "text" and draw(st.booleans()),
        }
    relational = []
    for i in range(draw(st.integers(0, 3))):
        members = draw(st.lists(st.sampled_from(RELATABLE), min_size=2, max_size=3, unique=True))
        when = {"military": ["yes"]} if "military" in members and draw(st.booleans()) else {}
        relational.append({
            "name": f"r{i}", "indicators": members, "reason": "x", "when": when,
            "escalate_to": draw(st.sampled_from(levels)).value,
            "safe_at": draw(st.sampled_from([None, "admin1", "admin2"])),
        })
    return RuleSet.model_validate({
        "country": "TST", "version": "1", "indicators": indicators, "relational": relational,
        "admin_levels": LEVELS, "small_cells": {"threshold": draw(st.integers(1, 5))},
        "additive": [{"total": "idp_individuals", "parts": ["idp_female", "idp_male"]}],
        "risk_assessment": {"date": "2026-01-01", "review_every_days": 90},
    })


@st.composite
def agreements(draw):
    level = draw(st.sampled_from([None, "admin1", "admin2"]))
    requested = draw(st.lists(st.sampled_from([*KINDS, "uncovered"]), min_size=1, unique=True))
    if level:
        requested += [c for c in ("admin1_pcode", "admin2_pcode")[: 1 if level == "admin1" else 2]
                      if c not in requested]
    ceiling = draw(st.sampled_from(["public", "confidential"]))
    counts = [c for c in requested if c in COUNTS]
    exact = draw(st.lists(st.sampled_from(counts), unique=True)) if counts and \
        ceiling == "confidential" else []
    tier = {"indicators": requested, "aggregate_to": level, "exact_counts": exact}
    return Agreement.model_validate({
        "id": "a", "organisation": "Org", "focal_points": "fp", "purpose": "p",
        "valid_from": date(2026, 1, 1), "valid_until": date(2026, 12, 31), "countries": ["TST"],
        "max_classification": ceiling,
        "tiers": {"medium": {"window_hours": 48, **tier}, "low": tier},
        "destination": {"sftp_conn_id": "c", "remote_dir": "in"},
        "password": {"variable": "v", "rotate_every_days": 30},
    })


histories = st.dictionaries(st.sampled_from([SITE, "admin1", "admin2"]),
                            st.sets(st.sampled_from(RELATABLE)), max_size=3)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds(), rulesets(), agreements(), st.sampled_from(list(Urgency)), histories)
def test_every_package_respects_the_policy(df, ruleset, agreement, urgency, history):
    base = classify_round(df.columns, ruleset)
    active = active_relational(df, ruleset)
    selection = select_for_agreement(base, ruleset, agreement, urgency, active=active,
                                     previously_shared=history)
    content = build_content(df, selection, ruleset)
    frame = content.frame
    sources = {c.source for c in content.columns if c.source}
    ceiling = agreement.max_classification

    # 1. Nothing Secret, nothing uncovered, nothing unasked, ever.
    assert "uncovered" not in sources
    for c in content.columns:
        assert c.classification is not Classification.SECRET
        assert c.classification <= ceiling  # 2. nothing above the ceiling
        if c.source:
            assert base[c.source].classification is not Classification.SECRET
            assert c.source in agreement.tiers.get(urgency).indicators
    assert set(frame.columns) == {c.name for c in content.columns}

    # 3. No relational combination shared below its safe level, here or with the ledger.
    for rule in ruleset.relational:
        if rule.name not in active or ruleset.safe_at_level(rule, selection.level):
            continue
        earlier = set().union(*[cols for lvl, cols in history.items()
                                if not ruleset.safe_at_level(rule, lvl)]) if history else set()
        here = [m for m in rule.indicators if m in sources]
        if here and all(m in sources or m in earlier for m in rule.indicators):
            assert rule.escalate_to <= ceiling, rule
            for c in content.columns:
                if c.source in rule.indicators:
                    assert c.classification >= rule.escalate_to

    # 4. No count cell 1..threshold visible (except exact counts the agreement may receive).
    threshold = ruleset.small_cells.threshold
    counting = [c.name for c in content.columns
                if c.name == SITES or KINDS.get(c.source) == "count"
                or (selection.level != SITE and KINDS.get(c.source) in ("categorical", "flag"))]
    for name in counting:
        if name in selection.exact_counts:
            continue
        values = pd.to_numeric(frame[name], errors="coerce").dropna()
        assert not values.between(1, threshold).any(), name

    # 5. No suppressed cell recomputable from its group's total and other cells on its row.
    for total, parts in content.groups:
        members = [total, *parts]
        hidden = frame[members].isna().sum(axis=1)
        assert not (hidden == 1).any(), (total, parts)

    # Free text that leaves is redacted.
    if "comments" in frame:
        assert not frame["comments"].astype(str).str.contains("912").any()
