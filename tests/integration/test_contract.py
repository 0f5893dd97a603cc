"""The round contract: every value checked, real exports taken as they are.

One test per leak found by trying an export nobody here wrote; each goes through the paths a
round really takes (file drop, staging, planning, packaging), so it fails if any of them skips
the contract.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa
from builders import META, PHONE
from builders import contract_round as _round
from openpyxl import Workbook

from dissemination.classification import Classification, Urgency
from dissemination.classify import active_relational
from dissemination.classify.sensitivity import classify_round, select_for_agreement
from dissemination.disclosure import UndeclaredValue, build_content
from dissemination.intake import staging
from dissemination.intake.contract import ContractBroken, conform
from dissemination.intake.fresh import import_drop
from dissemination.intake.reading import read_round
from dissemination.intake.source import RoundMeta
from dissemination.runs import Findings, plan_deliveries, pull_round, stage_round

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)




def _plan(policy, staged: dict, agreement: str):
    (plan,) = plan_deliveries(
        policy, RoundMeta.from_xcom(staged), staged["columns"], Urgency.MEDIUM,
        today=date(2026, 11, 21), only=[agreement],
        found=Findings(active=staged["active_relational"]))
    return plan


@pytest.fixture
def survey(tmp_path):
    return sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}")


# --- a large round, read and conformed in parts ------------------------------------------------


def test_a_round_read_in_parts_is_judged_and_staged_as_one(policy, survey, tmp_path,
                                                           monkeypatch):
    """A million-site round is read and conformed part by part (each part freed once done):
    the same violations, row numbers as the source counts them, a site key repeated across
    parts, a relational rule set off in a later part, nothing staged when broken, and the
    same staged round as one pass."""
    from dissemination.devkit.synthetic import generate_round
    from dissemination.intake import reading, source

    monkeypatch.setattr(reading, "PART_ROWS", 500)
    ruleset = policy.rulesets["NGA"]
    meta, df = generate_round(ruleset, 2, 2500, seed=3)
    df["armed_actors_military"] = "no"
    df.loc[1700, "armed_actors_military"] = "maybe"  # not a declared value, in the 4th part
    df.loc[2100, "site_id"] = df.loc[10, "site_id"]  # repeated across parts
    df.loc[2300, "armed_actors_military"] = "Yes"  # sets off safety_x_military, in the 5th
    source.write_round(survey, meta, df)
    path = tmp_path / "stage" / "round.arrow"
    reads, parts = [], reading.read_round_parts(survey, meta.round_id)[1]
    with pytest.raises(ContractBroken) as broken:
        stage_round(meta, (reads.append(len(p)) or p for p in parts), policy, path)
    assert reads == [500] * 5
    assert not path.exists()  # nothing of it staged
    whole = conform(read_round(survey, meta.round_id)[1], ruleset, first_row=1)
    assert broken.value.violations == whole.violations
    lines = [v.line() for v in whole.violations]
    assert any("armed_actors_military" in line and "1 row(s): 1701" in line for line in lines)
    assert any("site key is repeated in 2 row(s): 11, 2101" in line for line in lines)

    df.loc[1700, "armed_actors_military"] = "no"
    df.loc[2100, "site_id"] = "NGA-S99999"
    source.write_round(survey, meta, df)
    staged = stage_round(*reading.read_round_parts(survey, meta.round_id), policy, path)
    clean = conform(read_round(survey, meta.round_id)[1], ruleset, first_row=1)
    pd.testing.assert_frame_equal(staging.read_staged(path), clean.frame)
    assert staged["rows"] == 2500 and staged["active_relational"] == ["safety_x_military"]
    assert staged["columns"] == clean.columns


# --- value variants and booleans: the relational rule must see the canonical value -------------


@pytest.mark.parametrize("military", ["Yes", "YES", "yes ", " ｙｅｓ", "TRUE", "1"])
def test_every_spelling_of_yes_triggers_safety_x_military(policy, tmp_path, military):
    """A Public-ceiling partner never receives safety and military per site together."""
    raw = _round(armed_actors_military=["no", military, "No", "no", "false", "0"])
    staged = stage_round(META, raw, policy, tmp_path / "r.arrow")
    assert staged["active_relational"] == ["safety_x_military"]
    plan = _plan(policy, staged, "protection-cluster-nga")
    assert "feeling_of_safety" in plan.selection.columns
    assert "armed_actors_military" not in plan.selection.columns
    on_disk = staging.read_staged(staged["path"])
    assert on_disk["armed_actors_military"].tolist() == ["no", "yes", "no", "no", "no", "no"]


def test_xlsx_booleans_are_read_as_declared_values(policy, survey, tmp_path):
    """An XLSX TRUE/FALSE column (stored by spreadsheets as 1/0) is yes/no, not a new value."""
    raw = _round(3, armed_actors_military=[True, False, False])
    drop = tmp_path / "drop"
    drop.mkdir()
    _xlsx(drop / "NGA-R007-partial.xlsx", raw)
    assert import_drop(drop, survey, NOW, policy) == ["NGA-R007-partial"]
    meta, stored = read_round(survey, "NGA-R007-partial")
    assert stored["armed_actors_military"].tolist() == ["yes", "no", "no"]
    staged = stage_round(meta, stored, policy, tmp_path / "r.arrow")
    assert "armed_actors_military" not in _plan(policy, staged,
                                                "protection-cluster-nga").selection.columns


def _xlsx(path, df: pd.DataFrame) -> None:
    wb = Workbook()
    ws = wb.active
    ws.append(list(df.columns))
    for row in df.itertuples(index=False):
        ws.append(list(row))
    wb.save(path)


# --- PII in a Public or count column: blocked on the urgent path too -----------------------------


@pytest.mark.parametrize("column, value", [
    ("site_name", f"KI Musa Bello {PHONE}"),
    ("site_name", "write to musa.bello at gmail dot com"),
    ("idp_individuals", f"KI Musa Bello {PHONE}"),
    ("idp_individuals", "12.5"),
    ("feeling_of_safety", "Musa says nobody"),
])
def test_a_value_outside_its_type_blocks_the_urgent_round(policy, tmp_path, column, value):
    values = _round()[column].tolist()
    values[3] = value
    with pytest.raises(ContractBroken) as caught:
        stage_round(META, _round(**{column: values}), policy, tmp_path / "r.arrow")
    message = str(caught.value)
    assert f"column {column!r}" in message and "in 1 row(s): 4" in message
    assert f"indicators.{column}" in message and "NGA-R007-partial" in message
    assert value not in message and "Musa" not in message and "555" not in message
    assert not (tmp_path / "r.arrow").exists()  # nothing of it staged


def test_the_same_round_is_rejected_at_the_file_drop_naming_file_column_rule_and_row(
        policy, survey, tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    counts = _round()["idp_individuals"].tolist()
    counts[1] = f"KI Musa Bello {PHONE}"
    _round(idp_individuals=counts).to_csv(drop / "NGA-R007-partial.csv", index=False)
    _round().to_csv(drop / "NGA-R008-partial.csv", index=False)
    assert import_drop(drop, survey, NOW, policy) == ["NGA-R008-partial"]  # the other goes on
    error = (drop / "rejected" / "NGA-R007-partial.csv.error").read_text()
    assert error.startswith("NGA-R007-partial.csv: 1 contract violation(s)")
    assert "column 'idp_individuals': not a whole number in 1 row(s): 3" in error
    assert "[rules/NGA v2026.11: indicators.idp_individuals (count)]" in error
    assert "Musa" not in error and "555" not in error


# --- aggregation builds column names from declared values only --------------------------------


def test_an_undeclared_category_never_becomes_a_column_header(policy, tmp_path):
    safety = ["all_feel_safe"] * 5 + [f"Musa {PHONE}"]
    with pytest.raises(ContractBroken, match="feeling_of_safety"):
        stage_round(META, _round(feeling_of_safety=safety), policy, tmp_path / "r.pq")
    # Defence in depth: an unconformed frame reaching aggregation is refused, not headed.
    agreement = policy.agreements["protection-cluster-nga"]
    ruleset = policy.rulesets["NGA"]
    raw = _round(feeling_of_safety=safety).assign(admin1_name="Borno", primary_need="food")
    selection = select_for_agreement(classify_round(raw.columns, ruleset), ruleset, agreement,
                                     Urgency.LOW)
    with pytest.raises(UndeclaredValue) as caught:
        build_content(raw, selection, ruleset)
    assert "Musa" not in str(caught.value)


def test_aggregated_columns_are_exactly_the_declared_values(policy, tmp_path):
    staged = stage_round(META, _round(), policy, tmp_path / "r.arrow")
    conformed = staging.read_staged(staged["path"]).assign(admin1_name="Borno", primary_need="food")
    ruleset = policy.rulesets["NGA"]
    selection = select_for_agreement(classify_round(conformed.columns, ruleset),
                                     ruleset, policy.agreements["protection-cluster-nga"],
                                     Urgency.LOW)
    frame = build_content(conformed, selection, ruleset).frame
    safety = [c for c in frame if c.startswith("feeling_of_safety=")]
    assert safety == [f"feeling_of_safety={v}"
                      for v in ruleset.indicators["feeling_of_safety"].values]


# --- duplicate headers ---------------------------------------------------------------------------


@pytest.mark.parametrize("second", ["site_name", "Site_Name", " SITE_NAME "])
def test_two_columns_with_one_header_are_rejected(policy, survey, tmp_path, second):
    drop = tmp_path / "drop"
    drop.mkdir()
    text = _round(3).to_csv(index=False).splitlines()
    text[0] += f",{second}"
    text[1:] = [line + f",KI {PHONE}" for line in text[1:]]
    (drop / "NGA-R007-partial.csv").write_text("\n".join(text) + "\n")
    assert import_drop(drop, survey, NOW, policy) == []
    error = (drop / "rejected" / "NGA-R007-partial.csv.error").read_text()
    assert "two columns are headed 'site_name'" in error and "555" not in error


def test_two_headers_for_one_indicator_are_rejected(policy):
    raw = _round(3).assign(**{"Site ID": ["a", "b", "c"]})  # another header of... no indicator
    assert not conform(raw, policy.rulesets["NGA"]).violations  # uncovered: Secret, dropped
    bfa = policy.rulesets["BFA"]
    raw = pd.DataFrame({"Site ID": ["BFA-S00001"], "site_id": ["BFA-S00002"]})
    (violation,) = [v for v in conform(raw, bfa).violations if "both" in v.problem]
    assert violation.problem == "'Site ID' and 'site_id' are both site_id"


# --- None is an answer ---------------------------------------------------------------------------


def test_none_is_an_answer_unless_the_contract_says_otherwise(policy, survey, tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "BFA-R002-cleaned.csv").write_text(
        "Site ID,Date of assessment,Which armed group?,# of unaccompanied children\n"
        "BFA-S00001,03/11/2026,None,NSP\n"
        "BFA-S00002,03/11/2026,Aucun,2\n"
        "BFA-S00003,04/11/2026,GANE,NA\n")
    assert import_drop(drop, survey, NOW, policy) == []  # NA is not a count nor declared missing
    assert "not a whole number in 1 row(s): 4" in (
        drop / "rejected" / "BFA-R002-cleaned.csv.error").read_text()
    (drop / "rejected" / "BFA-R002-cleaned.csv").rename(drop / "BFA-R002-cleaned.csv")
    (drop / "BFA-R002-cleaned.csv").write_text(
        (drop / "BFA-R002-cleaned.csv").read_text().replace(",NA\n", ",\n"))
    assert import_drop(drop, survey, NOW, policy) == ["BFA-R002-cleaned"]
    _, stored = read_round(survey, "BFA-R002-cleaned")
    assert stored["armed_groups"].tolist() == ["None", "None", "Non-state armed group"]
    assert stored["unaccompanied_children"].isna().tolist() == [True, False, True]  # NSP: missing


# --- intake that one bad file cannot stop --------------------------------------------------------


def test_every_file_of_the_drop_is_judged_on_its_own(policy, survey, tmp_path):
    from dissemination.policy import IntakeLimits

    drop = tmp_path / "drop"
    drop.mkdir()
    good = _round(3)
    good.to_csv(drop / "NGA-R001-partial.csv", index=False)
    good.drop(columns=["ki_phone"]).assign(new_column="x").to_csv(  # schema drift: fine
        drop / "NGA-R002-partial.csv", index=False)
    good.to_csv(drop / "ZZZ-R001-partial.csv", index=False)  # no rule set
    (drop / "NGA-R003-partial.xlsx").write_bytes(b"PK\x03\x04 not a workbook")
    (drop / "NGA-R004-partial.csv").write_bytes(b"\xff\xfe\x00garbage,\x00\n\x00")
    big = pd.concat([good] * 20)
    big["site_id"] = [f"NGA-S{i:05d}" for i in range(len(big))]
    big.to_csv(drop / "NGA-R005-partial.csv", index=False)
    small = policy.model_copy(update={"intake": IntakeLimits(max_rows=50)})
    assert import_drop(drop, survey, NOW, small) == ["NGA-R001-partial", "NGA-R002-partial"]
    errors = {p.name: p.read_text() for p in (drop / "rejected").glob("*.error")}
    assert "no rule set for country ZZZ" in errors["ZZZ-R001-partial.csv.error"]
    assert "cannot be read" in errors["NGA-R003-partial.xlsx.error"]
    assert "more than 50 rows" in errors["NGA-R005-partial.csv.error"]
    assert "NGA-R004-partial.csv.error" in errors
    meta, first = read_round(survey, "NGA-R001-partial")
    assert "ki_phone" not in first.columns and meta.dropped == ("ki_phone",)
    _, second = read_round(survey, "NGA-R002-partial")
    assert "new_column" not in second.columns  # uncovered: dropped unread, never stored
    with survey.connect() as conn:  # no Secret value anywhere in the survey database
        dump = "\n".join(str(r) for t in ("site_assessments", "round_columns")
                         for r in conn.execute(sa.text(f"select * from {t}")))
    assert PHONE not in dump and "'x'" not in dump


def test_an_oversized_or_zip_bomb_file_is_refused_unread(policy, survey, tmp_path):
    import zipfile

    from dissemination.policy import IntakeLimits

    drop = tmp_path / "drop"
    drop.mkdir()
    _round(3).to_csv(drop / "NGA-R001-partial.csv", index=False)
    with zipfile.ZipFile(drop / "NGA-R002-partial.xlsx", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("xl/worksheets/sheet1.xml", b"0" * 5_000_000)
    limits = IntakeLimits(max_bytes=200_000, max_xlsx_uncompressed_bytes=1_000_000)
    assert import_drop(drop, survey, NOW, policy.model_copy(update={"intake": limits})) == [
        "NGA-R001-partial"]
    error = (drop / "rejected" / "NGA-R002-partial.xlsx.error").read_text()
    assert "unpacks to 5000000 bytes" in error and "max_xlsx_uncompressed_bytes" in error


# --- free text: broader redaction --------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "call 0803/555/0199", "call 0803,555,0199", "call 0803–555–0199", "call 0803.555.0199",
    "tel (0803) 555 0199", "mail musa.bello at gmail dot com", "mail musa[at]ngo[dot]org",
    "mail musa (at) ngo (dot) org", "mail musa @ ngo . org", "NIN AB-12345678", "ID:987654321",
    "call 0803 - 555 - 0199", "call 0803 . 555 . 0199", "call (0803) / 555 / 0199",
])
def test_allowed_free_text_never_carries_contacts_or_ids(text):
    from dissemination.disclosure import REDACTED, redact

    redacted, n = redact(pd.Series([text, "Road flooded since 3 days", None]))
    assert n == 1 and REDACTED in redacted[0]
    assert not any(ch.isdigit() for ch in redacted[0].replace(REDACTED, ""))
    assert "ngo" not in redacted[0] and "gmail" not in redacted[0]
    assert redacted[1] == "Road flooded since 3 days"


@pytest.mark.parametrize("phone", [PHONE, "0803 - 555 - 0199", "0803 . 555 . 0199"])
def test_a_phone_number_in_a_shared_text_column_breaks_the_contract(policy, phone):
    """A site name carrying a number, written as people write them, blocks the round; the
    violation names the column and row, never the number."""
    violations = conform(_round(site_name=["Bakassi camp", f"Camp {phone}"] * 3),
                         policy.rulesets["NGA"]).violations
    assert [(v.column, "phone" in v.problem) for v in violations] == [("site_name", True)]
    assert phone not in " ".join(v.line() for v in violations)


def _other_digits(zero: int):
    return lambda key: "".join(chr(zero + int(c)) if c.isdigit() else c for c in key)


@pytest.mark.parametrize("written", [
    _other_digits(0x0660), _other_digits(0x0966),
    lambda key: key[:4] + "\u200b" + key[4:],  # a zero-width space, pasted from a web page
    str.lower,
], ids=["Arabic-Indic digits", "Devanagari digits", "a zero-width space", "lower case"])
def test_a_site_key_written_another_way_is_the_same_site(policy, written):
    """NFKC keeps other scripts' digits (which Python's \\d matches, so BFA's pattern passed
    them) and zero-width spaces, and keys were compared case by case: one site twice, each
    copy taken for another site."""
    from dissemination.devkit.synthetic import generate_round

    bfa = policy.rulesets["BFA"]
    _, df = generate_round(bfa, 1, 5, seed=1)
    df = df.astype(str)
    df.loc[1, "site_id"] = written(df.loc[0, "site_id"])
    assert df.loc[1, "site_id"] != df.loc[0, "site_id"]
    violations = conform(df, bfa).violations
    assert ("site_id", "the site key is repeated", (2, 3)) in [
        (v.column, v.problem, v.rows) for v in violations]


# --- relational: a classification per level ----------------------------------------------------


def test_a_combination_classified_per_level(policy):
    """BFA: children x armed presence is Secret per site, Confidential per province, Public per
    region; the default's safety x military (safe_at: admin1) is safe per region (BFA's admin1)."""
    bfa = policy.rulesets["BFA"]
    (rule,) = [r for r in bfa.relational if r.name == "children_x_armed_presence"]
    assert [bfa.relational_at(rule, lvl).value for lvl in ("site", "province", "region")] == [
        "secret", "confidential", "public"]
    assert bfa.resolve_level("admin1") == "region" and bfa.resolve_level("admin3") is None
    (default_rule,) = [r for r in bfa.relational if r.name == "safety_x_military"]
    assert bfa.relational_at(default_rule, "region").value == "public"
    assert bfa.relational_at(default_rule, "province").value == "confidential"

    columns = ["region_pcode", "province_pcode", "unaccompanied_children",
               "armed_actors_military"]
    base = classify_round(columns, bfa)
    unicef = policy.agreements["unicef-nga"]

    def at(level: str, ceiling: str):
        tier = unicef.tiers.low.model_copy(update={"indicators": tuple(columns),
                                                   "aggregate_to": level, "exact_counts": ()})
        agreement = unicef.model_copy(update={"countries": ("BFA",), "max_classification":
                                              Classification(ceiling),
                                              "tiers": unicef.tiers.model_copy(
                                                  update={"low": tier})})
        selection = select_for_agreement(base, bfa, agreement, Urgency.LOW)
        return {d.column: d.classification.value for d in selection.shared}

    assert at("province", "confidential") == {
        "region_pcode": "public", "province_pcode": "public",
        "unaccompanied_children": "confidential", "armed_actors_military": "confidential"}
    assert "armed_actors_military" not in at("province", "public")
    assert at("admin1", "public")["armed_actors_military"] == "public"  # per region: public


@pytest.mark.parametrize("hxl", [False, True])
def test_pulled_from_the_survey_database_no_secret_column_is_read_past_the_first_row(
        policy, sql_engine, tmp_path, monkeypatch, hxl):
    """``pull_round`` matches headers (and an HXL row) on the round's first row, then reads only
    the columns the contract reads: the same violations and the same staged round as one pass
    over every column, and no part holds a Secret column (SQLite: 4 parts; PostgreSQL:
    one COPY stream)."""
    from dissemination.devkit.synthetic import generate_round
    from dissemination.intake import reading, source

    survey = sql_engine

    monkeypatch.setattr(reading, "PART_ROWS", 400)
    ruleset = policy.rulesets["NGA"]
    meta, df = generate_round(ruleset, 2, 1500, seed=5)
    if hxl:  # an export loaded as it is: its HXL row first
        tags = pd.DataFrame([{c: f"#tag+c{i}" for i, c in enumerate(df.columns)}])
        df = pd.concat([tags, df.astype(object)], ignore_index=True)
    secret = {c for c, d in classify_round(list(df.columns), ruleset).items()
              if d.classification is Classification.SECRET}
    assert {"ki_phone", "enumerator_comments"} <= secret
    read = []
    parts_of = reading.read_round_parts

    def spied(*args, **kwargs):
        meta, parts = parts_of(*args, **kwargs)
        return meta, (read.append(list(p.columns)) or p for p in parts)

    monkeypatch.setattr(reading, "read_round_parts", spied)
    df.loc[1200, "site_id"] = df.loc[3, "site_id"]  # a key repeated across parts
    source.write_round(survey, meta, df)
    path = tmp_path / "stage" / "round.arrow"
    with pytest.raises(ContractBroken) as broken:
        pull_round(survey, meta.round_id, policy, path)
    whole = conform(read_round(survey, meta.round_id)[1], ruleset, first_row=1)
    assert broken.value.violations == whole.violations and whole.violations
    assert whole.hxl_row == hxl and not path.exists()

    df.loc[1200, "site_id"] = "NGA-S99999"
    source.write_round(survey, meta, df)
    read.clear()
    staged = pull_round(survey, meta.round_id, policy, path)
    clean = conform(read_round(survey, meta.round_id)[1], ruleset, first_row=1)
    assert len(read) == (4 if survey.dialect.name == "sqlite" else 1)
    assert not any(secret & set(columns) for columns in read)
    pd.testing.assert_frame_equal(staging.read_staged(path), clean.frame)
    assert staged["columns"] == clean.columns
    # An uncovered column travels by position: its header is never a column's name.
    assert secret - {"enumerator_id"} <= set(staged["columns"]) and "column 22" in clean.dropped
    assert staged["active_relational"] == sorted(active_relational(clean.frame, ruleset))
