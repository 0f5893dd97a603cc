"""include/intake.yaml (optional): how large a dropped file may be before it is refused unread.

A file drop is open to whatever a field office exports; one oversized or zip-bombed file must
not exhaust the worker that also reads every other file of the drop.
"""

from __future__ import annotations

from pydantic import Field

from .base import PolicyModel

MB = 1024 * 1024


class IntakeLimits(PolicyModel):
    max_bytes: int = Field(default=512 * MB, ge=1)  # the file as dropped
    max_rows: int = Field(default=2_000_000, ge=1)  # data rows (sites)
    max_columns: int = Field(default=500, ge=1)
    # XLSX is a zip: what it unpacks to, before anything parses it. Sized for real exports
    # (about 50 bytes of XML a cell: some 2.5 million cells, half a minute of parsing); a
    # larger one is refused at once rather than parsed for minutes.
    max_xlsx_uncompressed_bytes: int = Field(default=128 * MB, ge=1)
