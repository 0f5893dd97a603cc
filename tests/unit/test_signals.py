"""Urgent-action signals in the data."""

from __future__ import annotations

import pandas as pd

from dissemination.intake.signals import agreements_for_signals, detect


def test_threshold_and_jump(policy):
    ruleset = policy.rulesets["NGA"]
    before = pd.DataFrame({"site_id": ["a", "b", "c"], "unaccompanied_children": [0, 2, 11]})
    now = pd.DataFrame({"site_id": ["a", "b", "c", "d"],
                        "unaccompanied_children": [12, 8, 11, 3]})
    found = {s.name: s for s in detect(now, ruleset, before)}
    assert found["many_unaccompanied_children"].sites == 2  # a (12) and c (11)
    assert found["unaccompanied_children_jump"].sites == 2  # a (+12) and b (+6); d is new
    assert "2 site(s)" in found["unaccompanied_children_jump"].detail
    assert "12" not in found["many_unaccompanied_children"].detail  # counts, never values


def test_no_previous_round_means_no_jump_and_quiet_data_means_nothing(policy):
    ruleset = policy.rulesets["NGA"]
    quiet = pd.DataFrame({"site_id": ["a"], "unaccompanied_children": [1]})
    assert detect(quiet, ruleset) == []


def test_signals_start_the_agreements_that_cover_the_indicator(policy):
    now = pd.DataFrame({"site_id": ["a"], "unaccompanied_children": [30]})
    found = detect(now, policy.rulesets["NGA"])
    assert agreements_for_signals(policy, "NGA", found) == ["unicef-nga"]


def test_a_signal_on_a_non_count_is_a_policy_error(include):
    from dissemination.policy import PolicyError, load_policy

    path = include / "rules" / "default.yaml"
    path.write_text(path.read_text().replace("    indicator: unaccompanied_children\n    above",
                                             "    indicator: feeling_of_safety\n    above"))
    try:
        load_policy(include)
    except PolicyError as exc:
        assert any("urgent_signals.0 (many_unaccompanied_children): 'feeling_of_safety'" in p
                   for p in exc.problems)
    else:
        raise AssertionError("expected a PolicyError")
