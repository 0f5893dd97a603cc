"""Fresh rounds: from the survey database (a watermark) and from a file drop (CSV/XLSX).

Each round version is registered once by content hash in the ledger database, so a round that was
already processed is not processed again, and a corrected re-export of a round (same id, other
content) is recognised as such and routed again, explicitly, as a correction.

File drop: files named ``<ISO3>-R<nnn>-<partial|cleaned>.csv`` (or ``.xlsx``) with the round's
columns. Each is validated for shape, written to the survey database (one way into the pipeline),
then moved to ``processed/``; a file that cannot be read goes to ``rejected/`` with a ``.error``
file naming the problem, and nothing of it is used.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from .errors import PermanentError
from .ledger import metadata as ledger_metadata
from .source import RoundMeta, exported_since, read_round, write_round

FILE_NAME = re.compile(r"^(?P<country>[A-Z]{3})-R(?P<number>\d{1,4})-(?P<status>partial|cleaned)"
                       r"\.(?P<ext>csv|xlsx)$")

intake_log = sa.Table(
    "intake",
    ledger_metadata,
    sa.Column("round_id", sa.String(64), primary_key=True),
    sa.Column("content_sha256", sa.String(64), primary_key=True),
    sa.Column("country", sa.String(3), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("exported_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)


class DropFileRejected(PermanentError, ValueError):
    pass


@dataclass(frozen=True)
class NewRound:
    round_id: str
    country: str
    status: str
    content_sha256: str
    version: int  # 1 for a new round; 2, 3... for corrected re-exports
    replaces: str = ""  # content hash of the version it corrects

    @property
    def corrected(self) -> bool:
        return self.version > 1


def content_hash(df: pd.DataFrame) -> str:
    """Order-independent hash of a round's content (columns and rows)."""
    ordered = df[sorted(df.columns)]
    ordered = ordered.sort_values(list(ordered.columns)).reset_index(drop=True)
    h = hashlib.sha256(",".join(ordered.columns).encode())
    h.update(pd.util.hash_pandas_object(ordered.astype("string"), index=False).to_numpy()
             .tobytes())
    return h.hexdigest()


def import_drop(folder: Path, survey: sa.Engine, now: datetime) -> list[str]:
    """Move every readable file of the drop folder into the survey database."""
    folder = Path(folder)
    imported = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            meta, df = read_drop_file(path)
        except DropFileRejected as exc:
            _move(path, folder / "rejected")
            (folder / "rejected" / f"{path.name}.error").write_text(f"{exc}\n")
            print(f"rejected {path.name}: {exc}")
            continue
        write_round(survey, meta, df, exported_at=now)
        _move(path, folder / "processed")
        imported.append(meta.round_id)
    return imported


def read_drop_file(path: Path) -> tuple[RoundMeta, pd.DataFrame]:
    match = FILE_NAME.match(path.name)
    if match is None:
        raise DropFileRejected(f"{path.name}: name must look like NGA-R004-partial.csv or "
                               "SSD-R012-cleaned.xlsx")
    try:
        if match["ext"] == "csv":
            df = pd.read_csv(path, dtype_backend="pyarrow")
        else:
            df = pd.read_excel(path, engine="openpyxl", dtype_backend="pyarrow")
    except Exception as exc:  # pandas raises many types for a malformed file
        raise DropFileRejected(f"{path.name}: cannot be read ({type(exc).__name__}: {exc})") \
            from None
    round_id = f"{match['country']}-R{int(match['number']):03d}-{match['status']}"
    for column in ("site_id", "collected_on"):
        if column not in df.columns:
            raise DropFileRejected(f"{path.name}: column {column!r} missing")
    dates = pd.to_datetime(df["collected_on"], errors="coerce")
    if dates.isna().all():
        raise DropFileRejected(f"{path.name}: column 'collected_on' has no valid date")
    # The window of an urgent delivery runs from the first day of collection: conservative.
    collected_at = datetime.combine(dates.min().date(), time(0, 0), tzinfo=UTC)
    df["round_id"] = round_id
    return RoundMeta(round_id, match["country"], match["status"], collected_at), df


def _move(path: Path, target: Path) -> None:
    target.mkdir(exist_ok=True)
    shutil.move(str(path), target / path.name)


def new_rounds(survey: sa.Engine, ledger: sa.Engine, now: datetime) -> list[NewRound]:
    """Rounds exported since the last intake whose content is new; registers them."""
    ledger_metadata.create_all(ledger)
    with ledger.connect() as conn:
        watermark = conn.execute(sa.select(sa.func.max(intake_log.c.exported_at))).scalar()
    watermark = watermark.replace(tzinfo=UTC) if watermark and watermark.tzinfo is None \
        else watermark
    found = []
    for round_id, exported_at in exported_since(survey, watermark):
        meta, df = read_round(survey, round_id)
        digest = content_hash(df)
        with ledger.begin() as conn:
            versions = conn.execute(
                sa.select(intake_log.c.content_sha256, intake_log.c.version)
                .where(intake_log.c.round_id == round_id)
                .order_by(intake_log.c.version.desc())).all()
            if any(v.content_sha256 == digest for v in versions):
                # Same content exported again: nothing new; only the watermark moves.
                conn.execute(intake_log.update().where(
                    intake_log.c.round_id == round_id, intake_log.c.content_sha256 == digest)
                    .values(exported_at=exported_at))
                continue
            version = versions[0].version + 1 if versions else 1
            conn.execute(intake_log.insert().values(
                round_id=round_id, content_sha256=digest, country=meta.country,
                status=meta.status, exported_at=exported_at, seen_at=now, version=version))
        found.append(NewRound(round_id, meta.country, meta.status, digest, version,
                              versions[0].content_sha256 if versions else ""))
    return found
