"""Columns in Arrow, worked on once per distinct value where values repeat.

A million-site round names a few dozen admin areas, declared values and one round id a million
times over: checking, staging and validating such a column per distinct value (an Arrow
dictionary) is the work and memory of a few dozen cells. Site keys and names are distinct in
every row and are left as they are.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def as_arrow(values: pd.Series) -> pa.Array:
    """A text column as one Arrow string array."""
    cells = pa.array(values.reset_index(drop=True), type=pa.string(), from_pandas=True)
    return cells.combine_chunks() if isinstance(cells, pa.ChunkedArray) else cells


def repeats(cells: pa.Array | pa.ChunkedArray, sample: int = 4096) -> bool:
    """Whether distinct values are few enough to be worth hashing first (judged on a sample:
    a site key or a site name is distinct in every row, an admin name in almost none)."""
    head = cells.slice(0, sample)
    return len(head) > 0 and len(pc.unique(head)) <= len(head) // 2
