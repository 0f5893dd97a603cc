"""A real DTM-style export, taken as it is: human headers, an HXL row, French answers.

The export is written here by hand (not by the project's generator), in an order and spelling no
rule file mirrors, and fed through both doors without renaming anything: the file drop and the
SQL source. Each partner's package is then opened as the partner would, and compared with what
the Burkina Faso contract and the agreements allow.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from dissemination.classification import Urgency
from dissemination.intake import staging
from dissemination.intake.fresh import import_drop
from dissemination.intake.reading import read_round
from dissemination.intake.source import RoundMeta, write_round
from dissemination.ledger.migrations import open_upgraded
from dissemination.package.archive import open_package
from dissemination.policy import load_policy
from dissemination.runs import (
    Findings,
    PackagingRun,
    package_deliveries,
    plan_deliveries,
    stage_round,
)

NOW = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)
PASSWORD = "a-long-enough-test-password"
HEADERS = ["Site ID", "Camp name", "Région", "Region pcode", "Province", "Province pcode",
           "GPS latitude", "GPS longitude", "Date of assessment", "Total IDP individuals (ind)",
           "# of unaccompanied children", "Do most people feel safe here?",
           "Any armed actor present?", "Which armed group?", "KI name", "KI phone", "Comments",
           "Enumerator"]
HXL = ["#loc+id", "#loc+name", "#adm1+name", "#adm1+code", "#adm2+name", "#adm2+code",
       "#geo+lat", "#geo+lon", "#date+assessed", "#affected+ind+idps",  # attributes reordered
       "#affected+children+unaccompanied", "#indicator+safety", "#indicator+armed+military",
       "#indicator+armed+group", "#contact+name", "#contact+phone", "", ""]
SAFETY = ["Tout le monde se sent en sécurité", "Personne ne se sent en sécurité",
          "Most feel safe", "quelques-uns se sentent en sécurité "]
ARMED = ["Oui", "Non", "NON", " oui"]
GROUPS = ["None", "Aucun", "GANE", "VDP"]
PROVINCES = [("Sahel", "BF52", "Soum", "BF5203"), ("Sahel", "BF52", "Seno", "BF5202"),
             ("Centre-Nord", "BF46", "Bam", "BF4601")]


def export_rows(n: int = 12) -> list[list[str]]:
    rows = []
    for i in range(n):
        region, region_code, province, province_code = PROVINCES[i % 3]
        rows.append([
            f"BFA-S{i + 1:05d}", f"Camp {province} {i + 1}", region, region_code, province,
            province_code, f"{13.5 + i / 100:.4f}", f"{-0.5 - i / 100:.4f}",
            f"0{3 + i % 2}/11/2026", str(400 + 37 * i),
            "NSP" if i == 5 else str(i % 4 * 2), SAFETY[i % 4], ARMED[i % 4], GROUPS[i % 4],
            f"Awa Traore {i}", f"+226 70 12 34 {i:02d}", f"appeler le +226 76 00 00 {i:02d}",
            f"ENUM-{i % 3}",
        ])
    return rows


@pytest.fixture
def bfa_policy(include):
    """The tests' policy plus two Burkina Faso agreements and their focal points."""
    (include / "agreements" / "unicef-bfa.yaml").write_text("""\
id: unicef-bfa
organisation: unicef
focal_points: unicef-bfa
purpose: Follow-up of unaccompanied children within 48 hours.
valid_from: 2026-01-01
valid_until: 2027-12-31
countries: [BFA]
max_classification: confidential
tiers:
  medium:
    window_hours: 48
    indicators: [round_id, site_id, site_name, province_pcode, province_name, collected_on,
                 unaccompanied_children, armed_actors_military]
    exact_counts: [unaccompanied_children]
destination: {sftp_conn_id: sftp_unicef_bfa, remote_dir: unicef-bfa/incoming}
password: {variable: package_password_unicef_bfa, rotate_every_days: 90}
""")
    (include / "agreements" / "protection-bfa.yaml").write_text("""\
id: protection-bfa
organisation: protection-bfa
focal_points: protection-bfa
purpose: Protection monitoring.
valid_from: 2026-01-01
valid_until: 2027-12-31
countries: [BFA]
max_classification: public
tiers:
  medium:
    window_hours: 72
    indicators: [round_id, site_id, region_pcode, feeling_of_safety, armed_actors_military]
  low:
    aggregate_to: admin1            # BFA calls its first level "region"
    indicators: [round_id, region_pcode, region_name, idp_individuals, feeling_of_safety,
                 armed_actors_military]
destination: {sftp_conn_id: sftp_protection_bfa, remote_dir: protection-bfa/incoming}
password: {variable: package_password_protection_bfa, rotate_every_days: 60}
""")
    person = """
  name: {name}
  title: Officer
  mobile: "+226 70 00 00 1{n}"
  email: {email}@example.org"""
    (include / "organisations" / "protection-bfa.yaml").write_text(
        "id: protection-bfa\nname: Protection Cluster Burkina Faso\n")
    for i, (org, owner) in enumerate((("unicef-bfa", "unicef"),
                                      ("protection-bfa", "protection-bfa"))):
        (include / "focal_points" / f"{org}.yaml").write_text(
            f"id: {org}\norganisation: {owner}\nprimary:{person.format(name='P', n=i, email=org)}"
            f"\nsecondary:{person.format(name='S', n=i + 2, email=org + '.s')}\n")
    return load_policy(include)


