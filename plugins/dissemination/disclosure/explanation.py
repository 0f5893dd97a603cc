"""Explanation: what happened to each column, and which rule decided, never a value."""

from __future__ import annotations

from ..classify.sensitivity import Selection
from .content import SITES, Content


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
