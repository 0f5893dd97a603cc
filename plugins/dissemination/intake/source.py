"""The survey source: rounds and their site tables in a SQL database (SQLAlchemy).

Two tables: ``rounds`` (one row per round: id, country, status, collection time) and
``site_assessments`` (one row per site and round, partitioned by a ``round_id`` column; the other
columns are the export's, under whatever headers it uses: the contract maps them). Rounds whose
columns differ (schema drift) live side by side: a new column is added to the table, and
``round_columns`` records which columns are each round's own, including the names (never the
values) of the Secret columns the file drop dropped, so packages can still explain them. A
table written by another system (no ``round_columns``) is read whole. SQLite is the
embedded default; any database SQLAlchemy reaches works the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

from ..errors import PermanentError
from ..ids import check_round_id


@dataclass(frozen=True)
class RoundMeta:
    """What identifies a round in the survey source."""

    round_id: str
    country: str
    status: str  # "partial" (raw, not yet cleaned) or "cleaned"
    collected_at: datetime
    # Columns of the export dropped unread at intake (Secret, or covered by no rule): names only.
    dropped: tuple[str, ...] = ()

    def to_xcom(self) -> dict:
        return {"round_id": self.round_id, "country": self.country, "status": self.status,
                "collected_at": self.collected_at.isoformat(), "dropped": list(self.dropped)}

    @classmethod
    def from_xcom(cls, data: dict) -> RoundMeta:
        return cls(data["round_id"], data["country"], data["status"],
                   datetime.fromisoformat(data["collected_at"]), tuple(data.get("dropped", ())))


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
round_columns = sa.Table(
    "round_columns",
    metadata,
    sa.Column("round_id", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("stored", sa.Boolean, nullable=False),  # false: dropped unread at intake
)
SITE_TABLE = "site_assessments"
ROUND_COLUMN = "round_id"  # the partition column of SITE_TABLE
ROUND_INDEX = f"ix_{SITE_TABLE}_{ROUND_COLUMN}"


class RoundNotFound(PermanentError, LookupError):
    pass


class RoundNotWritten(PermanentError, RuntimeError):
    """The survey database refused a round's rows (a constraint, a type): a retry fails alike."""


class SurveyDatabaseError(RuntimeError):
    """Any other database failure while storing a round (retried)."""


_SQLITE_CONSTRAINT = re.compile(r"(CHECK|UNIQUE|NOT NULL|FOREIGN KEY) constraint failed: "
                                r"([\w.]+(?:, [\w.]+)*)")
_REFUSED = (sa.exc.IntegrityError, sa.exc.DataError)  # the row's fault, not the connection's


def _refusal(exc: sa.exc.StatementError) -> str:
    """A database error by kind and names only: its text can quote the row (PostgreSQL's
    DETAIL, SQLAlchemy's bound parameters), so it is never shown."""
    orig = exc.orig
    said = [f"{type(orig).__module__}.{type(orig).__qualname__}"]
    diag = getattr(orig, "diag", None)  # psycopg: names, apart from the message
    for label, attr in (("constraint", "constraint_name"), ("column", "column_name")):
        if name := getattr(diag, attr, None):
            said.append(f"{label} {name}")
    if code := getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None):
        said.append(f"SQLSTATE {code}")
    if known := _SQLITE_CONSTRAINT.fullmatch(str(orig)):  # SQLite's own names no value
        said.append(f"{known[1]} constraint {known[2]}")
    return ", ".join(said) + "; the database's message is withheld: it can quote the row"


def write_round(engine: sa.Engine, meta: RoundMeta, df: pd.DataFrame,
                exported_at: datetime | None = None) -> None:
    """Store a round (replacing an earlier export of the same round id), with the names of the
    columns dropped before it reached here (``meta.dropped``)."""
    check_round_id(meta.round_id, "round to store in the survey database")
    df = df.assign(**{ROUND_COLUMN: meta.round_id})
    error: Exception | None = None
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            _replace_round(conn, meta, df, exported_at or datetime.now(UTC))
    except _REFUSED as exc:
        error = RoundNotWritten(f"the survey database refused round {meta.round_id}: "
                                f"{getattr(exc, 'refused_at', '')}{_refusal(exc)}")
    except sa.exc.StatementError as exc:  # DBAPIError too; either can quote the parameters
        error = SurveyDatabaseError(f"storing round {meta.round_id}: {_refusal(exc)}")
    if error is not None:
        raise error  # outside the except: not even chained to the database's message