def _through_the_file_drop(policy, tmp_path) -> tuple[RoundMeta, pd.DataFrame]:
    drop = tmp_path / "drop"
    drop.mkdir()
    with open(drop / "BFA-R003-partial.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([HEADERS, HXL, *export_rows()])
    survey = sa.create_engine(f"sqlite:///{tmp_path / 'drop_survey.db'}")
    assert import_drop(drop, survey, NOW, policy) == ["BFA-R003-partial"]
    return read_round(survey, "BFA-R003-partial")


def _through_the_sql_source(tmp_path) -> tuple[RoundMeta, pd.DataFrame]:
    """DTM's own database holds the export as loaded: same headers, the HXL row first."""
    survey = sa.create_engine(f"sqlite:///{tmp_path / 'sql_survey.db'}")
    table = pd.DataFrame([HXL, *export_rows()], columns=HEADERS)
    meta = RoundMeta("BFA-R003-partial", "BFA", "partial", datetime(2026, 11, 3, tzinfo=UTC))
    write_round(survey, meta, table, exported_at=NOW)
    return read_round(survey, "BFA-R003-partial")


def _packages(policy, meta, df, tmp_path, urgency=Urgency.MEDIUM) -> dict[str, tuple]:
    staged = stage_round(meta, df, policy, tmp_path / "stage" / "round.arrow")
    plans = plan_deliveries(policy, RoundMeta.from_xcom(staged), staged["columns"],
                                  urgency, today=date(2026, 11, 5),
                                  found=Findings(active=staged["active_relational"]))
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    packaged = package_deliveries(staging.read_staged(staged["path"]), meta, plans, policy,
                                        tmp_path / "out", lambda _: PASSWORD, ledger,
                                        PackagingRun(NOW))
    return {p.agreement_id: open_package(p.package_path, PASSWORD) for p in packaged}


@pytest.mark.parametrize("door", ["file drop", "SQL source"])
def test_each_partner_receives_what_the_contract_and_agreement_allow(bfa_policy, tmp_path,
                                                                      door):
    meta, df = (_through_the_file_drop(bfa_policy, tmp_path) if door == "file drop"
                else _through_the_sql_source(tmp_path))
    packages = _packages(bfa_policy, meta, df, tmp_path)
    assert set(packages) == {"unicef-bfa", "protection-bfa"}
    rows = export_rows()

    manifest, unicef = packages["unicef-bfa"]
    # Children per site with armed presence is Secret per site: the last-listed member goes.
    assert list(unicef.columns) == ["site_id", "site_name", "province_name", "province_pcode",
                                    "collected_on", "unaccompanied_children", "round_id"]
    assert unicef["site_id"].tolist() == [r[0] for r in rows]
    assert unicef["collected_on"].astype(str).tolist() == [
        f"2026-11-0{3 + i % 2}" for i in range(len(rows))]  # the export's d/m/Y, as ISO dates
    children = [None if r[10] == "NSP" else int(r[10]) for r in rows]  # NSP: no answer
    assert [None if pd.isna(v) else int(v) for v in unicef["unaccompanied_children"]] == children
    explained = {e["column"]: e for e in manifest["explanation"]}
    assert explained["armed_actors_military"]["decision"] == "dropped"
    assert "children_x_armed_presence" in explained["armed_actors_military"]["rule"]
    for never in ("ki_name", "ki_phone", "enumerator_comments", "column 18"):
        assert explained[never]["decision"] == "dropped"
    # A header no rule declares is named by position: its text is never shipped.
    assert explained["column 18"]["rule"] == "default: no rule covers this column"
    assert "Enumerator" not in json.dumps(manifest)

    _, protection = packages["protection-bfa"]
    # Public ceiling: feelings of safety per site, never together with military presence.
    assert "armed_actors_military" not in protection.columns
    declared = ["all_feel_safe", "none_feel_safe", "most_feel_safe", "some_feel_safe"]
    assert protection["feeling_of_safety"].tolist() == [declared[i % 4] for i in range(len(rows))]

    for _, data in packages.values():
        text = data.to_csv(index=False)
        assert "+226" not in text and "Awa Traore" not in text and "ENUM-" not in text


def test_both_doors_give_the_same_packages(bfa_policy, tmp_path):
    by_drop = _packages(bfa_policy, *_through_the_file_drop(bfa_policy, tmp_path),
                        tmp_path / "a")
    by_sql = _packages(bfa_policy, *_through_the_sql_source(tmp_path), tmp_path / "b")
    for agreement in by_drop:
        assert by_drop[agreement][0]["data_sha256"] == by_sql[agreement][0]["data_sha256"]


def test_per_region_the_combination_is_public_and_named_from_declared_values(bfa_policy,
                                                                             tmp_path):
    meta, df = _through_the_file_drop(bfa_policy, tmp_path)
    _, monthly = _packages(bfa_policy, meta, df, tmp_path, Urgency.LOW)["protection-bfa"]
    assert monthly["region_pcode"].tolist() == ["BF46", "BF52"]
    ruleset = bfa_policy.rulesets["BFA"]
    assert [c for c in monthly.columns if "=" in c] == [
        *(f"feeling_of_safety={v}" for v in ruleset.indicators["feeling_of_safety"].values),
        "armed_actors_military=yes", "armed_actors_military=no"]


def test_check_round_maps_every_header_and_names_every_violation(bfa_policy, include,
                                                                 tmp_path, capsys):
    from dissemination.__main__ import main

    good = tmp_path / "export.csv"
    with open(good, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([HEADERS, HXL, *export_rows()])
    assert main(["check-round", "--country", "BFA", "--include", str(include), str(good)]) == 0
    out = capsys.readouterr().out
    assert "12 row(s), 18 column(s), an HXL row under the headers" in out
    assert "'Total IDP individuals (ind)' -> idp_individuals" in out
    assert "'KI phone' -> ki_phone (Secret: never shared, dropped unread)" in out
    assert "column 18, no rule: Secret, dropped unread" in out and "Enumerator" not in out
    assert out.rstrip().endswith("4 Secret column(s) would be dropped unread")

    rows = export_rows()
    rows[2][12] = "Peut-être"  # armed actors: not a declared answer
    rows[7][1] = "Camp of Awa Traore +226 70 12 34 99"  # a phone number in a Public column
    bad = tmp_path / "bad.xlsx"
    pd.DataFrame(rows, columns=HEADERS).to_excel(bad, index=False)
    assert main(["check-round", "--country", "BFA", "--include", str(include), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "column 'Any armed actor present?' (armed_actors_military): not one of the 2 " \
           "declared values" in out and "in 1 row(s): 4" in out
    assert "column 'Camp name' (site_name): holds what looks like a phone number" in out
    assert "in 1 row(s): 9" in out and "+226" not in out and "Peut" not in out
    assert main(["check-round", "--country", "ZZZ", "--include", str(include), str(bad)]) == 2
