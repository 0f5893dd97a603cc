"""Stage a round: read it once, conform it, and keep no Secret column on disk."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..classify.sensitivity import (
    active_relational,
)
from ..disclosure.shown import NotAsDelivered
from ..ids import check_round_id
from ..intake import headers, reading, staging
from ..intake.contract import Conformer, ContractBroken
from ..intake.source import RoundMeta
from ..policy import Policy
from ..policy.lookup import ruleset_for


def pull_round(engine, round_id: str, policy: Policy, path: Path,
               country: str | None = None) -> dict:
    """Read a round from the survey database and stage it (``stage_round``), reading only the
    columns its contract reads. Headers (and an HXL row) are matched on the round's first row,
    read whole; the parts after it hold no Secret column (at a million sites a third of the
    read's time and 80 MB)."""
    meta, head = reading.round_head(engine, round_id, country)
    conformer = Conformer(ruleset_for(policy, meta.country), first_row=1)
    columns = conformer.match(head)
    del head
    meta, parts = reading.read_round_parts(engine, round_id, country, columns=columns)
    return stage_round(meta, parts, policy, path, conformer)


#: Reads an export of a round for ``tables_held``: (round id, kept version) -> the round.
ReadExport = Callable[[str, str], pd.DataFrame]


def export_reader(engine, policy: Policy, folder: Path,
                  read_kept: Callable[[str, str], Path]) -> ReadExport:
    """Reads the export a delivered table was made from: a kept one by its version
    (``read_kept``: its staged file, checked), or, for tables kept without one (version ""),
    the survey database's export as a pull reads it (its contract checked)."""
    def read(round_id: str, version: str) -> pd.DataFrame:
        if version:
            try:
                return staging.read_staged(read_kept(round_id, version))
            except (FileNotFoundError, ValueError) as exc:
                raise NotAsDelivered(f"{round_id}: the export its tables were made from "
                                     f"cannot be read: {exc}") from None
        path = staging.staged_round_path(folder, round_id)
        try:
            pull_round(engine, round_id, policy, path)
        except ContractBroken as exc:
            raise NotAsDelivered(f"{round_id} no longer keeps today's contract "
                                 f"({len(exc.violations)} violation(s))") from None
        return staging.read_staged(path)
    return read


def stage_round(meta: RoundMeta, df: pd.DataFrame | Iterable[pd.DataFrame], policy: Policy,
                path: Path, conformer: Conformer | None = None) -> dict:
    """Conform the round to its contract and stage it for the next tasks (``staging.write_staged``).

    Every value is checked first (``contract.Conformer``): a round that breaks its contract
    raises ``ContractBroken`` and nothing of it is written. Secret columns are dropped unread;
    only their names (a position if no rule covers them: ``headers``) travel on, for packages.

    ``df``: the round as read, whole or in parts (``reading.read_round_parts``): each part as
    read is freed once conformed (a million-site round as read is as large again as the
    conformed one), as long as the caller keeps no reference to it. ``conformer``: one that
    matched the round's headers before it was read (``pull_round``).
    """
    check_round_id(meta.round_id, "staging")
    ruleset = ruleset_for(policy, meta.country)
    meta = replace(meta, dropped=tuple(headers.withheld(meta.dropped, ruleset)))
    conformer = conformer or Conformer(ruleset, first_row=1)
    parts, active, rows = [], set(), 0
    for raw in [df] if isinstance(df, pd.DataFrame) else df:
        rows += len(raw)
        parts.append(conformer.part(raw))
        del raw
        active |= active_relational(parts[-1], ruleset)
    del df
    conformed = conformer.result().raise_if_broken(
        f"round {meta.round_id} ({meta.country}; rows as read from the survey database)")
    staging.write_staged(parts, path)
    return {**meta.to_xcom(), "path": str(path), "columns": [*conformed.columns, *meta.dropped],
            "rows": rows, "active_relational": sorted(active)}
