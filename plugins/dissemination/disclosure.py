"""Turn a selection into the table a partner receives: aggregate, redact, suppress small cells.

- **Aggregation** to an admin level: counts are summed per area, categorical and yes/no
  indicators become the number of sites per declared value (``feeling_of_safety=none_feel_safe``:
  column names come from the contract, never from the data), and a
  ``sites`` column counts the sites of each area.
- **Free-text redaction**: phone numbers (any separators), e-mail addresses (also spelled out,
  "name at ngo dot org") and ID-like tokens in allowed free-text columns become ``[redacted]``;
  the number of values touched is reported.
- **Small-cell suppression** (sdcTable's frequency rule): counts 1..threshold are blanked.
  **Secondary suppression** then blanks one more cell wherever a blanked cell could be recomputed
  from a total and the other cells of its group on the same row (declared ``additive`` groups, and
  each aggregated indicator's values against ``sites``), until no group on any row has exactly one
  hidden cell.

Pure: a DataFrame and a selection in, a DataFrame and per-column notes out.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd

from .classification import Classification
from .contract import PERSONAL
from .errors import PermanentError
from .policy import SITE, RuleSet
from .sensitivity import Selection

SITES = "sites"
_WHOLE = "__whole_round__"
REDACTED = "[redacted]"


class UndeclaredValue(PermanentError, AssertionError):
    """A value outside its declared set reached a package: a bug (rounds are conformed first),
    never a policy outcome. Column names of aggregated packages come from declared values only."""


@dataclass(frozen=True)
class OutputColumn:
    name: str
    source: str  # the round's column it comes from ("" for the computed ``sites``)
    classification: Classification
    rule: str


@dataclass
class Content:
    """The partner's table, where each column comes from, and what was done to it."""

    frame: pd.DataFrame
    columns: list[OutputColumn]
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    suppressed: dict[str, int] = field(default_factory=dict)  # output column -> cells
    groups: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (total, parts)


def build_content(df: pd.DataFrame, selection: Selection, ruleset: RuleSet) -> Content:
    shared = selection.shared
    kinds = {d.column: ruleset.indicators[d.column].kind for d in shared}
    if selection.level == SITE:
        content = Content(
            df[[d.column for d in shared]].reset_index(drop=True),
            [OutputColumn(d.column, d.column, d.classification, d.rule) for d in shared],
        )
        content.groups = _additive_groups(ruleset, set(content.frame.columns))
    else:
        content = _aggregate(df, selection, ruleset, kinds)
    for d in shared:
        if kinds[d.column] == "text" and d.column in content.frame:
            content.frame[d.column], n = redact(content.frame[d.column])
            content.notes[d.column].append(f"redacted {n} value(s) with phones, e-mails or IDs")
    _suppress(content, selection, ruleset, kinds)
    return content


def redact(values: pd.Series) -> tuple[pd.Series, int]:
    text = values.astype("string")
    hit = text.str.contains(PERSONAL, regex=True).fillna(False)
    return text.str.replace(PERSONAL, REDACTED, regex=True), int(hit.sum())


def _additive_groups(ruleset: RuleSet, present: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    return [(g.total, g.parts) for g in ruleset.additive
            if g.total in present and all(p in present for p in g.parts)]


def _aggregate(df, selection: Selection, ruleset: RuleSet, kinds: dict[str, str]) -> Content:
    shared = selection.shared
    level_cols = set(ruleset.level_columns(selection.level))
    keys = [d for d in shared if kinds[d.column] == "round" or d.column in level_cols]
    key_names = [d.column for d in keys]
    if not key_names:  # no area column may be shared: one row for the whole round
        df = df.assign(**{_WHOLE: "all"})
    grouped = df.groupby(key_names or [_WHOLE], dropna=False, sort=True)
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
    content.groups = groups + _additive_groups(ruleset, set(frame.columns))
    return content


def _suppress(content: Content, selection: Selection, ruleset: RuleSet, kinds) -> None:
    frame = content.frame
    threshold = ruleset.small_cells.threshold
    aggregated = selection.level != SITE
    count_cols = [
        c.name for c in content.columns
        if c.name == SITES or kinds.get(c.source) == "count"
        or (aggregated and kinds.get(c.source) in ("categorical", "flag"))
    ]
    exact = set(selection.exact_counts)
    hidden = pd.DataFrame(False, index=frame.index, columns=count_cols)
    for c in count_cols:
        values = pd.to_numeric(frame[c], errors="coerce")
        if c not in exact:
            hidden[c] = values.between(1, threshold).fillna(False).to_numpy()
    primary = hidden.copy()
    missing = frame[count_cols].isna()

    # Secondary: no group may show exactly one blank cell it could be recomputed from.
    groups = [(t, p) for t, p in content.groups if t in hidden and all(x in hidden for x in p)]
    changed = True
    while changed:
        changed = False
        for total, group_parts in groups:
            members = [total, *group_parts]
            blank = hidden[members] | missing[members]
            lonely = (blank.sum(axis=1) == 1) & hidden[members].any(axis=1)
            if not lonely.any():
                continue
            for i in frame.index[lonely]:
                if not hidden.at[i, total]:
                    hidden.at[i, total] = True
                else:  # the total is the hidden one: hide the smallest visible part too
                    visible = [p for p in group_parts
                               if not hidden.at[i, p] and not missing.at[i, p]]
                    smallest = min(visible, key=lambda p: (frame.at[i, p], p))
                    hidden.at[i, smallest] = True
            changed = True

    for c in count_cols:
        n = int(hidden[c].sum())
        if n:
            frame[c] = frame[c].mask(hidden[c].to_numpy())
            content.suppressed[c] = n
            n_primary = int(primary[c].sum())
            source = next(o.source for o in content.columns if o.name == c) or SITES
            content.notes[source].append(
                f"{c}: suppressed {n} cell(s) ({n_primary} of 1..{threshold}, "
                f"{n - n_primary} secondary)")
        elif c in exact:
            content.notes[c].append("exact counts by agreement (no small-cell suppression)")



def explain(selection: Selection, content: Content | None = None) -> list[dict]:
    """One entry per source column: what happened to it and which rule decided. No values."""
    entries = []
    for d in selection.decisions:
        notes = list(d.notes) + (list(content.notes.get(d.column, [])) if content else [])
        actions = []
        if d.shared:
            actions = [a for a in ("escalated", "aggregated", "suppressed", "redacted")
                       if any(a in n for n in notes)] or ["shared"]
        entries.append({
            "column": d.column,
            "decision": "shared" if d.shared else "dropped",
            "actions": actions or ["dropped"],
            "classification": d.classification.value,
            "reason": d.reason,
            "rule": d.rule,
            "notes": notes,
        })
    if content is not None and content.notes.get(SITES):
        entries.append({"column": SITES, "decision": "shared", "actions": ["suppressed"],
                        "classification": "public", "reason": "computed by aggregation",
                        "rule": "aggregation", "notes": content.notes[SITES]})
    return entries


def explanation_lines(entries: list[dict]) -> list[str]:
    """The explanation for a task log: one line per source column."""
    lines = []
    for e in entries:
        details = [e["classification"]]
        if e["reason"] != "shared":
            details.append(e["reason"])
        details += e["notes"]
        lines.append(f"{e['column']}: {'/'.join(e['actions'])} ({'; '.join(details)}) "
                     f"[{e['rule']}]")
    return lines
