"""The sensitivity engine on small hand-made rounds: every capability, one test each."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from dissemination.classification import Classification, Urgency
from dissemination.classify.sensitivity import (
    active_relational,
    classify_round,
    select_for_agreement,
)
from dissemination.delivery import ReviewOverdue
from dissemination.disclosure import REDACTED, SITES, build_content, explain, redact
from dissemination.intake.source import RoundMeta
from dissemination.ledger.holdings import DisclosureState, Held, Holdings
from dissemination.policy import Agreement
from dissemination.runs import Findings, PackagingRun, package_deliveries, plan_deliveries

PASSWORD = "a-long-enough-test-password"


def _agreement(policy, base_id: str, urgency: Urgency, **tier_update) -> Agreement:
    agreement = policy.agreements[base_id]
    tier = agreement.tiers.get(urgency).model_copy(update=tier_update)
    return agreement.model_copy(update={"tiers": agreement.tiers.model_copy(
        update={urgency.value: tier})})


def _held(levels: dict[str, set[str]], name: str = "Protection Sector Nigeria") -> Holdings:
    """What an organisation holds: level -> columns, from an earlier round."""
    return Holdings("org", name, "NGA", [Held(c, level, "NGA-R000-partial", "delivered earlier")
                                         for level, cols in levels.items() for c in sorted(cols)])


def _content(df, policy, country, agreement, urgency, **kwargs):
    ruleset = policy.rulesets[country]
    base = classify_round(df.columns, ruleset)
    selection = select_for_agreement(base, ruleset, agreement, urgency,
                                     active=active_relational(df, ruleset), **kwargs)
    return selection, build_content(df, selection, ruleset)


# --- relational within a round -------------------------------------------------------------------

def test_condition_not_met_leaves_the_combination_alone(policy):
    """No military anywhere in the round: safety x military is not sensitive."""
    df = pd.DataFrame({"site_id": ["a", "b"], "feeling_of_safety": ["all_feel_safe"] * 2,
                       "armed_actors_military": ["no", "no"]})
    assert active_relational(df, policy.rulesets["NGA"]) == frozenset()
    selection, _ = _content(df, policy, "NGA", policy.agreements["protection-cluster-nga"],
                            Urgency.MEDIUM)
    assert {"feeling_of_safety", "armed_actors_military"} <= set(selection.columns)


def test_condition_met_drops_military_at_site_level(policy):
    df = pd.DataFrame({"site_id": ["a", "b"], "feeling_of_safety": ["some_feel_safe"] * 2,
                       "armed_actors_military": ["no", "yes"]})
    assert active_relational(df, policy.rulesets["NGA"]) == {"safety_x_military"}
    selection, _ = _content(df, policy, "NGA", policy.agreements["protection-cluster-nga"],
                            Urgency.MEDIUM)
    assert "feeling_of_safety" in selection.columns
    assert "armed_actors_military" not in selection.columns


def test_aggregated_to_the_safe_level_the_combination_is_shared(policy, round_nga):
    """The guideline's example, per state: both indicators, as numbers of sites per value."""
    _, df = round_nga
    agreement = policy.agreements["protection-cluster-nga"]  # low tier: aggregate_to admin1
    selection, content = _content(df, policy, "NGA", agreement, Urgency.LOW)
    assert selection.level == "admin1"
    assert {"feeling_of_safety", "armed_actors_military"} <= set(selection.columns)
    frame = content.frame
    assert list(frame["admin1_pcode"]) == sorted(df["admin1_pcode"].unique())
    assert "armed_actors_military=yes" in frame and "feeling_of_safety=none_feel_safe" in frame
    for admin1, group in df.groupby("admin1_pcode"):
        row = frame[frame["admin1_pcode"] == admin1].iloc[0]
        if not pd.isna(row[SITES]):
            assert row[SITES] == len(group)
        if not pd.isna(row["idp_individuals"]):
            assert row["idp_individuals"] == group["idp_individuals"].sum()
    for column in ("site_id", "latitude", "collected_on"):
        assert column not in frame
    assert all(c.classification is not Classification.SECRET for c in content.columns)


