"""Policy files as an adversary or a hurried coordinator writes them: nested aliases, one person
in two organisations, a collection date made Secret, a country retuning what it inherits. Each
is refused (or reported) by ``python -m dissemination check`` naming the file and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from dissemination.__main__ import main
from dissemination.intake.dap import DapError, import_dap

#: Six levels of ten: a million "lol"s from nine lines (the "billion laughs", scaled down so
#: that today's main prints its megabytes rather than running out of memory).
ALIAS_BOMB = "\n".join(
    ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)])


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"test setup: {old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _check(include: Path, capsys) -> tuple[int, str, str]:
    code = main(["check", "--include", str(include)])
    out, err = capsys.readouterr()
    return code, out, err


# --- item 12: aliases -------------------------------------------------------------------------


def test_nested_aliases_are_refused_in_a_few_lines_naming_file_and_line(include, capsys):
    path = include / "rules" / "NGA.yaml"
    text = path.read_text()
    path.write_text(text.replace('version: "2026.11"', ALIAS_BOMB + "\nversion: *l6", 1))
    code, _, err = _check(include, capsys)
    assert code == 1
    assert len(err) < 2_000, f"{len(err)} characters of error"
    assert f"{path}: line 4: YAML anchors and aliases" in err and "lol" not in err


def test_an_invalid_value_is_described_never_quoted(include, capsys):
    """A focal point's mobile is a value too: the error says what kind of value is wrong."""
    path = include / "focal_points" / "unicef-nga.yaml"
    _edit(path, 'mobile: "+234 803 000 0001"', 'mobile: "Musa Bello, call 0803 555 1234 now"')
    code, _, err = _check(include, capsys)
    assert code == 1 and f"{path}: primary.mobile" in err
    assert "a text of 34 character(s)" in err and "Musa" not in err and "555" not in err


def test_the_dap_import_refuses_a_rule_file_with_aliases(include, tmp_path):
    path = include / "rules" / "NGA.yaml"
    text = path.read_text()
    path.write_text(text.replace('version: "2026.11"', ALIAS_BOMB + "\nversion: *l6", 1))
    dap = tmp_path / "dap.csv"
    dap.write_text("Indicator,Dissemination Category\nprimary_need,Monthly\n")
    with pytest.raises(DapError) as exc:
        import_dap(include, "NGA", dap, write=True, today=None)
    assert len(str(exc.value)) < 500 and f"{path}: line 4: YAML anchors" in str(exc.value)
    assert path.read_text().startswith(text[:20])


# --- item 17: a Secret collection date ---------------------------------------------------------


def test_a_secret_collection_date_is_refused_at_check(include, capsys):
    """It passed ``check``, then every round was blocked as having no collection date."""
    path = include / "rules" / "NGA.yaml"
    _edit(path, "indicators:\n", "indicators:\n  collected_on: {classification: secret}\n")
    code, _, err = _check(include, capsys)
    assert code == 1
    assert f"{path}: collection_date: 'collected_on' is Secret" in err
    assert "dropped unread" in err and "every round would be blocked" in err


# --- item 7: one person, two organisations ----------------------------------------------------


def test_one_sftp_folder_for_two_organisations_is_refused_naming_both_files(include, capsys):
    """The Protection Sector's packages would land in UNICEF's folder: whoever reads it holds
    what both organisations receive, judged apart."""
    path = include / "agreements" / "protection-cluster-nga.yaml"
    _edit(path, "sftp_conn_id: sftp_protection_cluster_nga\n  remote_dir: "
                "protection-cluster-nga/incoming", "sftp_conn_id: sftp_unicef_nga\n  remote_dir: "
                "/unicef-nga/incoming/")
    code, _, err = _check(include, capsys)
    assert code == 1
    (line,) = [line for line in err.splitlines() if "same SFTP destination" in line]
    assert line.strip().startswith(f"{include / 'agreements'}/")
    assert str(path) in line and str(include / "agreements" / "unicef-nga.yaml") in line
    assert "'unicef'" in line and "'protection-sector-nga'" in line
    assert "declare them one holder (same_holder_as in organisations/" in line


