"""Policy files: the shipped ones load, and every kind of bad file fails naming file and field."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from conftest import POLICY_DIR

from dissemination.classification import Classification, Urgency
from dissemination.policy import PolicyError, load_policy


def test_shipped_policy_loads(policy):
    assert set(policy.rulesets) >= {"NGA"}
    assert {"unicef-nga", "protection-cluster-nga"} <= set(policy.agreements)
    assert all(a.focal_points in policy.focal_points for a in policy.agreements.values())
    assert [a.id for a in policy.agreements_for("NGA", Urgency.MEDIUM)] == sorted(
        a.id for a in policy.agreements.values()
        if a.tiers.medium is not None and "NGA" in a.countries
    )


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"test setup: {old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _problems(include: Path, **kwargs) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        load_policy(include, **kwargs)
    return exc.value.problems


def test_typo_in_a_field_is_named(include):
    path = include / "agreements" / "unicef-nga.yaml"
    _edit(path, "max_classification:", "max_clasification:")
    problems = _problems(include)
    assert any(str(path) in p and "max_clasification" in p and "Extra inputs" in p
               for p in problems), problems
    assert any(str(path) in p and "max_classification" in p and "required" in p
               for p in problems), problems


def test_unknown_indicator_in_an_agreement(include):
    path = include / "agreements" / "unicef-nga.yaml"
    _edit(path, "idp_households, idp_individuals,", "idp_househols, idp_individuals,")
    (problem,) = _problems(include)
    assert str(path) in problem
    assert re.search(r"tiers\.low\.indicators\.4: unknown indicator 'idp_househols'", problem)


def test_agreement_asking_for_a_secret_indicator(include):
    path = include / "agreements" / "unicef-nga.yaml"
    _edit(path, "primary_need]", "primary_need, ki_phone]")
    (problem,) = _problems(include)
    assert str(path) in problem and "'ki_phone' is Secret" in problem
    assert "tiers.low.indicators.11" in problem


def test_agreement_cannot_set_a_secret_ceiling(include):
    path = include / "agreements" / "unicef-nga.yaml"
    _edit(path, "max_classification: confidential", "max_classification: secret")
    problems = _problems(include)
    assert any(str(path) in p and p.split(": ")[1] == "max_classification" for p in problems)


def test_indicator_above_the_ceiling(include):
    path = include / "agreements" / "protection-cluster-nga.yaml"
    _edit(path, "feeling_of_safety,", "feeling_of_safety, unaccompanied_children,")
    (problem,) = _problems(include)
    assert "'unaccompanied_children' is confidential" in problem
    assert "max_classification public" in problem


def test_monthly_indicator_on_the_medium_tier(include):
    path = include / "agreements" / "protection-cluster-nga.yaml"
    _edit(path, "feeling_of_safety,", "feeling_of_safety, idp_female,")
    (problem,) = _problems(include)
    assert "tiers.medium.indicators.7: 'idp_female' has dissemination category 'monthly'" in problem


def test_expired_agreement(include):
    path = include / "agreements" / "unicef-ssd.yaml"
    (problem,) = _problems(include, today=date(2027, 3, 1))
    assert problem.startswith(f"{path}: valid_until: agreement expired on 2027-02-28")
    load_policy(include, today=date(2027, 2, 28))  # last valid day


def test_dates_out_of_order(include):
    path = include / "agreements" / "unicef-nga.yaml"
    _edit(path, "valid_until: 2027-12-31", "valid_until: 2025-12-31")
    (problem,) = _problems(include)
    assert str(path) in problem and "before valid_from" in problem


def test_broken_yaml_names_the_line(include):
    path = include / "rules" / "NGA.yaml"
    path.write_text(path.read_text().replace("indicators:\n", "indicators:\n  - [oops\n", 1))
    problems = _problems(include)
    assert any(p.startswith(f"{path}: line") and "not valid YAML" in p for p in problems)


def test_duplicate_key_is_an_error(include):
    path = include / "rules" / "default.yaml"
    _edit(path, "  site_id:", "  ki_phone: {classification: public, category: public}\n  site_id:")
    problems = _problems(include)
    assert any(str(path) in p and "duplicate key 'ki_phone'" in p for p in problems)


@pytest.mark.parametrize("before, after, said", [
    ("valid_until: 2027-12-31", "valid_until: 2027-02-30", "day is out of range for month"),
    ("valid_until: 2027-12-31", "valid_until: 2027-13-01", "month must be in 1..12"),
    ("valid_until: 2027-12-31", "valid_until: 2027-12-31\n? [a, b]\n: x", "a list cannot be a key"),
], ids=["no 30 February", "no 13th month", "a list as a key"])
def test_yaml_python_cannot_hold_names_the_file(include, before, after, said):
    """PyYAML builds dates and keys as Python objects: a date that does not exist raised a
    bare ValueError and a list as a key a TypeError, neither naming the file."""
    path = include / "agreements" / "unicef-nga.yaml"
    _edit(path, before, after)
    (problem,) = _problems(include)
    assert problem.startswith(f"{path}") and "not valid YAML" in problem and said in problem


def test_nan_bounds_are_refused(include):
    """Nothing compares below or above NaN: `bounds: [.nan, .nan]` checked nothing."""
    path = include / "rules" / "default.yaml"
    _edit(path, "bounds: [-90, 90]", "bounds: [.nan, .nan]")
    problems = _problems(include)
    assert any(str(path) in p and ".nan is no bound" in p for p in problems), problems


def test_two_agreements_cannot_share_a_password(include):
    """One Variable for two agreements is one secret two partners hold; rotating it for one
    (rotation is per agreement) would lock the other out without telling it."""
    path = include / "agreements" / "protection-cluster-nga.yaml"
    _edit(path, "variable: package_password_protection_cluster_nga",
          "variable: package_password_unicef_nga")
    problems = _problems(include)
    assert len(problems) == 2 and all(
        "password.variable: 'package_password_unicef_nga' is also the password of" in p
        for p in problems)
    assert {p.split(":")[0] for p in problems} == {
        str(path), str(include / "agreements" / "unicef-nga.yaml")}


def test_unknown_classification_value(include):
    path = include / "rules" / "default.yaml"
    _edit(path, "site_name:              {classification: public",
          "site_name:              {classification: restricted")
    (problem,) = _problems(include)
    assert f"{path}: indicators.site_name.classification:" in problem and "restricted" in problem


def test_relational_rule_with_unknown_indicator(include):
    path = include / "rules" / "SSD.yaml"
    _edit(path, "indicators: [unaccompanied_children, armed_actors_military]",
          "indicators: [unaccompanied_children, armed_actors_police]")
    (problem,) = _problems(include)
    assert str(path) in problem and "armed_actors_police" in problem


def test_missing_focal_points_file(include):
    (include / "focal_points" / "unicef-nga.yaml").unlink()
    (problem,) = _problems(include)
    assert ("agreements/unicef-nga.yaml: focal_points: no file focal_points/unicef-nga.yaml"
            in problem)


def test_file_name_must_match_id(include):
    src = include / "agreements" / "unicef-nga.yaml"
    src.rename(include / "agreements" / "unicef.yaml")
    problems = _problems(include)
    assert any("unicef.yaml: id: 'unicef-nga' must match the file name 'unicef'" in p
               for p in problems)


def test_all_problems_are_reported_at_once(include):
    _edit(include / "agreements" / "unicef-nga.yaml", "purpose:", "porpose:")
    _edit(include / "rules" / "NGA.yaml", "version:", "verison:")
    problems = _problems(include)
    assert any("unicef-nga.yaml" in p for p in problems)
    assert any("NGA.yaml" in p for p in problems)


def test_focal_point_change_revises_no_agreement(include):
    before = (include / "agreements" / "unicef-nga.yaml").read_bytes()
    _edit(include / "focal_points" / "unicef-nga.yaml", "name: Aisha Bello", "name: New Person")
    policy = load_policy(include)
    assert policy.focal_points["unicef-nga"].primary.name == "New Person"
    assert (include / "agreements" / "unicef-nga.yaml").read_bytes() == before


def test_dtm_focal_points_are_on_duty_in_turn(include):
    """Table C's DTM column: alerts go to the primary, the secondary while the primary is away."""
    policy = load_policy(include)
    nga = policy.dtm["NGA"]
    assert policy.alert_to("NGA") == (nga.primary.email,)
    assert policy.alert_to("NGA", "SSD", "NGA") == (nga.primary.email,
                                                    policy.dtm["SSD"].primary.email)
    _edit(include / "focal_points" / "dtm" / "NGA.yaml", "available: true", "available: false")
    away = load_policy(include)
    assert away.alert_to("NGA") == (nga.secondary.email,)
    assert away.dtm["NGA"].on_duty().name == nga.secondary.name


