"""Staging on disk: paths built from checked round ids only, so they stay in their folder."""

from __future__ import annotations

from pathlib import Path

from .ids import check_round_id


def staged_round_path(folder: Path, round_id: str) -> Path:
    """Where a round is staged: built from a checked round id only, so it stays in ``folder``."""
    return Path(folder) / f"{check_round_id(round_id, 'staging')}.parquet"
