"""Data Analysis Plan import: column B becomes the rule file's dissemination category, and the
DAP's header, HXL and values columns the indicators' round contract."""

from __future__ import annotations

from datetime import date

import pytest
from openpyxl import Workbook, load_workbook

from dissemination.__main__ import main
from dissemination.classification import DisseminationCategory
from dissemination.intake.dap import DapError, import_dap, read_dap
from dissemination.policy import load_policy

TODAY = date(2026, 11, 21)


def _xlsx(path, rows, extra=()):
    wb = Workbook()
    ws = wb.active
    ws.append(["Indicator", "Dissemination Category", "Classification", "Kind", *extra])
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
    dap.write_text("Indicator,Dissemination Category,Classification,Kind\n"
                   "security_incidents,Monthly,,count\n")
    import_dap(include, "SSD", dap, write=True, today=TODAY)
    rule = load_policy(include).rulesets["SSD"].indicators["security_incidents"]
    assert rule.classification.value == "secret"


def test_unknown_category_names_the_row(tmp_path):
    dap = tmp_path / "dap.csv"
    dap.write_text("Indicator,Dissemination Category\nsite_id,Public\nki_name,Whenever\n")
    with pytest.raises(DapError, match=r"row 3, column B: 'Whenever' for 'ki_name'"):
        read_dap(dap)


def test_one_indicator_on_two_rows_is_refused_naming_both(tmp_path):
    """Two rows for security_incidents (secret, then public): the last one silently won."""
    dap = tmp_path / "dap.csv"
    dap.write_text("Indicator,Dissemination Category,Classification\n"
                   "security_incidents,Internal,secret\nSecurity_Incidents ,Public,public\n")
    with pytest.raises(DapError, match=r"row 3, column A: 'Security_Incidents' is also row 2"):
        read_dap(dap)


@pytest.mark.parametrize("name, content, said", [
    ("dap.csv", b"", "EmptyDataError"),
    ("dap.xlsx", b"not a workbook", "BadZipFile"),
], ids=["empty", "not a workbook"])
def test_an_unreadable_dap_is_named(tmp_path, name, content, said):
    """pandas' and openpyxl's own errors named no file, and the CLI showed a traceback."""
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DapError, match=f"{name}: cannot be read as a Data Analysis Plan "
                                       f"\\({said}"):
        read_dap(tmp_path / name)


def test_a_dap_saved_by_excel_as_windows_1252_csv_is_read(tmp_path):
    dap = tmp_path / "dap.csv"
    dap.write_bytes("Indicator,Dissemination Category\nsite_id,Public\nz\u00e9ro,Public\n"
                    .encode("cp1252"))
    assert [r.indicator for r in read_dap(dap)] == ["site_id", "z\u00e9ro"]


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


def test_header_hxl_and_values_columns_fill_the_contract(include, tmp_path):
    # Column E (Notes) is not one of ours; the others are found by their header.
    dap = _xlsx(tmp_path / "DAP_NGA.xlsx", [
        # a new indicator: values split on ";", "|" and line breaks, spaces stripped
        ("shelter_type", "Monthly", "public", "Categorical", "new in round 12",
         "Main shelter type; Shelter (type)", "#shelter +type", "tent;  makeshift\nhouse | none"),
        # of the default only: written as what the DAP changes, not a copy of the default
        ("idp_individuals", "Public", "", "", "", "Total IDP individuals (ind)",
         "#affected+idps+ind", ""),
        ("armed_actors_military", "Urgent", "", "", "", "", "", "yes\nno\nunknown\n"),
        # the country file's entries: what the DAP says replaces what they say
        ("admin1_pcode", "Public", "", "", "", "", "", "NG008;NG002"),
        ("separated_children", "Urgent", "", "", "", "Separated children", "", ""),
    ], extra=("Notes", "Export header(s)", "HXL tag", "Answer options"))
    diff = import_dap(include, "NGA", dap, write=True, today=TODAY)
    assert "+  idp_individuals:\n+    headers: [Total IDP individuals (ind)]\n" in diff
    after = (include / "rules" / "NGA.yaml").read_text()
    assert "idp_individuals:\n    headers" in after  # no category: the default's is the same
    # yes/no and numbers-as-text are quoted for any YAML reader
    assert 'values: ["yes", "no", unknown]' in after and "values: [NG008, NG002]" in after
    assert "# tightened: tracing is ongoing with UNICEF" in after
    assert "new in round 12" not in after
    rules = load_policy(include).rulesets["NGA"].indicators
    shelter = rules["shelter_type"]
    assert shelter.kind == "categorical" and shelter.classification.value == "public"
    assert shelter.headers == ("Main shelter type", "Shelter (type)")
    assert shelter.hxl == "#shelter +type"
    assert shelter.values == ("tent", "makeshift", "house", "none")
    idps = rules["idp_individuals"]
    assert idps.headers == ("Total IDP individuals (ind)",) and idps.hxl == "#affected+idps+ind"
    assert idps.kind == "count" and idps.category is DisseminationCategory.PUBLIC
    military = rules["armed_actors_military"]
    assert military.values == ("yes", "no", "unknown")
    assert military.synonyms  # the default's synonyms stay: the entry lists only the values
    assert rules["admin1_pcode"].values == ("NG008", "NG002")
    separated = rules["separated_children"]
    assert separated.headers == ("Separated children",) and separated.description


