"""Synthetic rounds come from the country's contract: any country, every column valid under it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import POLICY_DIR, REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from dissemination.__main__ import main
from dissemination.devkit.patterns import PatternUnsupported, examples
from dissemination.devkit.synthetic import generate_round, to_export, write_export
from dissemination.intake.contract import conform
from dissemination.policy import load_policy

#: A country added the README's way: its own admin levels, no gazetteer, export headers and HXL.
XYZ_RULES = """\
country: XYZ
version: "1"
risk_assessment: {date: 2026-10-01, review_every_days: 90}
admin_levels:
  province: [province_code]
  district: [district_code]
indicators:
  province_code: {classification: public, category: public, kind: admin,
                  headers: [Province], hxl: "#adm1+code"}
  district_code: {classification: public, category: public, kind: admin}
  site_id: {headers: ["Site ID"], hxl: "#loc+id", pattern: 'XYZ-S\\d{5}'}
  collected_on: {headers: ["Date of assessment"], hxl: "#date+assessed",
                 date_format: "%d/%m/%Y"}
  idp_individuals: {headers: ["Total IDP individuals (ind)"], hxl: "#affected+idps+ind"}
  armed_actors_military: {headers: ["Any armed actor present?"]}
  water_points: {classification: public, category: monthly, kind: count, bounds: [0, 12]}
