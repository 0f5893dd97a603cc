"""Property tests: random rounds, rule sets, agreements and ledger histories; every package
respects the invariants of the policy, whatever the combination."""

from __future__ import annotations

from datetime import date

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dissemination.classification import Classification, DisseminationCategory, Urgency
from dissemination.classify.sensitivity import (
    active_relational,
    classify_round,
    select_for_agreement,
)
from dissemination.disclosure import SITES, build_content
from dissemination.intake import contacts
from dissemination.intake.columns import as_arrow
from dissemination.intake.contract import conform
from dissemination.ledger.holdings import Held, Holdings
from dissemination.policy import SITE, Agreement, RuleSet

KINDS = {
    "round_id": "round", "site_id": "key", "admin1_pcode": "admin", "admin2_pcode": "admin",
    "collected_on": "date", "latitude": "coordinate", "idp_individuals": "count",
    "idp_female": "count", "idp_male": "count", "children": "count", "safety": "categorical",
    "military": "flag", "need": "categorical", "comments": "text",
}
COUNTS = [c for c, k in KINDS.items() if k == "count"]
RELATABLE = ["latitude", "idp_individuals", "children", "safety", "military", "need", "comments"]
LEVELS = {"admin1": ("admin1_pcode",), "admin2": ("admin2_pcode",)}
#: Answers a contract may declare, and spellings an export may use for them.
LABELS = ["all", "some", "nobody", "None", "food", "water", "N/A", "ne sait pas"]
JUNK = st.one_of(
    st.text(max_size=12), st.integers(-5, 10**12), st.floats(allow_nan=False),
    st.booleans(), st.none(),
    st.sampled_from(["None", "NA", "", " ", "+234 803 555 0199", "x@y.org", "Yes", " YES ",
                     "1", "TRUE", "12.5", "-3", "1e3", "2026-13-45", "Musa Bello", "ｙｅｓ"]),
)


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
    for column in ("safety", "need"):
        indicators[column]["values"] = draw(st.lists(st.sampled_from(LABELS), min_size=1,
                                                     max_size=4, unique=True))
        indicators[column]["missing"] = draw(st.lists(st.sampled_from(["NA", "N/A"]),
                                                      unique=True))
        indicators[column]["missing"] = [m for m in indicators[column]["missing"]
                                         if m not in indicators[column]["values"]]
    indicators["military"] |= {"values": ["yes", "no"],
                               "synonyms": {"yes": ["true", "1"], "no": ["false", "0"]}}
    low = draw(st.integers(-90, 0))
    indicators["latitude"]["bounds"] = [low, draw(st.integers(low, 90))]
    relational = []
    for i in range(draw(st.integers(0, 3))):
        members = draw(st.lists(st.sampled_from(RELATABLE), min_size=2, max_size=3, unique=True))
        when = {"military": ["yes"]} if "military" in members and draw(st.booleans()) else {}
        if draw(st.booleans()):
            per_level = {"escalate_to": draw(st.sampled_from(levels)).value,
                         "safe_at": draw(st.sampled_from([None, "admin1", "admin2"]))}
        else:
            chosen = draw(st.lists(st.sampled_from(["admin1", "admin2"]), unique=True))
            per_level = {"levels": {lvl: draw(st.sampled_from(levels)).value
                                    for lvl in [SITE, *chosen]}}
        relational.append({"name": f"r{i}", "indicators": members, "reason": "x", "when": when,
                           **per_level})
    return RuleSet.model_validate({
        "country": "TST", "version": "1", "indicators": indicators, "relational": relational,
        "admin_levels": LEVELS, "small_cells": {"threshold": draw(st.integers(1, 5))},
        "additive": [{"total": "idp_individuals", "parts": ["idp_female", "idp_male"]}],
        "site_key": "site_id", "collection_date": "collected_on",
        "risk_assessment": {"date": "2026-01-01", "review_every_days": 90},
    })


@st.composite
def rounds(draw, ruleset: RuleSet):
    """A round that keeps its contract: declared values only, counts within bounds."""
    n = draw(st.integers(1, 25))
    a1 = draw(st.lists(st.sampled_from(["A", "B", "C"]), min_size=n, max_size=n))
    female = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    male = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    low, high = ruleset.indicators["latitude"].bounds

    def declared(column):
        return draw(st.lists(st.sampled_from(ruleset.indicators[column].values), min_size=n,
                             max_size=n))

    return pd.DataFrame({
        "round_id": "TST-R001-partial",
        "site_id": [f"S{i}" for i in range(n)],
        "admin1_pcode": a1,
        "admin2_pcode": [f"{a}{draw(st.integers(1, 2))}" for a in a1],
        "collected_on": "2026-11-03",
        "latitude": draw(st.lists(st.floats(low, high), min_size=n, max_size=n)),
        "idp_female": female,
        "idp_male": male,
        "idp_individuals": [f + m for f, m in zip(female, male, strict=True)],
        "children": draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)),
        "safety": declared("safety"),
        "military": declared("military"),
        "need": declared("need"),
        "comments": draw(st.lists(st.sampled_from(["ok", "call +211 912 000 111", ""]),
                                  min_size=n, max_size=n)),
        "uncovered": "x",
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
        "id": "a", "organisation": "org", "focal_points": "fp", "purpose": "p",
        "valid_from": date(2026, 1, 1), "valid_until": date(2026, 12, 31), "countries": ["TST"],
        "max_classification": ceiling,
        "tiers": {"medium": {"window_hours": 48, **tier}, "low": tier},
        "destination": {"sftp_conn_id": "c", "remote_dir": "in"},
        "password": {"variable": "v", "rotate_every_days": 30},
    })