def test_values_in_a_csv_with_line_breaks_and_semicolons(include, tmp_path):
    dap = tmp_path / "dap.csv"
    dap.write_text('Indicator,Dissemination Category,Classification,Kind,Choices,Label\n'
                   'water_source,Monthly,public,flag,"true\n false ;;",Water source?\n')
    diff = import_dap(include, "SSD", dap, write=True, today=TODAY)
    assert [line for line in diff.splitlines() if line.startswith("-")] == [
        f"--- {include / 'rules' / 'SSD.yaml'} (now)"]  # only added lines
    after = (include / "rules" / "SSD.yaml").read_text()
    assert 'values: ["true", "false"]\n\nrelational:' in after  # the blank line stays put
    rule = load_policy(include).rulesets["SSD"].indicators["water_source"]
    assert rule.values == ("true", "false") and rule.headers == ("Water source?",)


def test_only_a_through_d_keep_todays_meaning(tmp_path):
    dap = tmp_path / "dap.csv"
    dap.write_text("Variable,Category,Values,HXL\nsite_id,Public,public,key\n")
    (row,) = read_dap(dap)  # C and D are classification and kind, whatever their header says
    assert row.kind == "key" and row.classification.value == "public"
    assert row.values == () and row.hxl is None


def test_a_bad_hxl_cell_is_named_by_row_and_column(tmp_path):
    dap = _xlsx(tmp_path / "DAP.xlsx", [
        ("idp_individuals", "Public", "", "", "#affected+idps"),
        ("idp_households", "Public", "", "", "affected households"),
    ], extra=("HXL",))
    with pytest.raises(DapError) as exc:
        read_dap(dap)
    message = str(exc.value)
    assert "row 3, column E: 'affected households' is not an HXL hashtag" in message
    assert "row 2" not in message and "idp_households" not in message  # only the cell


def test_bad_kinds_and_values_are_named_by_row_and_column(tmp_path):
    dap = tmp_path / "dap.csv"
    dap.write_text("Indicator,Category,Classification,Kind,Values\n"
                   "a,Public,,number,\n"
                   "b,Public,,count,1;2\n"
                   "c,Public,,flag,Yes;yes \n")
    with pytest.raises(DapError) as exc:
        read_dap(dap)
    lines = str(exc.value).splitlines()
    assert lines[0].endswith("row 2, column D: 'number' is not a kind (round, key, admin, date, "
                             "coordinate, count, categorical, flag, text, personal)")
    assert "row 3, column E: values are given but the kind in column D is count" in lines[1]
    assert "row 4, column E: 'yes' and 'Yes' are the same value" in lines[2]


def test_two_columns_for_the_same_field_are_refused(tmp_path):
    dap = tmp_path / "dap.csv"
    dap.write_text("Indicator,Category,Classification,Kind,Question,Export header\n")
    with pytest.raises(DapError, match="columns E and F both look like the export headers column"):
        read_dap(dap)