def test_aggregation_drops_site_level_columns_with_a_reason(policy, round_nga):
    _, df = round_nga
    agreement = _agreement(policy, "protection-cluster-nga", Urgency.LOW,
                           indicators=("round_id", "admin1_pcode", "admin1_name", "site_id",
                                       "idp_individuals"))
    selection, _ = _content(df, policy, "NGA", agreement, Urgency.LOW)
    (site,) = [d for d in selection.decisions if d.column == "site_id"]
    assert not site.shared and site.reason == "site-level column, dropped by aggregation to admin1"


def test_secret_escalation_drops_even_for_a_confidential_partner(policy):
    """SSD: unaccompanied children next to military presence per site is Secret."""
    df = pd.DataFrame({"site_id": ["s1", "s2"], "unaccompanied_children": [4, 0],
                       "armed_actors_military": ["yes", "no"]})
    agreement = _agreement(policy, "unicef-ssd", Urgency.LOW, aggregate_to=None,
                           indicators=("site_id", "unaccompanied_children",
                                       "armed_actors_military"))
    selection, _ = _content(df, policy, "SSD", agreement, Urgency.LOW)
    assert selection.columns == ["site_id", "unaccompanied_children"]
    (entry,) = [e for e in explain(selection) if e["column"] == "armed_actors_military"]
    assert entry["decision"] == "dropped" and "children_x_military" in entry["rule"]


def test_escalation_within_the_ceiling_is_explained(policy):
    df = pd.DataFrame({"site_id": ["a"], "feeling_of_safety": ["none_feel_safe"],
                       "armed_actors_military": ["yes"]})
    agreement = _agreement(policy, "unicef-nga", Urgency.MEDIUM,
                           indicators=("site_id", "feeling_of_safety", "armed_actors_military"),
                           exact_counts=())
    selection, content = _content(df, policy, "NGA", agreement, Urgency.MEDIUM)
    entries = {e["column"]: e for e in explain(selection, content)}
    assert entries["feeling_of_safety"]["actions"] == ["escalated"]
    assert entries["feeling_of_safety"]["classification"] == "confidential"
    assert "relational.safety_x_military" in entries["feeling_of_safety"]["rule"]


# --- relational across deliveries --------------------------------------------------------------

def test_a_combination_completed_with_an_earlier_delivery_is_broken(policy):
    """Military per site was delivered last month; safety per site now would complete it."""
    df = pd.DataFrame({"site_id": ["a"], "feeling_of_safety": ["few"],
                       "armed_actors_military": ["yes"]})
    agreement = _agreement(policy, "protection-cluster-nga", Urgency.MEDIUM,
                           indicators=("site_id", "feeling_of_safety"))
    alone, _ = _content(df, policy, "NGA", agreement, Urgency.MEDIUM)
    assert "feeling_of_safety" in alone.columns
    together, _ = _content(df, policy, "NGA", agreement, Urgency.MEDIUM,
                           held=_held({"site": {"site_id", "armed_actors_military"}}))
    assert "feeling_of_safety" not in together.columns
    (d,) = [d for d in together.decisions if d.column == "feeling_of_safety"]
    assert d.reason.startswith("withheld: would complete safety_x_military with what "
                               "Protection Sector Nigeria already holds (armed_actors_military: "
                               "round NGA-R000-partial, level site")


def test_an_earlier_delivery_at_the_safe_level_does_not_count(policy):
    df = pd.DataFrame({"site_id": ["a"], "feeling_of_safety": ["few"],
                       "armed_actors_military": ["yes"]})
    agreement = _agreement(policy, "protection-cluster-nga", Urgency.MEDIUM,
                           indicators=("site_id", "feeling_of_safety"))
    selection, _ = _content(df, policy, "NGA", agreement, Urgency.MEDIUM,
                            held=_held({"admin1": {"armed_actors_military"}}))
    assert "feeling_of_safety" in selection.columns


def test_plan_reads_the_history_of_the_organisation(policy, round_nga):
    meta, df = round_nga
    asked = []

    def history(organisation, country):
        asked.append((organisation, country))
        return _held({"site": {"armed_actors_military"}}).items

    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2026, 11, 2), only=["protection-cluster-nga"],
                                  found=Findings(active=["safety_x_military"]),
                                  state=DisclosureState(history))
    assert asked == [("protection-sector-nga", "NGA")]  # by id, never by display name
    assert "feeling_of_safety" not in plans[0].selection.columns