def test_every_country_needs_dtm_focal_points(include):
    (include / "focal_points" / "dtm" / "SSD.yaml").unlink()
    (problem,) = _problems(include)
    assert "rules/SSD.yaml: no DTM focal points for SSD" in problem
    assert "focal_points/dtm/SSD.yaml" in problem


def test_a_broken_dtm_focal_point_file_is_named(include):
    path = include / "focal_points" / "dtm" / "NGA.yaml"
    _edit(path, "mobile: \"+234 803 100 0001\"", "mobile: call me")
    (problem,) = _problems(include)
    assert str(path) in problem and "primary.mobile" in problem


def test_classification_order():
    assert Classification.PUBLIC < Classification.CONFIDENTIAL < Classification.SECRET
    assert Classification.SECRET > Classification.CONFIDENTIAL >= Classification.PUBLIC
    assert Classification.CONFIDENTIAL >= Classification.PUBLIC  # "c" < "p" as strings
    assert max(Classification) is Classification.SECRET
    assert sorted([Classification.SECRET, Classification.PUBLIC, Classification.CONFIDENTIAL]) == [
        Classification.PUBLIC, Classification.CONFIDENTIAL, Classification.SECRET]


def test_check_command(include, capsys):
    from dissemination.__main__ import main

    assert main(["check", "--include", str(include), "--today", "2026-11-21"]) == 0
    out = capsys.readouterr().out
    assert "policy OK" in out and "DTM focal point on duty: Fatima Yusuf" in out
    assert main(["check", "--include", str(include), "--today", "2028-01-01"]) == 1
    assert "valid_until: agreement expired" in capsys.readouterr().err