"""


def _add_country(include: Path, rules: str) -> str:
    """A country's rule set and its DTM focal points (NGA's people) in a policy copy."""
    country = yaml.safe_load(rules)["country"]
    (include / "rules" / f"{country}.yaml").write_text(rules)
    nga = (include / "focal_points" / "dtm" / "NGA.yaml").read_text()
    (include / "focal_points" / "dtm" / f"{country}.yaml").write_text(
        nga.replace("country: NGA", f"country: {country}"))
    return country


@pytest.fixture
def xyz(include: Path):
    country = _add_country(include, XYZ_RULES)
    return load_policy(include).rulesets[country]


@pytest.mark.parametrize("country", ["NGA", "SSD"])
def test_every_column_holds_to_its_contract(policy, country):
    ruleset = policy.rulesets[country]
    _, df = generate_round(ruleset, 3, 150, seed=5)
    assert list(df.columns) == [*ruleset.indicators, "enumerator_id"]
    conformed = conform(df, ruleset, first_row=2)
    assert conformed.violations == []
    # No rule covers it: Secret, and named by its position, never by its header.
    assert conformed.dropped[-1] == f"column {df.shape[1]}" and "enumerator_id" not in str(
        conformed)


def test_same_arguments_same_bytes_whatever_the_country(xyz):
    _, a = generate_round(xyz, 2, 40, seed=3)
    _, b = generate_round(xyz, 2, 40, seed=3)
    assert a.equals(b) and not a.equals(generate_round(xyz, 2, 40, seed=4)[1])


def test_a_site_lies_in_one_area_of_the_gazetteer(policy):
    ruleset = policy.rulesets["NGA"]
    _, df = generate_round(ruleset, 1, 300, seed=2)
    assert df.apply(lambda r: r["admin2_pcode"].startswith(r["admin1_pcode"]), axis=1).all()
    for code, name in (("admin1_pcode", "admin1_name"), ("admin2_pcode", "admin2_name")):
        pairs = dict(zip(ruleset.indicators[code].values, ruleset.indicators[name].values,
                         strict=True))
        assert (df[code].map(pairs) == df[name]).all()  # codes and names pair by position
    assert set(df["admin2_pcode"]) == set(ruleset.indicators["admin2_pcode"].values)
    assert not df["site_name"].str.contains(r"\d{7}|@").any()


def test_counts_follow_their_roles(policy):
    ruleset = policy.rulesets["NGA"]
    _, df = generate_round(ruleset, 1, 300, seed=8)
    for group in ruleset.additive:
        assert (df[group.total] == df[list(group.parts)].sum(axis=1)).all()
    for signal in ruleset.urgent_signals:
        if signal.above is not None:  # a few sites above the threshold, not most
            assert 0 < (df[signal.indicator] > signal.above).mean() < 0.5


def test_values_a_relational_rule_waits_for_occur_in_a_small_round(policy):
    for country, ruleset in policy.rulesets.items():
        needed = [(c, v) for rule in ruleset.relational for c, vs in rule.when.items() for v in vs]
        for seed in range(10):
            _, df = generate_round(ruleset, 1, 10, seed=seed)
            assert all(v in set(df[c]) for c, v in needed), (country, seed)


def test_a_new_country_gets_a_round_from_its_contract(xyz):
    meta, df = generate_round(xyz, 1, 120, seed=1)
    assert meta.round_id == "XYZ-R001-partial"
    assert conform(df, xyz, first_row=2).violations == []
    # No gazetteer: a few generated areas per level, each district in one province.
    assert df["province_code"].nunique() == 3 and df["district_code"].nunique() == 9
    assert df.groupby("district_code")["province_code"].nunique().eq(1).all()
    assert df["water_points"].between(0, 12).all()
    assert pd.to_datetime(df["collected_on"], format="%d/%m/%Y").notna().all()


def test_the_export_maps_back_to_the_round(xyz):
    _, df = generate_round(xyz, 1, 60, seed=6)
    export = to_export(df, xyz)
    assert list(export.columns[:3]) == ["round_id", "Site ID", "site_name"]
    assert export.iloc[0]["Site ID"] == "#loc+id" and export.iloc[0]["site_name"] == ""
    conformed = conform(export, xyz, first_row=2)
    assert conformed.hxl_row and conformed.violations == []
    back = conformed.frame
    assert back["site_id"].tolist() == df["site_id"].tolist()
    assert back["idp_individuals"].tolist() == df["idp_individuals"].tolist()
    iso = pd.to_datetime(df["collected_on"], format="%d/%m/%Y").dt.strftime("%Y-%m-%d")
    assert back["collected_on"].tolist() == iso.tolist()


def test_an_export_without_hxl_has_no_hxl_row(policy):
    ruleset = policy.rulesets["NGA"]
    _, df = generate_round(ruleset, 1, 20, seed=1)
    export = to_export(df, ruleset)
    assert list(export.columns) == list(df.columns) and len(export) == len(df)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_write_export_reads_back_as_a_valid_round(xyz, tmp_path, suffix):
    _, df = generate_round(xyz, 1, 30, seed=2)
    path = write_export(df, xyz, tmp_path / f"round{suffix}")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False) if suffix == ".csv" \
        else pd.read_excel(path, dtype=str, keep_default_na=False)
    conformed = conform(raw, xyz, first_row=2)
    assert conformed.violations == [] and len(conformed.frame) == 30


def test_synth_writes_the_countrys_export(tmp_path, capsys):
    out = tmp_path / "ssd.csv"
    assert main(["synth", "--include", str(POLICY_DIR), "--country", "SSD", "--sites", "25",
                 "--out", str(out)]) == 0
    assert "SSD-R001-partial (25 sites" in capsys.readouterr().out
    raw = pd.read_csv(out, dtype=str, keep_default_na=False)
    ssd = load_policy(POLICY_DIR).rulesets["SSD"]
    assert len(raw) == 25 and conform(raw, ssd, first_row=2).violations == []


def test_synth_names_an_unknown_country_and_needs_one_target(tmp_path, capsys):
    assert main(["synth", "--include", str(POLICY_DIR), "--country", "XYZ",
                 "--out", str(tmp_path / "x.csv")]) == 1
    assert "no rule set for country 'XYZ'" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
    for targets in ([], ["--db", "sqlite://", "--out", str(tmp_path / "x.csv")]):
        with pytest.raises(SystemExit):
            main(["synth", "--include", str(POLICY_DIR), *targets])


def _own_conventions() -> str:
    """XYZ as a country whose site keys and admin codes follow conventions of its own, as real
    ones do: no numbered value the generator made before fits any of them."""
    rules = yaml.safe_load(XYZ_RULES)
    indicators = {**rules["indicators"], "site_name": {}}
    for name, pattern in (("province_code", "XNG-[A-Z]{2}"),
                          ("district_code", r"(XNG|XNX)-[A-Z]{2}-\d{2,3}"),
                          ("site_id", r"XNG-[A-Z]{2}-\d{5}"),
                          ("site_name", r"[A-Z][a-z]+( [A-Z][a-z]+)? (camp|site) \w{2}")):
        indicators[name] = {**indicators[name], "pattern": pattern}
    return yaml.safe_dump({**rules, "country": "XNG", "indicators": indicators}, sort_keys=False)


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m dissemination ...`` as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "dissemination", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})


def test_synth_then_check_round_for_a_country_with_its_own_code_patterns(include, tmp_path):
    """``synth`` (and so the demo, serve and ui) stopped at "cannot synthesise site_id ...;
    declare its values", advice the loader then refuses for a key."""
    _add_country(include, _own_conventions())
    out = tmp_path / "XNG-R001-partial.csv"
    made = _cli("synth", "--include", str(include), "--country", "XNG", "--sites", "400",
                "--out", str(out))
    assert made.returncode == 0, made.stderr
    checked = _cli("check-round", "--country", "XNG", "--include", str(include), str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "conforms:" in checked.stdout
    raw = pd.read_csv(out, dtype=str, keep_default_na=False).iloc[1:]  # under the HXL row
    assert raw["Site ID"].is_unique and raw["Site ID"].str.fullmatch(r"XNG-[A-Z]{2}-\d{5}").all()
    assert raw["Province"].nunique() == 3 and raw["district_code"].nunique() == 9
    again = generate_round(load_policy(include).rulesets["XNG"], 2, 40, seed=9)[1]
    assert again["site_id"].tolist() == raw["Site ID"].tolist()[:40]  # a site keeps its key


def _pattern_strategy():
    """Patterns in the subset a contract's keys and codes use: literals, classes (ranges,
    negated, with escapes), \\d \\w \\s and their negations, ``.``, quantifiers, alternation,
    groups, anchors."""
    literal = st.sampled_from(list("AZaz09-_/.:#") + ["\\.", "\\-", "é"])
    escape = st.sampled_from(["\\d", "\\w", "\\s", "\\D", "\\W", "\\S", "."])
    member = st.sampled_from(["A-Z", "a-f", "0-9", "_", "\\-", "\\d", "\\w", ".", "xyz"])
    klass = st.builds(lambda neg, ms: f"[{'^' if neg else ''}{''.join(ms)}]", st.booleans(),
                      st.lists(member, min_size=1, max_size=3))
    quantifier = st.sampled_from(["", "", "?", "+", "*", "{2}", "{1,3}", "{0,2}", "{2,}", "+?"])

    # A group repeats a bounded number of times: an unbounded repeat of a group that itself
    # repeats (``(.*x)+``) sends Python's backtracking ``re`` (this test's oracle) exponential.
    # The contract reads patterns with RE2, which is linear, so nothing shipped depends on it.
    bounded = st.sampled_from(["", "?", "{2}", "{1,3}", "{0,2}"])

    def extend(inner):
        group = st.builds(lambda alts, cap, q: f"({'' if cap else '?:'}{'|'.join(alts)}){q}",
                          st.lists(inner, min_size=1, max_size=3), st.booleans(), bounded)
        atom = st.one_of(st.builds(lambda a, q: a + q, st.one_of(literal, escape, klass),
                                   quantifier), group)
        return st.builds("".join, st.lists(atom, min_size=1, max_size=5))

    body = st.recursive(st.one_of(literal, escape, klass), extend, max_leaves=8)
    return st.builds(lambda start, b, end: f"{'^' if start else ''}{b}{'$' if end else ''}",
                     st.booleans(), body, st.booleans())


@settings(max_examples=150)
@given(pattern=_pattern_strategy(), seed=st.text(max_size=5))
def test_values_drawn_from_a_pattern_match_it_as_the_contract_reads_it(pattern, seed):
    values = examples(pattern, 12, seed, distinct=False)
    assert all(re.fullmatch(pattern, v) for v in values)
    # The contract's own test: pandas' fullmatch on Arrow strings (RE2, not Python's re).
    assert pd.Series(values, dtype="string[pyarrow]").str.fullmatch(pattern).all()
    assert values == examples(pattern, 12, seed, distinct=False)  # seeded: the same again


def test_a_pattern_with_too_few_values_for_every_site_says_so():
    with pytest.raises(PatternUnsupported, match=r"X.*d' gave 10 different values .* 30 needed"):
        examples(r"X\d", 30, "site_id")
    with pytest.raises(PatternUnsupported, match="lookaround or back-reference"):
        examples(r"(?=A)A\d", 3, "site_id")