def _replace_round(conn: sa.Connection, meta: RoundMeta, df: pd.DataFrame,
                   exported_at: datetime) -> None:
    conn.execute(round_columns.delete().where(round_columns.c.round_id == meta.round_id))
    names = [(c, True) for c in df.columns if c != ROUND_COLUMN]
    conn.execute(round_columns.insert(), [
        {"round_id": meta.round_id, "position": i, "name": name, "stored": stored}
        for i, (name, stored) in enumerate([*names, *((d, False) for d in meta.dropped)])
    ])
    conn.execute(rounds.delete().where(rounds.c.round_id == meta.round_id))
    conn.execute(rounds.insert().values(
        round_id=meta.round_id, country=meta.country, status=meta.status,
        collected_at=meta.collected_at, exported_at=exported_at))
    if sa.inspect(conn).has_table(SITE_TABLE):
        conn.execute(sa.text(f"DELETE FROM {SITE_TABLE} WHERE {ROUND_COLUMN} = :r"),
                     {"r": meta.round_id})
        _add_new_columns(conn, df)
    try:
        with conn.begin_nested():
            _insert(conn, df)
    except _REFUSED as exc:
        row = _first_refused_row(conn, df)
        exc.refused_at = (  # where, for write_round's message; the error itself is never shown
            f"table {SITE_TABLE}, data row {row} of {len(df)} (1 = the first site): "
            if row else f"table {SITE_TABLE}: ")
        raise
    # Rounds are read (and replaced) by id: without an index every read scans every round.
    conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS {ROUND_INDEX} "
                         f"ON {SITE_TABLE} ({ROUND_COLUMN})"))


def _insert(conn: sa.Connection, rows: pd.DataFrame) -> None:
    """Append to the site table; a failure surfaces as SQLAlchemy's own error, not as pandas'
    wrapper (whose text quotes the statement and the values)."""
    try:
        rows.to_sql(SITE_TABLE, conn, if_exists="append", index=False)
    except pd.errors.DatabaseError as exc:
        if isinstance(exc.__cause__, sa.exc.StatementError):
            raise exc.__cause__ from None
        raise SurveyDatabaseError("appending to the site table: pandas.errors.DatabaseError; "
                                  "its message is withheld: it can quote the rows") from None


def _first_refused_row(conn: sa.Connection, df: pd.DataFrame) -> int | None:
    """The first row the database refuses (1-based), found by inserting halves in savepoints
    that the caller's rollback undoes; None if no single row is refused."""
    lo, hi = 0, len(df)  # rows before lo are in; inserting rows lo..hi-1 fails

    def accepted(rows: pd.DataFrame) -> bool:
        try:
            with conn.begin_nested():
                _insert(conn, rows)
        except _REFUSED:
            return False
        return True

    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if accepted(df.iloc[lo:mid]) else (lo, mid)
    return lo + 1 if hi > lo and not accepted(df.iloc[lo:hi]) else None


def _add_new_columns(conn: sa.Connection, df: pd.DataFrame) -> None:
    """Schema drift: a round with a column earlier rounds lacked adds it to the table."""
    existing = {c["name"] for c in sa.inspect(conn).get_columns(SITE_TABLE)}
    quote = conn.dialect.identifier_preparer.quote
    for column in df.columns:
        if column in existing:
            continue
        kind = df[column].dtype
        sql_type = (sa.BigInteger() if pd.api.types.is_integer_dtype(kind)
                    else sa.Float() if pd.api.types.is_float_dtype(kind) else sa.Text())
        conn.execute(sa.text(f"ALTER TABLE {SITE_TABLE} ADD COLUMN {quote(column)} "
                             f"{sql_type.compile(dialect=conn.dialect)}"))


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
    return _stored_id(engine, row.round_id)


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
    return [_stored_id(engine, r.round_id) for r in rows]


def exported_since(engine: sa.Engine, watermark: datetime | None) -> list[tuple[str, datetime]]:
    """(round id, exported_at) of every round written after the watermark, oldest first."""
    metadata.create_all(engine)
    query = sa.select(rounds.c.round_id, rounds.c.exported_at).order_by(rounds.c.exported_at)
    if watermark is not None:
        query = query.where(rounds.c.exported_at > watermark)
    with engine.connect() as conn:
        return [(_stored_id(engine, r.round_id), _utc(r.exported_at))
                for r in conn.execute(query)]


def _stored_id(engine: sa.Engine, value: object) -> str:
    """A round id read from the database is input too: it names files and log lines."""
    return check_round_id(value, f"survey database {engine.url!r}, table {rounds.name}")


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
    return _stored_id(engine, row.round_id) if row else None


def read_meta(engine: sa.Engine, round_id: str) -> RoundMeta:
    """A round's identity without its data."""
    check_round_id(round_id, "round requested")
    with engine.connect() as conn:
        row = conn.execute(sa.select(rounds).where(rounds.c.round_id == round_id)).first()
    if row is None:
        raise RoundNotFound(f"round {round_id!r} not found in {engine.url!r}")
    return meta_of_row(row)


def meta_of_row(row, dropped: tuple[str, ...] = ()) -> RoundMeta:
    """A round's metadata from its row in the rounds table, its collection time in UTC."""
    collected_at = row.collected_at
    if collected_at.tzinfo is None:  # SQLite drops the offset; we only ever store UTC
        collected_at = collected_at.replace(tzinfo=UTC)
    return RoundMeta(row.round_id, row.country, row.status, collected_at, dropped)
