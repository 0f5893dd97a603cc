"""Aggregation: a selection's rows summed to an admin level, one row per area.

Counts are summed per area; categorical and yes/no indicators become the number of sites per
declared value (``feeling_of_safety=none_feel_safe``: column names come from the contract,
never from the data); a ``sites`` column counts each area's sites.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from ..classification import Classification
from ..classify.sensitivity import Selection
from ..policy import RuleSet
from .content import SITES, Content, OutputColumn, UndeclaredValue

_WHOLE = "__whole_round__"


def additive_groups(ruleset: RuleSet, present: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    return [(g.total, g.parts) for g in ruleset.additive
            if g.total in present and all(p in present for p in g.parts)]


def aggregate(df, selection: Selection, ruleset: RuleSet, kinds: dict[str, str]
               ) -> tuple[Content, list[np.ndarray]]:
    """The per-area table, and for each of its rows the positions (in ``df``) of its sites."""
    shared = selection.shared
    level_cols = set(ruleset.level_columns(selection.level))
    keys = [d for d in shared if kinds[d.column] == "round" or d.column in level_cols]
    key_names = [d.column for d in keys]
    if not key_names:  # no area column may be shared: one row for the whole round
        df = df.assign(**{_WHOLE: "all"})
    grouped = df.groupby(key_names or [_WHOLE], dropna=False, sort=True)
    number = grouped.ngroup().to_numpy()
    order = np.argsort(number, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(number[order])) + 1) if len(df) else []
    parts = [grouped.size().rename(SITES)]
    columns = [OutputColumn(d.column, d.column, d.classification, d.rule) for d in keys]
    columns.append(OutputColumn(SITES, "", Classification.PUBLIC,
                                f"aggregation to {selection.level}: number of sites"))
    content_notes: dict[str, list[str]] = defaultdict(list)
    groups = []
    for d in shared:
        kind = kinds[d.column]
        if d in keys:
            continue
        if kind == "count":
            parts.append(grouped[d.column].sum(min_count=1))
            columns.append(OutputColumn(d.column, d.column, d.classification, d.rule))
            content_notes[d.column].append(f"aggregated to {selection.level} (sum)")
        else:  # categorical, flag: number of sites per declared value, and only those
            declared = list(ruleset.indicators[d.column].values)
            counts = grouped[d.column].value_counts().unstack(fill_value=0)
            undeclared = set(counts.columns) - set(declared)
            if undeclared:
                raise UndeclaredValue(f"{d.column}: {len(undeclared)} value(s) outside the "
                                      "declared set reached aggregation (conform the round first)")
            counts = counts.reindex(columns=declared, fill_value=0)
            counts.columns = [f"{d.column}={v}" for v in declared]
            parts.append(counts)
            columns += [OutputColumn(c, d.column, d.classification, d.rule) for c in counts]
            groups.append((SITES, tuple(counts.columns)))
            content_notes[d.column].append(
                f"aggregated to {selection.level} (sites per value: {len(counts.columns)} columns)")
    frame = pd.concat(parts, axis=1).reset_index().drop(columns=[_WHOLE], errors="ignore")
    for c in frame.columns:
        if c not in key_names:
            frame[c] = frame[c].astype("int64[pyarrow]")
    content = Content(frame[[c.name for c in columns]], columns, content_notes)
    content.groups = groups + additive_groups(ruleset, set(frame.columns))
    return content, members

