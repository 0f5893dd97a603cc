"""Spreadsheet formulas in delivered text: neutralised before a partner's spreadsheet reads them.

Partners open ``data.csv`` in Excel or LibreOffice, which run a cell beginning with ``=``, ``+``,
``-`` or ``@`` as a formula (``=HYPERLINK(...)`` sends a click to any site, ``=WEBSERVICE(...)``
fetches one, ``-2+3+cmd|...`` once started a program), and a leading tab or carriage return
hides the rest of such a cell. As OWASP's "CSV injection" advises, every text cell beginning
with one of these gets a leading ``'``: the cell is read as text and still says what the export
said. Numbers are not touched (a negative longitude is a number, no formula). Vectorised in
pyarrow: a million-site column is a handful of kernel calls.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..intake.columns import as_arrow

#: What starts a formula (or hides one) in a cell a spreadsheet program reads.
FORMULA_START = "=+-@\t\r"
QUOTE = "'"


def _text(column: pd.Series) -> bool:
    if isinstance(column.dtype, pd.CategoricalDtype):
        return pd.api.types.infer_dtype(column.cat.categories, skipna=True) == "string"
    if column.dtype == object:
        return pd.api.types.infer_dtype(column, skipna=True) == "string"
    return pd.api.types.is_string_dtype(column.dtype)


_STARTS = np.frombuffer(FORMULA_START.encode(), dtype=np.uint8)


def _formula_mask(cells: pa.Array) -> np.ndarray:
    """Per cell: does its first byte start a formula?

    Read from Arrow's buffers (offsets and UTF-8 bytes), as the characters are ASCII: a
    regular expression per cell cost 0.18 s per million cells, this a few milliseconds."""
    offsets, data = cells.buffers()[1:3]
    if data is None or data.size == 0:  # no cell has a byte (all empty or missing)
        return np.zeros(len(cells), dtype=bool)
    width = np.int64 if pa.types.is_large_string(cells.type) else np.int32
    at = np.frombuffer(offsets, dtype=width)[cells.offset:cells.offset + len(cells) + 1]
    starts, filled = at[:-1], np.diff(at) > 0
    first = np.frombuffer(data, dtype=np.uint8)[np.where(filled, starts, 0)]
    valid = cells.is_valid().to_numpy(zero_copy_only=False)
    return filled & valid & np.isin(first, _STARTS)


def formula_cells(frame: pd.DataFrame) -> dict[str, int]:
    """Text cells per column that a spreadsheet would run as a formula (columns with any).

    What ``check-round`` reports before a round is delivered."""
    out = {}
    for name, column in frame.items():
        if _text(column):
            n = int(_formula_mask(as_arrow(column.astype("string"))).sum())
            if n:
                out[str(name)] = n
    return out


def neutralise(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The frame with every formula-leading text cell quoted (``'=SUM(A1)``), and how many.

    The frame itself is returned, untouched, when no cell is: no copy of a clean round."""
    changed, total = {}, 0
    for name, column in frame.items():
        if not _text(column):
            continue
        cells = as_arrow(column.astype("string"))
        mask = _formula_mask(cells)
        n = int(mask.sum())
        if n:
            quoted = pc.binary_join_element_wise(QUOTE, cells.filter(pa.array(mask)), "")
            changed[name] = pd.Series(pc.replace_with_mask(cells, pa.array(mask), quoted),
                                      index=column.index, dtype="string[pyarrow]")
            total += n
    if not changed:
        return frame, 0
    out = frame.copy(deep=False)
    for name, column in changed.items():
        out[name] = column
    return out, total


def report(frame: pd.DataFrame) -> list[str]:
    """One line per column whose cells would be neutralised.

    Names the indicator, never a value: the cell may be the very formula a reader must not
    run."""
    return [f"{name}: {n} cell(s) begin with =, +, -, @, a tab or a carriage return; delivered "
            f"with a leading {QUOTE} (read as text, never run as a spreadsheet formula)"
            for name, n in formula_cells(frame).items()]