# --- temporal -----------------------------------------------------------------------------------

def test_overdue_review_stops_the_low_path(policy):
    meta = RoundMeta("SSD-R001-cleaned", "SSD", "cleaned", pd.Timestamp("2027-01-05", tz="UTC"))
    with pytest.raises(ReviewOverdue, match="due for review on 2026-12-30"):
        plan_deliveries(policy, meta, ["site_id"], Urgency.LOW, today=date(2027, 1, 5))


def test_a_risk_assessment_dated_after_today_stops_the_low_path(policy):
    """Not made yet, or a typo (2062 for 2026): it would never fall due for review."""
    meta = RoundMeta("SSD-R001-cleaned", "SSD", "cleaned", pd.Timestamp("2026-08-05", tz="UTC"))
    with pytest.raises(ReviewOverdue, match="is dated 2026-09-01, after today "
                                                  r"\(2026-08-31\)"):
        plan_deliveries(policy, meta, ["site_id"], Urgency.LOW, today=date(2026, 8, 31))
    assert plan_deliveries(policy, meta, ["site_id"], Urgency.LOW,
                                 today=date(2026, 9, 1)) is not None


def test_overdue_review_flags_but_does_not_stop_the_medium_path(policy, tmp_path):
    import sqlalchemy as sa

    from dissemination.devkit.synthetic import generate_round
    from dissemination.ledger.migrations import open_upgraded

    meta, df = generate_round(policy.rulesets["SSD"], 1, 40, seed=2)
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2027, 1, 5))
    assert plans and all("was due for review on 2026-12-30" in w
                         for p in plans for w in p.warnings)
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'l.db'}"))
    (packaged,) = package_deliveries(df, meta, plans, policy, tmp_path, lambda v: PASSWORD,
                                           ledger,
                                           PackagingRun(pd.Timestamp("2027-01-05", tz="UTC")))
    from dissemination.package.archive import open_package

    manifest, _ = open_package(packaged.package_path, PASSWORD)
    assert manifest["warnings"] == list(plans[0].warnings)


# --- small cells --------------------------------------------------------------------------------

def test_small_counts_are_suppressed_and_zero_is_not(policy):
    df = pd.DataFrame({"round_id": "R", "site_id": list("abcdef"),
                       "idp_households": [0, 1, 2, 3, 4, 250]})
    agreement = _agreement(policy, "unicef-nga", Urgency.LOW,
                           indicators=("round_id", "site_id", "idp_households"), exact_counts=())
    _, content = _content(df, policy, "NGA", agreement, Urgency.LOW)
    assert content.frame["idp_households"].tolist() == [0, None, None, None, 4, 250] or \
        [None if pd.isna(v) else v for v in content.frame["idp_households"]] == \
        [0, None, None, None, 4, 250]
    assert content.suppressed == {"idp_households": 3}


def test_exact_counts_are_not_suppressed(policy):
    df = pd.DataFrame({"round_id": "R", "site_id": list("ab"), "unaccompanied_children": [1, 2]})
    agreement = _agreement(policy, "unicef-nga", Urgency.MEDIUM,
                           indicators=("round_id", "site_id", "unaccompanied_children"),
                           exact_counts=("unaccompanied_children",))
    _, content = _content(df, policy, "NGA", agreement, Urgency.MEDIUM)
    assert content.frame["unaccompanied_children"].tolist() == [1, 2]


def test_secondary_suppression_protects_a_part_from_its_total(policy):
    """idp_female = 2 is small; with total and idp_male visible it could be recomputed."""
    df = pd.DataFrame({"round_id": "R", "site_id": ["a", "b"], "idp_individuals": [102, 300],
                       "idp_female": [2, 150], "idp_male": [100, 150]})
    agreement = _agreement(policy, "unicef-nga", Urgency.LOW, exact_counts=(),
                           indicators=("round_id", "site_id", "idp_individuals", "idp_female",
                                       "idp_male"))
    _, content = _content(df, policy, "NGA", agreement, Urgency.LOW)
    row = content.frame.iloc[0]
    assert pd.isna(row["idp_female"])
    # one more cell of the row, the smallest non-zero one: the male count
    assert pd.isna(row["idp_male"]) and row["idp_individuals"] == 102
    assert content.frame.iloc[1].tolist()[2:] == [300, 150, 150]
    assert content.suppressed == {"idp_female": 1, "idp_male": 1}


