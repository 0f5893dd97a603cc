"""Intake: watermark on the survey database, content hashes, the file drop."""

from __future__ import annotations

import traceback
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from dissemination.devkit.synthetic import generate_round
from dissemination.intake.fresh import (
    DropFileRejected,
    content_hash,
    import_drop,
    new_rounds,
    read_drop_file,
)
from dissemination.intake.reading import read_round
from dissemination.intake.source import write_round

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def dbs(tmp_path):
    from dissemination.ledger.migrations import upgrade

    ledger = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    upgrade(ledger)
    return sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}"), ledger


def test_content_hash_ignores_order_but_not_values(policy):
    _, df = generate_round(policy.rulesets["NGA"], 1, 30, seed=1)
    shuffled = df.sample(frac=1, random_state=3)[list(reversed(df.columns))]
    assert content_hash(df) == content_hash(shuffled)
    changed = df.copy()
    changed.loc[4, "unaccompanied_children"] += 1
    assert content_hash(changed) != content_hash(df)


def test_each_round_is_processed_once_and_corrections_are_explicit(dbs, policy):
    survey, ledger = dbs
    meta, df = generate_round(policy.rulesets["NGA"], 1, 30, seed=1)
    write_round(survey, meta, df, exported_at=NOW)
    (first,) = new_rounds(survey, ledger, NOW)
    assert (first.round_id, first.version, first.corrected) == (meta.round_id, 1, False)
    assert new_rounds(survey, ledger, NOW) == []  # nothing exported since
    write_round(survey, meta, df, exported_at=NOW + timedelta(minutes=5))  # same content again
    assert new_rounds(survey, ledger, NOW) == []
    fixed = df.copy()
    fixed.loc[0, "idp_households"] = 12
    write_round(survey, meta, fixed, exported_at=NOW + timedelta(minutes=10))
    (second,) = new_rounds(survey, ledger, NOW)
    assert second.corrected and second.version == 2 and second.replaces == first.content_sha256


def test_the_file_drop_loads_good_files_and_rejects_bad_ones(dbs, tmp_path, policy):
    survey, _ = dbs
    drop = tmp_path / "drop"
    drop.mkdir()
    _, df = generate_round(policy.rulesets["SSD"], 4, 20, seed=2)
    df.drop(columns=["round_id"]).to_csv(drop / "SSD-R004-partial.csv", index=False)
    df.to_excel(drop / "SSD-R005-cleaned.xlsx", index=False)
    (drop / "notes.txt").write_text("hello")
    (drop / "NGA-R009-partial.csv").write_text("site_name\nx\n")
    imported = import_drop(drop, survey, NOW, policy)
    assert imported == ["SSD-R004-partial", "SSD-R005-cleaned"]
    meta, back = read_round(survey, "SSD-R004-partial")
    assert meta.status == "partial" and len(back) == 20
    first_day = datetime.fromisoformat(min(df["collected_on"])).replace(tzinfo=UTC)
    assert meta.collected_at == first_day  # the window runs from the first day of collection
    assert sorted(p.name for p in (drop / "processed").iterdir()) == [
        "SSD-R004-partial.csv", "SSD-R005-cleaned.xlsx"]
    errors = {p.name: p.read_text() for p in (drop / "rejected").glob("*.error")}
    assert "name must look like" in errors["notes.txt.error"]
    assert "no column is the site key" in errors["NGA-R009-partial.csv.error"]
    assert not [p for p in drop.iterdir() if p.is_file()]


def test_a_malformed_file_names_itself(tmp_path, policy):
    bad = tmp_path / "NGA-R001-partial.xlsx"
    bad.write_bytes(b"not a spreadsheet")
    with pytest.raises(DropFileRejected, match="NGA-R001-partial.xlsx: cannot be read"):
        read_drop_file(bad, policy)


# --- CSV exports read as the file counts them -----------------------------------------------


def _drop_csv(tmp_path, policy, edit) -> bytes:
    """An NGA partial round of 6 sites as a CSV export, its lines (bytes) passed to ``edit``."""
    _, df = generate_round(policy.rulesets["NGA"], 1, 6, seed=4)
    lines = df.drop(columns=["round_id"]).to_csv(index=False).encode().splitlines()
    path = tmp_path / "NGA-R001-partial.csv"
    path.write_bytes(b"\n".join(edit(lines)) + b"\n")
    return path