# --- contextual: the default and the country files -------------------------------------------


def test_country_rules_start_from_the_default(policy):
    nga, ssd = policy.rulesets["NGA"], policy.rulesets["SSD"]
    assert nga.default_version == ssd.default_version == "2026.2"
    assert nga.indicators["ki_phone"].classification is Classification.SECRET  # from the default
    assert nga.indicators["separated_children"].classification is Classification.CONFIDENTIAL
    assert ssd.indicators["separated_children"].classification is Classification.PUBLIC
    assert ssd.indicators["armed_actors_military"].classification is Classification.CONFIDENTIAL
    assert [r.name for r in ssd.relational] == ["safety_x_military", "children_x_military"]
    assert ssd.small_cells.threshold == 5 and nga.small_cells.threshold == 3
    assert list(nga.admin_levels) == ["admin1", "admin2"]


def test_loosening_without_a_reason_is_an_error(include):
    path = include / "rules" / "NGA.yaml"
    text = path.read_text()
    start = text.index("    loosens_default: >-")
    path.write_text(text[:start])  # drop the reason (it is the end of the file)
    (problem,) = _problems(include)
    assert problem.startswith(f"{path}: indicators.primary_need: public/monthly -> public/urgent "
                              "loosens rules/default.yaml")


def test_loosening_with_a_reason_is_reported(policy):
    (line,) = policy.rulesets["NGA"].loosened
    assert line.startswith("NGA: primary_need: public/monthly -> public/urgent (The food")


def test_lowering_the_small_cell_threshold_needs_a_reason(include):
    path = include / "rules" / "SSD.yaml"
    _edit(path, "threshold: 5", "threshold: 2")
    (problem,) = _problems(include)
    assert f"{path}: small_cells.threshold: 2 is below the default 3" in problem


def test_a_country_replaces_a_default_relational_rule_only_with_a_reason(include):
    path = include / "rules" / "SSD.yaml"
    _edit(path, "- name: children_x_military", "- name: safety_x_military")
    (problem,) = _problems(include)
    assert (f"{path}: relational.safety_x_military: replaces the default's entry of that name "
            "(rules/default.yaml); set loosens_default: <reason>") in problem


