"""Hostile files at the drop: an XLSX bomb refused in seconds, not parsed for minutes, and a CSV
separated by semicolons refused naming its separator."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from conftest import REPO
from openpyxl import Workbook

from dissemination.devkit.synthetic import generate_round
from dissemination.intake.fresh import import_drop

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
ROUND = "NGA-R001-partial"
#: Bounds the refusal: parsing either bomb takes minutes.
SECONDS = 60


def _bomb(path, columns: int, rows: int) -> None:
    """A workbook of a few MB whose first sheet is ``rows`` rows of ``columns`` numbers: a row
    compresses to almost nothing, so its XML is hundreds of MB."""
    book = Workbook()
    book.active.append(["site_id"])
    template = io.BytesIO()
    book.save(template)
    sheet = "xl/worksheets/sheet1.xml"
    row = b"<row>" + b"<c><v>7</v></c>" * columns + b"</row>"
    with zipfile.ZipFile(template) as src, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for info in src.infolist():
            if info.filename != sheet:
                out.writestr(info, src.read(info.filename))
                continue
            with out.open(sheet, "w", force_zip64=True) as xml:
                xml.write(b'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://'
                          b'schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>')
                for start in range(0, rows, 1000):
                    xml.write(row * min(1000, rows - start))
                xml.write(b"</sheetData></worksheet>")


def _check_round(include, path) -> subprocess.CompletedProcess:
    """``python -m dissemination check-round`` on ``path``, as an officer runs it; at most
    ``SECONDS``."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    return subprocess.run(
        [sys.executable, "-m", "dissemination", "check-round", "--country", "NGA", "--include",
         str(include), str(path)], capture_output=True, text=True, env=env, timeout=SECONDS)


def test_an_xlsx_bomb_under_the_former_limits_is_refused_in_seconds(include, policy, tmp_path):
    """15 MB on disk unpacking to 275 MB of sheet XML was within every default limit and still
    being parsed minutes later; the default is now sized for real exports."""
    drop = tmp_path / "drop"
    drop.mkdir()
    bomb = drop / f"{ROUND}.xlsx"
    _bomb(bomb, columns=22, rows=900_000)
    assert bomb.stat().st_size < 5 * 2**20
    checked = _check_round(include, bomb)
    assert checked.returncode == 1, checked.stderr
    said = (f"{ROUND}.xlsx: unpacks to 30691", "above the intake limit of 134217728 "
            "(include/intake.yaml: max_xlsx_uncompressed_bytes)")
    assert all(s in checked.stdout for s in said)
    survey = sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}")
    assert import_drop(drop, survey, NOW, policy) == []
    error = (drop / "rejected" / f"{ROUND}.xlsx.error").read_text()
    assert all(s in error for s in said)


def test_an_xlsx_too_wide_is_refused_at_its_first_row_not_after_reading_it_all(include,
                                                                             tmp_path):
    """Within the uncompressed limit an operator raised, a sheet wider than ``max_columns`` is
    refused at its first row: it was read whole (millions of cells) before its width was
    judged."""
    (include / "intake.yaml").write_text("max_columns: 50\n"
                                         "max_xlsx_uncompressed_bytes: 2147483648\n")
    bomb = tmp_path / f"{ROUND}.xlsx"
    _bomb(bomb, columns=60, rows=300_000)
    checked = _check_round(include, bomb)
    assert checked.returncode == 1, checked.stderr
    assert (f"blocked: {ROUND}.xlsx: row 1 has 60 columns, above the intake limit of 50 "
            "(include/intake.yaml: max_columns)") in checked.stdout


def test_an_xlsx_over_max_rows_is_refused(include, tmp_path):
    (include / "intake.yaml").write_text("max_rows: 1000\n")
    bomb = tmp_path / f"{ROUND}.xlsx"
    _bomb(bomb, columns=3, rows=200_000)
    checked = _check_round(include, bomb)
    assert checked.returncode == 1, checked.stderr
    assert f"blocked: {ROUND}.xlsx: more than 1000 rows" in checked.stdout


@pytest.mark.parametrize("sign, called", [(";", "semicolons"), ("\t", "tabs")])
def test_a_csv_separated_by_another_sign_is_refused_naming_it(policy, include, tmp_path,
                                                               capsys, sign, called):
    """Excel in a locale whose decimal mark is a comma saves CSV with semicolons; the file was
    refused for having no site key column, or for a line of another width (a decimal comma)."""
    from dissemination.__main__ import main

    _, df = generate_round(policy.rulesets["NGA"], 1, 6, seed=4)
    drop = tmp_path / "drop"
    drop.mkdir()
    path = drop / f"{ROUND}.csv"
    df.drop(columns=["round_id"]).to_csv(path, index=False, sep=sign, decimal=",")
    said = f"{ROUND}.csv: its fields are separated by {sign!r} ({called}), not commas"
    assert main(["check-round", "--country", "NGA", "--include", str(include), str(path)]) == 1
    assert said in capsys.readouterr().out
    survey = sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}")
    assert import_drop(drop, survey, NOW, policy) == []
    assert said in (drop / "rejected" / f"{ROUND}.csv.error").read_text()
