"""An XLSX export read as a stream, its intake limits enforced before and while it is read.

An XLSX is a zip of XML: 16 MB on disk unpacked to 275 MB of sheet XML, which was still being
parsed minutes later. What its members unpack to is summed before anything is parsed (Python's
zipfile never inflates a member past the size its directory declares: a member that lies fails
its CRC), against a limit sized for real exports; then the first sheet is read a row at a time
(openpyxl read-only, without its sizing pass), refused at the first row wider than
``max_columns`` and read no further than ``max_rows`` allows. Cells come out as pandas'
``read_excel`` gave them (``dtype=object``, ``na_filter=False``): empty cells as "", whole
numbers as int, error cells as NaN.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from openpyxl import load_workbook
from openpyxl.cell.cell import TYPE_ERROR, TYPE_NUMERIC
from openpyxl.reader import excel
from openpyxl.worksheet._read_only import ReadOnlyWorksheet

from ..errors import PermanentError
from ..policy import IntakeLimits


class WorkbookRefused(PermanentError, ValueError):
    """A workbook over an intake limit; the message names the limit, never a cell."""


def check_unpacked(path: Path, limits: IntakeLimits) -> None:
    """Refuse a workbook whose members unpack to more than ``max_xlsx_uncompressed_bytes``.
    ``zipfile.BadZipFile``: not a zip at all."""
    with zipfile.ZipFile(path) as zf:
        unpacked = sum(i.file_size for i in zf.infolist())
    if unpacked > limits.max_xlsx_uncompressed_bytes:
        raise WorkbookRefused(f"unpacks to {unpacked} bytes, above the intake limit of "
                              f"{limits.max_xlsx_uncompressed_bytes} (include/intake.yaml: "
                              "max_xlsx_uncompressed_bytes)")


def read_first_sheet(path: Path, limits: IntakeLimits, rows: int) -> pd.DataFrame:
    """The first sheet's first ``rows`` rows (header included), every cell as exported."""
    check_unpacked(path, limits)
    with _unsized_sheets():
        book = load_workbook(path, read_only=True, data_only=True, keep_links=False)
    try:
        sheet = book.worksheets[0]
        data, last = [], -1
        for number, row in enumerate(sheet.rows, start=1):
            cells = [_cell(c) for c in row]
            while cells and isinstance(cells[-1], str) and cells[-1] == "":
                cells.pop()
            if len(cells) > limits.max_columns:
                raise WorkbookRefused(f"row {number} has {len(cells)} columns, above the "
                                      f"intake limit of {limits.max_columns} "
                                      "(include/intake.yaml: max_columns)")
            last = number - 1 if cells else last
            data.append(cells)
            if len(data) >= rows:
                break
    finally:
        book.close()
    data = data[:last + 1]  # trailing empty rows are no rows
    width = max((len(r) for r in data), default=0)
    return pd.DataFrame([r + [""] * (width - len(r)) for r in data], dtype=object)


class _UnsizedSheet(ReadOnlyWorksheet):
    """A read-only sheet whose rows are read as they come, its size unknown."""

    def _get_size(self) -> None:
        """Skipped: openpyxl sizes each sheet as the book loads, from its ``<dimension>``, and
        parses a sheet without one whole to find its end, before a single row is given (a bomb
        without it was parsed in full, then again). Its word is not needed: rows are read as
        the sheet holds them, each judged as it comes."""


@contextmanager
def _unsized_sheets() -> Iterator[None]:
    """openpyxl's loader makes ``_UnsizedSheet`` read-only sheets while the book loads."""
    excel.ReadOnlyWorksheet = _UnsizedSheet
    try:
        yield
    finally:
        excel.ReadOnlyWorksheet = ReadOnlyWorksheet


def _cell(cell) -> object:
    if cell.value is None:
        return ""
    if cell.data_type == TYPE_ERROR:
        return np.nan
    if cell.data_type == TYPE_NUMERIC and not isinstance(cell.value, bool):
        whole = int(cell.value)
        return whole if whole == cell.value else float(cell.value)
    return cell.value
