"""The survey source: rounds and their site tables in a SQL database (SQLAlchemy).

Two tables: ``rounds`` (one row per round: id, country, status, collection time) and
``site_assessments`` (one row per site and round). SQLite is the embedded default; any database
SQLAlchemy reaches works the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

from .errors import PermanentError


@dataclass(frozen=True)
class RoundMeta:
    """What identifies a round in the survey source."""

    round_id: str
    country: str
    status: str  # "partial" (raw, not yet cleaned) or "cleaned"
    collected_at: datetime

    def to_xcom(self) -> dict:
        return {"round_id": self.round_id, "country": self.country, "status": self.status,
                "collected_at": self.collected_at.isoformat()}

    @classmethod
    def from_xcom(cls, data: dict) -> RoundMeta:
        return cls(data["round_id"], data["country"], data["status"],
                   datetime.fromisoformat(data["collected_at"]))


metadata = sa.MetaData()
rounds = sa.Table(
    "rounds",
    metadata,
    sa.Column("round_id", sa.String(64), primary_key=True),
    sa.Column("country", sa.String(3), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
    # When this version of the round was written: the intake's watermark.
    sa.Column("exported_at", sa.DateTime(timezone=True), nullable=False, index=True),
)
SITE_TABLE = "site_assessments"


class RoundNotFound(PermanentError, LookupError):
    pass


def write_round(engine: sa.Engine, meta: RoundMeta, df: pd.DataFrame,
                exported_at: datetime | None = None) -> None:
    """Store a round (replacing an earlier export of the same round id)."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(rounds.delete().where(rounds.c.round_id == meta.round_id))
        conn.execute(
            rounds.insert().values(
                round_id=meta.round_id,
                country=meta.country,
                status=meta.status,
                collected_at=meta.collected_at,
                exported_at=exported_at or datetime.now(UTC),
            )
        )
        if sa.inspect(conn).has_table(SITE_TABLE):
            conn.execute(sa.text(f"DELETE FROM {SITE_TABLE} WHERE round_id = :r"),
                         {"r": meta.round_id})
        df.to_sql(SITE_TABLE, conn, if_exists="append", index=False)


def latest_round_id(engine: sa.Engine, country: str, status: str) -> str:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(rounds.c.round_id)
            .where(rounds.c.country == country, rounds.c.status == status)
            .order_by(rounds.c.collected_at.desc())
            .limit(1)
        ).first()
    if row is None:
        raise RoundNotFound(f"no {status} round for country {country} in {engine.url!r}")
    return row.round_id


def round_ids_between(
    engine: sa.Engine, status: str, start: datetime, end: datetime
) -> list[str]:
    """Rounds of a status collected in [start, end): what a monthly run shares."""
    metadata.create_all(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(rounds.c.round_id)
            .where(rounds.c.status == status, rounds.c.collected_at >= start,
                   rounds.c.collected_at < end)
            .order_by(rounds.c.collected_at, rounds.c.round_id)
        ).all()
    return [r.round_id for r in rows]


def exported_since(engine: sa.Engine, watermark: datetime | None) -> list[tuple[str, datetime]]:
    """(round id, exported_at) of every round written after the watermark, oldest first."""
    metadata.create_all(engine)
    query = sa.select(rounds.c.round_id, rounds.c.exported_at).order_by(rounds.c.exported_at)
    if watermark is not None:
        query = query.where(rounds.c.exported_at > watermark)
    with engine.connect() as conn:
        return [(r.round_id, _utc(r.exported_at)) for r in conn.execute(query)]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def previous_round_id(engine: sa.Engine, meta: RoundMeta) -> str | None:
    """The round of the same country and status collected just before this one."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(rounds.c.round_id)
            .where(rounds.c.country == meta.country, rounds.c.status == meta.status,
                   rounds.c.collected_at < meta.collected_at)
            .order_by(rounds.c.collected_at.desc()).limit(1)).first()
    return row.round_id if row else None


def read_meta(engine: sa.Engine, round_id: str) -> RoundMeta:
    """A round's identity without its data."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(rounds).where(rounds.c.round_id == round_id)).first()
    if row is None:
        raise RoundNotFound(f"round {round_id!r} not found in {engine.url!r}")
    return _meta(row)


def _meta(row) -> RoundMeta:
    collected_at = row.collected_at
    if collected_at.tzinfo is None:  # SQLite drops the offset; we only ever store UTC
        collected_at = collected_at.replace(tzinfo=UTC)
    return RoundMeta(row.round_id, row.country, row.status, collected_at)


def read_round(
    engine: sa.Engine, round_id: str, country: str | None = None
) -> tuple[RoundMeta, pd.DataFrame]:
    """Read one round once; strings come back as pyarrow-backed columns (less memory, faster)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(rounds).where(rounds.c.round_id == round_id)).first()
        if row is None:
            raise RoundNotFound(f"round {round_id!r} not found in {engine.url!r}")
        if country is not None and row.country != country:
            raise RoundNotFound(f"round {round_id!r} belongs to {row.country}, not {country}")
        df = pd.read_sql(
            sa.text(f"SELECT * FROM {SITE_TABLE} WHERE round_id = :r"),
            conn,
            params={"r": round_id},
            dtype_backend="pyarrow",
        )
    collected_at = row.collected_at
    if collected_at.tzinfo is None:  # SQLite drops the offset; we only ever store UTC
        collected_at = collected_at.replace(tzinfo=UTC)
    meta = RoundMeta(row.round_id, row.country, row.status, collected_at)
    return meta, df