def test_one_holder_declared_lets_the_shared_folder_load(include, capsys):
    path = include / "agreements" / "protection-cluster-nga.yaml"
    _edit(path, "sftp_conn_id: sftp_protection_cluster_nga\n  remote_dir: "
                "protection-cluster-nga/incoming", "sftp_conn_id: sftp_unicef_nga\n  remote_dir: "
                "unicef-nga/incoming")
    org = include / "organisations" / "unicef.yaml"
    org.write_text(org.read_text() + "same_holder_as: [protection-sector-nga]\n")
    code, out, err = _check(include, capsys)
    assert code == 0, err
    bad = include / "organisations" / "protection-sector-nga.yaml"
    bad.write_text(bad.read_text() + "same_holder_as: [protection-sector-ng]\n")
    code, _, err = _check(include, capsys)
    assert code == 1 and f"{bad}: same_holder_as.0: no file organisations/protection-sector-ng" \
        ".yaml" in err


# --- item 19: retuning or dropping what a country inherits ------------------------------------

RETUNED = """
urgent_signals:
  - name: many_unaccompanied_children
    indicator: unaccompanied_children
    above: 50
"""
REASON = ("    loosens_default: Sites here hold 5,000 people; 10 children fired on every round "
          "(DTM NGA, 2026-11)\n")


def _large_site_round(policy):
    from dissemination.devkit.synthetic import generate_round

    _, df = generate_round(policy.rulesets["NGA"], 1, 30, seed=3)
    df = df.copy()
    df["unaccompanied_children"] = 0
    df.loc[df.index[0], "unaccompanied_children"] = 20  # above the default's 10, below 50
    return df


def test_retuning_an_inherited_urgent_signal_needs_a_reason(include, capsys):
    path = include / "rules" / "NGA.yaml"
    path.write_text(path.read_text() + RETUNED)
    code, _, err = _check(include, capsys)
    assert code == 1
    assert (f"{path}: urgent_signals.many_unaccompanied_children: above 10 -> above 50, firing "
            "less often than the default's (rules/default.yaml); set loosens_default") in err


def test_a_retuned_signal_with_its_reason_is_reported_and_fires_at_its_threshold(include,
                                                                                   capsys):
    from dissemination.intake.signals import detect
    from dissemination.policy import load_policy

    path = include / "rules" / "NGA.yaml"
    default_policy = load_policy(include)
    df = _large_site_round(default_policy)
    assert [s.name for s in detect(df, default_policy.rulesets["NGA"])] == [
        "many_unaccompanied_children"]
    path.write_text(path.read_text() + RETUNED + REASON)
    code, out, err = _check(include, capsys)
    assert code == 0, err
    assert ("loosens the default on purpose: NGA: urgent_signals.many_unaccompanied_children: "
            "above 10 -> above 50, firing less often than the default's (Sites here hold") in out
    retuned = load_policy(include).rulesets["NGA"]
    assert detect(df, retuned) == []
    assert [s.name for s in retuned.urgent_signals] == [
        "many_unaccompanied_children", "unaccompanied_children_jump"]  # the default's order


def test_a_lower_threshold_needs_no_reason(include, capsys):
    path = include / "rules" / "NGA.yaml"
    path.write_text(path.read_text() + RETUNED.replace("above: 50", "above: 5"))
    code, out, err = _check(include, capsys)
    assert code == 0, err
    assert "many_unaccompanied_children" not in out


def test_dropping_inherited_entries_says_why_and_unknown_drops_are_named(include, capsys):
    from dissemination.policy import load_policy

    path = include / "rules" / "NGA.yaml"
    path.write_text(path.read_text() + """
drops_default:
  urgent_signals: {unaccompanied_children_jump: "Sites are re-registered each round here"}
  additive: {idp_individuals: "Totals come from another source here"}
  relational: {safety_x_military: "No military presence; reviewed 2026-10"}
  indicators: {water_points_functional: "Not collected here"}
""")
    code, _, err = _check(include, capsys)
    assert code == 1
    assert (f"{path}: drops_default.indicators.water_points_functional: rules/default.yaml "
            "has no such indicator") in err
    path.write_text(path.read_text().replace("water_points_functional", "enumerator_comments"))
    code, out, err = _check(include, capsys)
    assert code == 0, err
    for line in ("NGA: drops urgent_signals.unaccompanied_children_jump of the default (Sites",
                 "NGA: drops additive.idp_individuals of the default (Totals",
                 "NGA: drops relational.safety_x_military of the default (No military",
                 "NGA: drops indicator enumerator_comments of the default (Not collected"):
        assert f"loosens the default on purpose: {line}" in out
    nga = load_policy(include).rulesets["NGA"]
    assert [s.name for s in nga.urgent_signals] == ["many_unaccompanied_children"]
    assert nga.additive == () and "safety_x_military" not in {r.name for r in nga.relational}
    assert "enumerator_comments" not in nga.indicators