@pytest.mark.parametrize("edit, said", [
    (lambda lines: [*lines[:-1], lines[-1][: lines[-1].rindex(b",")]],
     r"line 7 has 21 field\(s\), the header 22"),  # cut off mid-row
    (lambda lines: [*lines[:3], b"", *lines[3:]], "line 4 is blank, between rows"),
    (lambda lines: [*lines[:2], lines[2] + b",extra", *lines[3:]],
     r"line 3 has 23 field\(s\), the header 22"),
], ids=["a file cut short", "a blank line between rows", "a row with a cell too many"])
def test_a_csv_whose_records_do_not_line_up_is_refused_by_line(tmp_path, policy, edit, said):
    """pandas pads a short record with empty cells (answers missing) and skips blank lines
    (every later row named one too early): the file is refused, naming the line."""
    with pytest.raises(DropFileRejected, match=said):
        read_drop_file(_drop_csv(tmp_path, policy, edit), policy)


def test_trailing_blank_lines_are_fine(tmp_path, policy):
    _, df = read_drop_file(_drop_csv(tmp_path, policy, lambda lines: [*lines, b"", b""]), policy)
    assert len(df) == 6


def test_a_csv_of_mixed_encodings_is_refused_at_its_first_line_that_is_not_utf8(tmp_path,
                                                                                   policy):
    """Read as Windows-1252 (the fallback for legacy exports), its UTF-8 names would be stored
    as "cafÃ©"; read as UTF-8, the pasted line cannot be."""
    def edit(lines):
        lines[2] = lines[2].replace(b" site", " caf\u00e9".encode())
        lines[5] = lines[5].replace(b" site", " caf\u00e9".encode("cp1252"))
        return lines

    with pytest.raises(DropFileRejected, match="line 6 is not UTF-8 text.*mixed encodings"):
        read_drop_file(_drop_csv(tmp_path, policy, edit), policy)
    legacy = _drop_csv(tmp_path, policy, lambda lines: [
        line.replace(b" site", " caf\u00e9".encode("cp1252")) for line in lines])
    _, df = read_drop_file(legacy, policy)  # Windows-1252 throughout: read as such
    assert df["site_name"].str.contains("caf\u00e9").all()


def test_a_first_row_of_spreadsheet_errors_is_a_row_not_hxl_hashtags(tmp_path, policy):
    """HXL rows are skipped; "#N/A" in every cell of the first row (a failed lookup) is not
    one, and is refused as the row it is."""
    def edit(lines):
        return [lines[0], b",".join([b"#N/A"] * 22), *lines[1:]]

    with pytest.raises(DropFileRejected, match=r"in 1 row\(s\): 2 "):
        read_drop_file(_drop_csv(tmp_path, policy, edit), policy)


def test_an_unreadable_cell_is_not_quoted_in_the_refusal(tmp_path, policy):
    """openpyxl's messages quote the cell it could not convert: a phone number typed into a
    numeric cell. The refusal names the file and the error's type only."""
    from openpyxl import Workbook

    path = tmp_path / "NGA-R001-partial.xlsx"
    book = Workbook()
    book.active.append(["site_id", "ki_phone"])
    book.active.append(["NGA-S00001", 1])
    book.save(path)
    with zipfile.ZipFile(path) as zf:  # the cell typed as a number, holding text
        parts = {n: zf.read(n) for n in zf.namelist()}
    sheet = "xl/worksheets/sheet1.xml"
    parts[sheet] = parts[sheet].replace(b"<v>1</v>", b"<v>+234 803 555 0199</v>")
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    with pytest.raises(DropFileRejected) as refused:
        read_drop_file(path, policy)
    said = "".join(traceback.format_exception(refused.value))
    assert "cannot be read (ValueError" in said and "555" not in said


@pytest.mark.parametrize("when", ["0001-01-01", "1900-01-01", "9999-12-31"])
def test_a_collection_date_no_round_has_is_refused_by_row(tmp_path, policy, when):
    """The urgent window runs from the first day of collection: a typo of a century dated it a
    century ago (missed at once)."""
    def edit(lines):
        header = lines[0].split(b",")
        cells = lines[3].split(b",")
        cells[header.index(b"collected_on")] = when.encode()
        return [*lines[:3], b",".join(cells), *lines[4:]]

    with pytest.raises(DropFileRejected, match=r"'collected_on': 1 collection date\(s\) outside "
                                               r"2000-01-01\.\.2099-12-31 in row\(s\): 4"):
        read_drop_file(_drop_csv(tmp_path, policy, edit), policy)


def test_a_utf16_csv_is_refused_saying_so(tmp_path, policy):
    """Excel's "Unicode Text" is UTF-16: read as Windows-1252 it was refused for having no
    site key column, which sent the officer looking at the wrong thing."""
    path = _drop_csv(tmp_path, policy, lambda lines: lines)
    path.write_bytes(path.read_text().encode("utf-16"))
    with pytest.raises(DropFileRejected, match="UTF-16 text"):
        read_drop_file(path, policy)
