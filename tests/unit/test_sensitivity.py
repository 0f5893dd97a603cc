"""Classification and per-agreement selection: pure functions, no Airflow, no I/O."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from dissemination.classification import Classification, DisseminationCategory, Urgency
from dissemination.classify.sensitivity import UNCOVERED, classify_round, select_for_agreement
from dissemination.policy import Agreement, RuleSet


def test_a_column_no_rule_covers_is_secret_and_never_shared(policy, round_nga):
    _, df = round_nga
    ruleset = policy.rulesets["NGA"]
    assert "enumerator_id" in df.columns and "enumerator_id" not in ruleset.indicators
    base = classify_round([*df.columns, "surprise_column"], ruleset)
    for column in ("enumerator_id", "surprise_column"):
        assert base[column].classification is Classification.SECRET
        assert base[column].rule == UNCOVERED
    for agreement in policy.agreements.values():
        selection = select_for_agreement(base, ruleset, agreement, Urgency.MEDIUM)
        assert "enumerator_id" not in selection.columns
        assert "surprise_column" not in selection.columns


def test_secret_columns_never_leave_even_if_requested(policy):
    ruleset = policy.rulesets["NGA"]
    # Bypass the loader's check (it refuses such a file) to prove the engine refuses too.
    agreement = policy.agreements["unicef-nga"].model_copy(
        update={"tiers": policy.agreements["unicef-nga"].tiers.model_copy(update={
            "medium": policy.agreements["unicef-nga"].tiers.medium.model_copy(
                update={"indicators": ("site_id", "ki_phone", "ki_name")})})}
    )
    base = classify_round(["site_id", "ki_phone", "ki_name"], ruleset)
    selection = select_for_agreement(base, ruleset, agreement, Urgency.MEDIUM)
    assert selection.columns == ["site_id"]
    assert {d.reason for d in selection.decisions if not d.shared} == {"Secret never leaves"}


def test_safety_x_military_below_ceiling_drops_the_last_listed(policy):
    """The guideline's example: harmless alone, Confidential together."""
    ruleset = policy.rulesets["NGA"]
    agreement = policy.agreements["protection-cluster-nga"]  # ceiling: public
    base = classify_round(["site_id", "feeling_of_safety", "armed_actors_military"], ruleset)
    assert base["feeling_of_safety"].classification is Classification.PUBLIC
    assert base["armed_actors_military"].classification is Classification.PUBLIC
    selection = select_for_agreement(base, ruleset, agreement, Urgency.MEDIUM)
    assert selection.columns == ["site_id", "feeling_of_safety"]
    dropped = {d.column: d for d in selection.decisions if not d.shared}
    assert "relational rule safety_x_military" in dropped["armed_actors_military"].reason
    assert dropped["armed_actors_military"].rule.endswith("relational.safety_x_military")


def test_safety_x_military_within_ceiling_is_escalated(policy):
    ruleset = policy.rulesets["NGA"]
    unicef = policy.agreements["unicef-nga"]
    agreement = unicef.model_copy(update={"tiers": unicef.tiers.model_copy(update={
        "medium": unicef.tiers.medium.model_copy(
            update={"indicators": ("site_id", "feeling_of_safety", "armed_actors_military")})})})
    base = classify_round(["site_id", "feeling_of_safety", "armed_actors_military"], ruleset)
    selection = select_for_agreement(base, ruleset, agreement, Urgency.MEDIUM)
    assert selection.columns == ["site_id", "feeling_of_safety", "armed_actors_military"]
    shared = {d.column: d.classification for d in selection.shared}
    assert shared["feeling_of_safety"] is Classification.CONFIDENTIAL
    assert shared["armed_actors_military"] is Classification.CONFIDENTIAL
    assert shared["site_id"] is Classification.PUBLIC