histories = st.dictionaries(st.sampled_from([SITE, "admin1", "admin2"]),
                            st.sets(st.sampled_from(RELATABLE)), max_size=3)


@st.composite
def scenarios(draw):
    ruleset = draw(rulesets())
    return ruleset, draw(rounds(ruleset))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), agreements(), st.sampled_from(list(Urgency)), histories)
def test_every_package_respects_the_policy(scenario, agreement, urgency, history):
    ruleset, df = scenario
    df = conform(df, ruleset, first_row=1).raise_if_broken("a round that keeps its contract")
    df = df.frame
    base = classify_round(df.columns, ruleset)
    active = active_relational(df, ruleset)
    held = Holdings("org", "Org", "TST", [Held(c, level, "R0", "earlier")
                                          for level, cols in history.items() for c in cols])
    selection = select_for_agreement(base, ruleset, agreement, urgency, active=active,
                                     held=held)
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

    # 3. No relational combination the organisation would hold (this package with what it
    #    held before, each member at the finest level held, the join as coarse as its coarsest
    #    member) above the agreement's ceiling; the package's members carry its class.
    rank = ruleset.level_rank
    for rule in ruleset.relational:
        here = [m for m in rule.indicators if m in sources]
        levels = {m: [selection.level] * (m in sources)
                  + [lvl for lvl, cols in history.items() if m in cols]
                  for m in rule.indicators}
        if not here or not all(levels.values()):
            continue
        combined = min((max(lv, key=rank) for lv in levels.values()), key=rank)
        together = ruleset.relational_at(rule, combined)
        if together is Classification.PUBLIC:
            continue
        if rule.name in active or any(m in cols for cols in history.values()
                                      for m in rule.indicators):
            assert together <= ceiling, rule
            for c in content.columns:
                if c.source in rule.indicators:
                    assert c.classification >= together

    # 4. No count cell 1..threshold visible (except exact counts the agreement may receive);
    #    ``sites`` always visible: site lists are public (issue #32, finding 4).
    assert SITES not in frame or not frame[SITES].isna().any()
    threshold = ruleset.small_cells.threshold
    counting = [c.name for c in content.columns
                if KINDS.get(c.source) == "count"
                or (selection.level != SITE and KINDS.get(c.source) in ("categorical", "flag"))]
    for name in counting:
        if name in selection.exact_counts:
            continue
        values = pd.to_numeric(frame[name], errors="coerce").dropna()
        assert not values.between(1, threshold).any(), name

    # 5. No suppressed cell recomputable from its group's total and other cells on its row
    #    (except a question with one declared answer: its count is the public number of sites).
    for total, parts in content.groups:
        if total == SITES and len(parts) == 1:
            continue
        members = [total, *parts]
        hidden = frame[members].isna().sum(axis=1)
        if (hidden == 1).any():  # only a primary the rest, received exactly, gives: said so
            assert len(set(members) - set(selection.exact_counts)) == 1, (total, parts)
            assert any("can compute" in n for notes in content.notes.values() for n in notes)

    # Free text that leaves is redacted.
    if "comments" in frame:
        assert not frame["comments"].astype(str).str.contains("912").any()


@st.composite
def junk(draw, df: pd.DataFrame):
    """Random cells of any column overwritten with anything an export might hold."""
    cells = draw(st.lists(st.tuples(st.integers(0, len(df) - 1),
                                    st.sampled_from(list(df.columns)), JUNK), max_size=6))
    dirty = df.astype(object)
    for row, column, value in cells:
        dirty.at[row, column] = value
    return dirty


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), agreements(), st.sampled_from(list(Urgency)), st.data())
def test_no_value_outside_its_contract_ever_reaches_a_package(scenario, agreement, urgency,
                                                              data):
    """Random contracts, random rounds, random junk in any column: either the round is blocked,
    or every value in every package is one its contract allows."""
    ruleset, clean = scenario
    assert conform(clean, ruleset, first_row=1).violations == []  # no false alarm
    dirty = data.draw(junk(clean))
    conformed = conform(dirty, ruleset, first_row=1)
    for v in conformed.violations:  # blocked, and the message carries no value
        assert not any(str(x) in v.line() for x in ("+234", "x@y.org", "Musa Bello"))
    if conformed.violations:
        return
    df = conformed.frame
    selection = select_for_agreement(classify_round(df.columns, ruleset), ruleset, agreement,
                                     urgency, active=active_relational(df, ruleset))
    content = build_content(df, selection, ruleset)
    for column in content.columns:
        if not column.source:
            continue
        rule = ruleset.indicators[column.source]
        values = content.frame[column.name].dropna()
        if selection.level != SITE and rule.kind in ("categorical", "flag"):
            assert column.name.split("=", 1)[1] in rule.values  # headers from declared values
            assert (pd.to_numeric(values) >= 0).all()
        elif rule.values:
            assert set(values) <= set(rule.values), column
        elif rule.kind == "count":
            numbers = pd.to_numeric(values).astype("float64")
            assert (numbers >= 0).all() and (numbers % 1 == 0).all()
        elif rule.kind == "coordinate":
            low, high = rule.bounds
            assert pd.to_numeric(values).between(low, high).all()
        elif rule.kind == "date":
            assert values.astype(str).str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
        elif rule.kind in ("key", "admin", "round"):
            assert not contacts.found(as_arrow(values.astype(str))).any()
        elif rule.kind == "text":
            assert not contacts.found(as_arrow(values.astype(str))).any()
            assert not values.astype(str).str.contains(contacts.ID_LIKE).any()
