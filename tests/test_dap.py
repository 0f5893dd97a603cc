"""Data Analysis Plan import: column B becomes the rule file's dissemination category."""

from __future__ import annotations

from datetime import date

import pytest
from openpyxl import Workbook

from dissemination.__main__ import main
from dissemination.classification import DisseminationCategory
from dissemination.dap import DapError, import_dap, read_dap
from dissemination.policy import load_policy

TODAY = date(2026, 11, 21)


def _xlsx(path, rows):
    wb = Workbook()
    ws = wb.active
    ws.append(["Indicator", "Dissemination Category", "Classification", "Kind"])
    for row in rows:
        ws.append(list(row))
    wb.save(path)
    return path


def test_xlsx_column_b_updates_the_rule_file_and_keeps_comments(include, tmp_path):
    dap = _xlsx(tmp_path / "DAP_NGA.xlsx", [
        ("primary_need", "Low urgency", "", ""),   # back to the default: monthly
        ("water_points", "Public", "public", "count"),
        ("idp_female", "Low urgency", "", ""),     # same as the default: nothing to add
    ])
    diff = import_dap(include, "NGA", dap, write=False, today=TODAY)
    assert "-    category: urgent\n+    category: monthly" in diff
    assert "+  water_points:" in diff and "idp_female" not in diff
    before = (include / "rules" / "NGA.yaml").read_text()
    assert "water_points" not in before  # not written without --write
    import_dap(include, "NGA", dap, write=True, today=TODAY)
    after = (include / "rules" / "NGA.yaml").read_text()
    assert "# tightened: tracing is ongoing with UNICEF" in after  # comments survive
    policy = load_policy(include)
    rules = policy.rulesets["NGA"].indicators
    assert rules["primary_need"].category is DisseminationCategory.MONTHLY
    assert rules["water_points"].kind == "count"


def test_a_new_indicator_without_classification_is_secret(include, tmp_path):
    dap = tmp_path / "dap.csv"
    dap.write_text("Indicator,Dissemination Category\nsecurity_incidents,Monthly\n")
    import_dap(include, "SSD", dap, write=True, today=TODAY)
    rule = load_policy(include).rulesets["SSD"].indicators["security_incidents"]
    assert rule.classification.value == "secret"


def test_unknown_category_names_the_row(tmp_path):
    dap = tmp_path / "dap.csv"
    dap.write_text("Indicator,Dissemination Category\nsite_id,Public\nki_name,Whenever\n")
    with pytest.raises(DapError, match=r"row 3, column B: 'Whenever' for 'ki_name'"):
        read_dap(dap)


def test_a_dap_that_breaks_an_agreement_writes_nothing(include, tmp_path, capsys):
    dap = tmp_path / "dap.csv"
    dap.write_text("Indicator,Dissemination Category\nseparated_children,Internal\n")
    before = (include / "rules" / "NGA.yaml").read_text()
    assert main(["dap", "--country", "NGA", "--include", str(include), str(dap), "--write"]) == 1
    err = capsys.readouterr().err
    assert "nothing written" in err and "'separated_children' has dissemination category" in err
    assert (include / "rules" / "NGA.yaml").read_text() == before


def test_a_new_country_file_from_a_dap(include, tmp_path):
    dap = _xlsx(tmp_path / "DAP_SOM.xlsx", [("site_id", "Public", "public", "key"),
                                            ("idp_individuals", "Public", "", "")])
    # A country needs DTM's focal points before its rules can be used: refused, nothing written.
    with pytest.raises(DapError, match=r"focal_points/dtm/SOM\.yaml"):
        import_dap(include, "SOM", dap, write=True, today=TODAY)
    assert not (include / "rules" / "SOM.yaml").exists()
    nga = (include / "focal_points" / "dtm" / "NGA.yaml").read_text()
    (include / "focal_points" / "dtm" / "SOM.yaml").write_text(
        nga.replace("country: NGA", "country: SOM"))
    import_dap(include, "SOM", dap, write=True, today=TODAY)
    ruleset = load_policy(include).rulesets["SOM"]
    assert ruleset.risk_assessment.date == TODAY and ruleset.version == "dap-2026-11-21"
    assert ruleset.indicators["ki_phone"].classification.value == "secret"  # the default