def test_a_broken_default_does_not_cascade(include):
    path = include / "rules" / "default.yaml"
    _edit(path, "scope: default", "scope: global")
    problems = _problems(include)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: scope:")


def test_relational_rule_safe_at_an_unknown_level(include):
    path = include / "rules" / "SSD.yaml"
    _edit(path, "safe_at: admin1", "safe_at: district")
    (problem,) = _problems(include)
    assert str(path) in problem and "level 'district' is not site nor one of admin_levels" \
        in problem


def test_relational_condition_on_a_non_member(include):
    path = include / "rules" / "default.yaml"
    _edit(path, 'when: {armed_actors_military: ["yes"]}', 'when: {primary_need: ["food"]}')
    (problem,) = _problems(include)
    assert str(path) in problem and "primary_need" in problem
    assert "not among its indicators" in problem


def test_free_text_needs_allow_free_text(include):
    path = include / "rules" / "SSD.yaml"
    _edit(path, "    allow_free_text: true\n", "")
    problems = _problems(include)
    assert any("unicef-ssd.yaml: tiers.low.indicators.8: 'enumerator_comments' is free text"
               in p for p in problems), problems


def test_allow_free_text_only_on_text(include):
    path = include / "rules" / "NGA.yaml"
    _edit(path, "    kind: categorical\n", "    kind: categorical\n    allow_free_text: true\n")
    (problem,) = _problems(include)
    assert f"{path}: indicators.primary_need" in problem and "kind: text only" in problem


def test_aggregate_to_an_unknown_level(include):
    path = include / "agreements" / "unicef-ssd.yaml"
    _edit(path, "aggregate_to: admin1", "aggregate_to: county")
    (problem,) = _problems(include)
    assert f"{path}: tiers.low.aggregate_to: 'county' is not one of SSD's admin_levels" in problem


def test_aggregate_to_needs_the_level_columns(include):
    path = include / "agreements" / "unicef-ssd.yaml"
    _edit(path, "aggregate_to: admin1", "aggregate_to: admin2")
    (problem,) = _problems(include)
    assert "tiers.low.aggregate_to: aggregating to admin2 needs ['admin2_pcode', 'admin2_name']" \
        in problem


def test_exact_counts_need_a_confidential_agreement(include):
    path = include / "agreements" / "protection-cluster-nga.yaml"
    _edit(path, "    window_hours: 72\n",
          "    window_hours: 72\n    exact_counts: [idp_individuals]\n")
    (problem,) = _problems(include)
    assert f"{path}: tiers.medium.exact_counts.0: exact counts need a confidential" in problem


def test_exact_counts_must_be_requested(include):
    path = include / "agreements" / "unicef-ssd.yaml"
    _edit(path, "exact_counts: [unaccompanied_children]", "exact_counts: [idp_male]")
    (problem,) = _problems(include)
    assert f"{path}: tiers.medium:" in problem
    assert "exact_counts ['idp_male'] are not among" in problem


def test_libyaml_reads_the_policy_exactly_as_the_pure_python_parser(monkeypatch):
    """The fast parser (libyaml) must not change what a policy file means: same models, same
    refusal of duplicate keys and of yes/no booleans."""
    import yaml

    from dissemination.policy import loading

    assert issubclass(loading._UniqueKeyLoader, yaml.CSafeLoader)  # PyYAML's wheel has libyaml
    fast = load_policy(POLICY_DIR)
    monkeypatch.setattr(loading, "_UniqueKeyLoader", loading.unique_key_loader(yaml.SafeLoader))
    slow = load_policy(POLICY_DIR)
    assert (fast.rulesets, fast.agreements, fast.focal_points, fast.organisations) == (
        slow.rulesets, slow.agreements, slow.focal_points, slow.organisations)
    for loader in (loading.unique_key_loader(yaml.CSafeLoader),
                   loading.unique_key_loader(yaml.SafeLoader)):
        assert yaml.load("values: [yes, no]", Loader=loader) == {"values": ["yes", "no"]}
        with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'a'"):
            yaml.load("a: 1\na: 2\n", Loader=loader)