def test_secondary_suppression_on_aggregated_categories(policy):
    """One admin1 with 2 sites of 'none_feel_safe' among 10: hidden, and one more with it."""
    df = pd.DataFrame({
        "round_id": "R", "admin1_pcode": "A1", "admin1_name": "One",
        "idp_individuals": 50,
        "feeling_of_safety": ["none_feel_safe"] * 2 + ["all_feel_safe"] * 8,
        "armed_actors_military": "no", "primary_need": "food",
    })
    _, content = _content(df, policy, "NGA", policy.agreements["protection-cluster-nga"],
                          Urgency.LOW)
    row = content.frame.iloc[0]
    assert pd.isna(row["feeling_of_safety=none_feel_safe"])
    # feeling_of_safety is a member of safety_x_military: its zeros say "no site here has this
    # value", so they are hidden too. With only them, 10 - 8 = 2 would bound the small cell by
    # its own value; the protection level (3 above it) hides the 8 as well (finding 3).
    zeros = [c for c in content.frame if c.startswith("feeling_of_safety=")
             and c not in ("feeling_of_safety=none_feel_safe", "feeling_of_safety=all_feel_safe")]
    assert zeros and all(pd.isna(row[c]) for c in zeros)
    assert pd.isna(row["feeling_of_safety=all_feel_safe"])
    assert row[SITES] == 10


def test_an_area_of_three_sites_shows_its_number_of_sites(policy):
    """Issue #32, finding 4: a 3-site area (not under ``min_sites``) showed its counts and
    hid ``sites`` as a small count, which public site lists give anyway."""
    df = pd.DataFrame({
        "round_id": "R", "admin1_pcode": ["A1"] * 3 + ["A2"] * 10, "admin1_name": "One",
        "idp_individuals": 50, "feeling_of_safety": "all_feel_safe",
        "armed_actors_military": "no", "primary_need": "food",
    })
    _, content = _content(df, policy, "NGA", policy.agreements["protection-cluster-nga"],
                          Urgency.LOW)
    assert content.frame[SITES].tolist() == [3, 10]


# --- free text ----------------------------------------------------------------------------------

def test_free_text_is_secret_unless_allowed(policy):
    nga = classify_round(["enumerator_comments"], policy.rulesets["NGA"])
    ssd = classify_round(["enumerator_comments"], policy.rulesets["SSD"])
    assert nga["enumerator_comments"].classification is Classification.SECRET
    assert ssd["enumerator_comments"].classification is Classification.CONFIDENTIAL


def test_redaction_of_phones_emails_and_ids():
    values = pd.Series(["Call +211 912 345 678 now", "mail a.b@ngo.org", "ID 12345678",
                        "Road flooded", None, "2 water points"])
    redacted, n = redact(values)
    assert n == 3
    assert redacted.tolist()[:4] == [f"Call {REDACTED} now", f"mail {REDACTED}",
                                     f"ID {REDACTED}", "Road flooded"]
    assert redacted.tolist()[5] == "2 water points"


def test_allowed_free_text_is_redacted_in_the_package(policy):
    df = pd.DataFrame({"round_id": "R", "site_id": ["a", "b"], "admin1_pcode": "X",
                       "admin1_name": "X",
                       "enumerator_comments": ["call me on +211 912 000 111", "fine"]})
    agreement = _agreement(policy, "unicef-ssd", Urgency.LOW, aggregate_to=None,
                           indicators=("round_id", "site_id", "enumerator_comments"))
    selection, content = _content(df, policy, "SSD", agreement, Urgency.LOW)
    assert content.frame["enumerator_comments"].tolist() == [f"call me on {REDACTED}", "fine"]
    entry = next(e for e in explain(selection, content) if e["column"] == "enumerator_comments")
    assert entry["actions"] == ["redacted"] and "redacted 1 value(s)" in entry["notes"][0]