def test_a_categorical_without_values_is_refused_and_nothing_written(include, tmp_path, capsys):
    dap = _xlsx(tmp_path / "DAP_NGA.xlsx", [
        ("water_points", "Public", "public", "count", "Water points", ""),
        ("shelter_type", "Monthly", "public", "categorical", "Shelter type", ""),
    ], extra=("Header", "Values"))
    before = (include / "rules" / "NGA.yaml").read_text()
    assert main(["dap", "--country", "NGA", "--include", str(include), str(dap), "--write"]) == 1
    err = capsys.readouterr().err
    assert "nothing written" in err
    assert ("row 3, column D: 'shelter_type' is a new indicator of kind categorical (column D), "
            "which needs its declared values: list them in a 'Values' column") in err
    assert (include / "rules" / "NGA.yaml").read_text() == before


def test_a_new_indicator_without_kind_or_values_says_what_to_add(include, tmp_path):
    dap = tmp_path / "dap.csv"
    dap.write_text("Indicator,Dissemination Category\nsecurity_incidents,Monthly\n")
    with pytest.raises(DapError, match=r"row 2, column D: 'security_incidents' is a new "
                                       r"indicator of kind categorical \(column D is empty"):
        import_dap(include, "SSD", dap, write=True, today=TODAY)
    assert "security_incidents" not in (include / "rules" / "SSD.yaml").read_text()


def test_values_for_an_indicator_that_cannot_have_them_say_why(include, tmp_path):
    dap = tmp_path / "dap.csv"
    dap.write_text("Indicator,Dissemination Category,Classification,Kind,Values\n"
                   "idp_female,Monthly,,,1;2\n")
    with pytest.raises(DapError, match=r"row 2, column E: 'idp_female' is of kind count \(as "
                                       r"the rule files say\), which cannot declare values"):
        import_dap(include, "NGA", dap, write=True, today=TODAY)


def _run_dap(include, dap, capsys) -> tuple[int, str]:
    code = main(["dap", "--country", "NGA", "--include", str(include), str(dap), "--write"])
    return code, capsys.readouterr().err


def test_a_hidden_first_sheet_is_refused_naming_it(include, tmp_path, capsys):
    """The import read the first sheet even when hidden: an old plan nobody reviewing the
    workbook sees would become the rules."""
    wb = Workbook()
    old = wb.active
    old.title = "Old plan"
    old.append(["Indicator", "Dissemination Category", "Classification", "Kind"])
    old.append(["water_points", "Public", "public", "count"])
    old.sheet_state = "hidden"
    wb.create_sheet("DAP").append(["Indicator", "Dissemination Category"])
    wb.save(dap := tmp_path / "DAP_NGA.xlsx")
    before = (include / "rules" / "NGA.yaml").read_text()
    code, err = _run_dap(include, dap, capsys)
    assert code == 1 and "the first sheet 'Old plan' is hidden" in err and str(dap) in err
    assert (include / "rules" / "NGA.yaml").read_text() == before


def test_hidden_rows_and_columns_are_refused_naming_them(include, tmp_path, capsys):
    dap = _xlsx(tmp_path / "DAP_NGA.xlsx", [
        ("primary_need", "Low urgency", "", "", ""),
        ("water_points", "Public", "public", "count", ""),
        ("toilets", "Public", "public", "categorical", "none; shared; private"),
    ], extra=["Values"])
    wb = load_workbook(dap)
    wb.active.row_dimensions[3].hidden = True
    wb.active.column_dimensions["E"].hidden = True
    wb.save(dap)
    before = (include / "rules" / "NGA.yaml").read_text()
    code, err = _run_dap(include, dap, capsys)
    assert code == 1 and "row(s) 3 of the first sheet are hidden" in err
    assert "column(s) E of the first sheet are hidden" in err
    assert (include / "rules" / "NGA.yaml").read_text() == before


def test_hidden_empty_rows_and_other_hidden_sheets_are_no_obstacle(include, tmp_path, capsys):
    """A template's hidden list of choices on another sheet, or a hidden empty row, hides no
    part of the plan."""
    dap = _xlsx(tmp_path / "DAP_NGA.xlsx", [("water_points", "Public", "public", "count")])
    wb = load_workbook(dap)
    wb.active.row_dimensions[40].hidden = True
    wb.create_sheet("choices").sheet_state = "hidden"
    wb.save(dap)
    code, err = _run_dap(include, dap, capsys)
    assert code == 0, err
    assert "water_points" in (include / "rules" / "NGA.yaml").read_text()
