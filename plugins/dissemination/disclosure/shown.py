"""What a delivered table showed, kept so that a later version of its round is judged with it.

A round is delivered twice to many organisations: raw (partial, medium path) and cleaned
(monthly). Where cleaning left values as they were, the organisation can difference one table
against the other, so the cleaned tables are protected with the partial ones held as delivered
(``disclosure.Delivered``). Those blanks came from a joint suppression that cannot be re-run
later, so each package keeps, in the ledger, what rebuilds its table from the round
(level, columns in order, exact counts, a field focal point's areas) and where its blanks are
(a bit per cell of each count column): no value of the round.

Rebuilt, a table is checked against the delivery's content hash (the SHA-256 of the CSV the
organisation received): a round exported again since, a policy whose contract now reads it
otherwise, or a tampered record all fail that check, and the organisation's cleaned packages
are then withheld rather than judged against a table it never saw.

A round is often exported again under the same id (a count corrected within the urgent
window, a cleaned round republished) and delivered again, and the survey database keeps only
its newest export. So every package keeps what it shows, and the export it was made from is
kept too (``version``: the SHA-256 of the staged round, kept by the package task beyond its
run): a table is rebuilt from its own export, and a round's packages are judged with every
table the organisation holds of it and of its partial version, from any export, agreement and
run.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..classification import Classification, Urgency
from ..classify.sensitivity import ColumnDecision, Selection
from ..package.archive import write_csv
from ..policy import RuleSet
from .content import Content
from .engine import rebuild
from .versions import Delivered

PARTIAL, CLEANED = "-partial", "-cleaned"


def partial_of(round_id: str) -> str | None:
    """The partial round a cleaned round was cleaned from (round ids differ by status only)."""
    return round_id[: -len(CLEANED)] + PARTIAL if round_id.endswith(CLEANED) else None


@dataclass(frozen=True)
class Shown:
    """One delivered table, as the ledger keeps it (``to_json``/``from_json``)."""

    content_sha256: str
    round_id: str
    level: str
    columns: tuple[tuple[str, str, str], ...]  # shared source columns: (name, class, rule)
    exact_counts: tuple[str, ...]
    areas: dict[str, tuple[str, ...]]  # a field focal point's areas ({}: the whole round)
    blanks: dict[str, np.ndarray]  # output count column -> True where the cell was blank
    # The staged export it was made from, as kept (its SHA-256); "": kept before exports were
    version: str = ""
    held: tuple[str, ...] = ()  # site keys the registry held out of it (``registry.Review``)

    def to_json(self) -> str:
        return json.dumps({
            "content_sha256": self.content_sha256, "round_id": self.round_id,
            "level": self.level, "columns": self.columns, "exact_counts": self.exact_counts,
            "areas": self.areas,
            "blanks": {c: [len(m), base64.b64encode(zlib.compress(np.packbits(m).tobytes()))
                           .decode()] for c, m in self.blanks.items()},
            **({"version": self.version} if self.version else {}),
            **({"held": self.held} if self.held else {}),
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Shown:
        data = json.loads(text)
        return cls(
            data["content_sha256"], data["round_id"], data["level"],
            tuple(tuple(c) for c in data["columns"]), tuple(data["exact_counts"]),
            {k: tuple(v) for k, v in data["areas"].items()},
            {c: np.unpackbits(np.frombuffer(zlib.decompress(base64.b64decode(bits)),
                                            dtype=np.uint8), count=n).astype(bool)
             for c, (n, bits) in data["blanks"].items()}, data.get("version", ""),
            tuple(data.get("held", ())))

    def selection(self, agreement_id: str) -> Selection:
        return Selection(agreement_id, Urgency.MEDIUM, tuple(
            ColumnDecision(name, Classification(classification), rule, shared=True)
            for name, classification, rule in self.columns), self.level, self.exact_counts)


def shown(content: Content, selection: Selection, areas: dict, round_id: str,
          content_sha256: str, version: str = "", held: tuple[str, ...] = ()) -> Shown:
    """What a package about to be delivered shows, for the ledger (``version``: the kept
    export it is made from; ``held``: the sites held out of it)."""
    return Shown(content_sha256, round_id, selection.level,
                 tuple((d.column, d.classification.value, d.rule) for d in selection.shared),
                 tuple(selection.exact_counts), {k: tuple(v) for k, v in areas.items()},
                 {c: content.frame[c].isna().to_numpy() for c in content.frame.columns
                  if pd.api.types.is_numeric_dtype(content.frame[c])}, version, tuple(held))


class NotAsDelivered(ValueError):
    """A kept table does not rebuild, from its round as it is now, into what was delivered."""


def delivered(kept: Shown, round_df: pd.DataFrame, ruleset: RuleSet,
              rows_of: Callable[[pd.DataFrame, dict], np.ndarray | None]) -> Delivered:
    """The table as the organisation holds it, rebuilt and checked against its content hash."""
    selection = kept.selection("(delivered)")
    rows = rows_of(round_df, kept.areas)
    if kept.held:  # as it was delivered: without the sites held out for review
        shipped = ~round_df[ruleset.site_key].astype("string").isin(kept.held).to_numpy()
        rows = shipped if rows is None else rows & shipped
    try:
        content = rebuild(round_df, selection, rows, ruleset, kept.blanks)
    except (KeyError, ValueError) as exc:
        raise NotAsDelivered(f"{kept.round_id} at {kept.level}: does not rebuild "
                             f"({type(exc).__name__})") from None
    if _csv_sha256(content.frame) != kept.content_sha256:
        raise NotAsDelivered(f"{kept.round_id} at {kept.level}: rebuilt from the round as it is "
                             f"now, it is not the table delivered (content "
                             f"{kept.content_sha256[:12]}): exported again since, or read "
                             "otherwise by today's contract")
    return Delivered(round_df, selection, rows, kept.blanks)


def _csv_sha256(frame: pd.DataFrame) -> str:
    """The content hash a package gives a table: its CSV as ``package.write_csv`` writes it."""
    out = io.BytesIO()
    write_csv(frame, out)
    return hashlib.sha256(out.getvalue()).hexdigest()