def test_only_one_member_requested_is_not_escalated(policy):
    ruleset = policy.rulesets["NGA"]
    base = classify_round(["feeling_of_safety", "armed_actors_military"], ruleset)
    agreement = policy.agreements["protection-cluster-nga"]
    tiers = agreement.tiers.model_copy(update={"medium": agreement.tiers.medium.model_copy(
        update={"indicators": ("feeling_of_safety",)})})
    selection = select_for_agreement(base, ruleset, agreement.model_copy(update={"tiers": tiers}),
                                     Urgency.MEDIUM)
    assert [(d.column, d.classification) for d in selection.shared] == [
        ("feeling_of_safety", Classification.PUBLIC)]


def test_tier_not_requested_shares_nothing(policy):
    ruleset = policy.rulesets["NGA"]
    base = classify_round(list(ruleset.indicators), ruleset)
    agreement = policy.agreements["protection-cluster-nga"]
    medium_only = agreement.model_copy(
        update={"tiers": agreement.tiers.model_copy(update={"low": None})})
    selection = select_for_agreement(base, ruleset, medium_only, Urgency.LOW)
    assert selection.columns == []


# --- properties -------------------------------------------------------------------------------

_LEVELS = list(Classification)
#: Every rule set names its site key and collection date (letters outside the drawn names').
_IDENTITY = {"sk": {"classification": "public", "category": "public", "kind": "key"},
             "cd": {"classification": "public", "category": "public", "kind": "date"}}
_names = st.text("abcdefghij", min_size=1, max_size=6)


@st.composite
def scenarios(draw):
    names = draw(st.lists(_names, min_size=1, max_size=12, unique=True))
    indicators = {
        n: {"classification": draw(st.sampled_from(_LEVELS)).value,
            "category": draw(st.sampled_from(list(DisseminationCategory))).value,
            "kind": "count"}
        for n in names if draw(st.booleans())
    }
    known = sorted(indicators)
    relational = []
    if len(known) >= 2:
        for i in range(draw(st.integers(0, 3))):
            members = draw(st.lists(st.sampled_from(known), min_size=2, max_size=3, unique=True))
            relational.append({"name": f"r{i}", "indicators": members, "reason": "x",
                               "escalate_to": draw(st.sampled_from(_LEVELS)).value})
    ruleset = RuleSet.model_validate({
        "country": "TST", "version": "1", "relational": relational,
        "indicators": {**indicators, **_IDENTITY}, "site_key": "sk", "collection_date": "cd",
        "risk_assessment": {"date": "2026-01-01", "review_every_days": 90},
    })
    round_columns = draw(st.lists(st.sampled_from(names + ["unknown_a", "unknown_b"]),
                                  min_size=1, unique=True))
    requested = draw(st.lists(st.sampled_from(names + ["unknown_a"]), min_size=1, unique=True))
    agreement = Agreement.model_validate({
        "id": "a", "organisation": "org", "focal_points": "fp", "purpose": "p",
        "valid_from": date(2026, 1, 1), "valid_until": date(2026, 12, 31), "countries": ["TST"],
        "max_classification": draw(st.sampled_from(["public", "confidential"])),
        "tiers": {"medium": {"window_hours": 48, "indicators": requested},
                  "low": {"indicators": requested}},
        "destination": {"sftp_conn_id": "c", "remote_dir": "in"},
        "password": {"variable": "v", "rotate_every_days": 30},
    })
    return ruleset, agreement, round_columns, draw(st.sampled_from(list(Urgency)))


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_selection_invariants(scenario):
    ruleset, agreement, columns, urgency = scenario
    base = classify_round(columns, ruleset)
    selection = select_for_agreement(base, ruleset, agreement, urgency)
    shared = set(selection.columns)
    assert [d.column for d in selection.decisions] == columns  # one decision per source column
    for d in selection.shared:
        rule = ruleset.indicators.get(d.column)
        assert rule is not None, "a column no rule covers was shared"
        assert rule.classification is not Classification.SECRET
        assert d.classification <= agreement.max_classification
        assert rule.category is not DisseminationCategory.INTERNAL
        assert d.column in agreement.tiers.get(urgency).indicators
    for rule in ruleset.relational:
        if set(rule.indicators) <= shared and rule.indicators:
            assert rule.escalate_to <= agreement.max_classification
            for c in rule.indicators:
                assert next(d for d in selection.shared if d.column == c).classification \
                    >= rule.escalate_to
