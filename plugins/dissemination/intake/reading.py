"""Reading a round from the survey source: whole, its first row, or in parts on threads.

SQLite is read through ADBC straight into Arrow, PostgreSQL through ADBC's streaming COPY, any
other database through SQLAlchemy; every path gives the frame ``pandas.read_sql`` would. A large
round is read in parts of about ``PART_ROWS`` rows (``read_round_parts``), each on its own
connection (``read_threads``), so a round never needs its whole size in memory twice.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from ..ids import check_round_id
from .contract import is_hxl_row
from .source import (
    ROUND_COLUMN,
    SITE_TABLE,
    RoundMeta,
    RoundNotFound,
    SurveyDatabaseError,
    meta_of_row,
    metadata,
    round_columns,
    rounds,
)


def read_round(
    engine: sa.Engine, round_id: str, country: str | None = None
) -> tuple[RoundMeta, pd.DataFrame]:
    """Read one round once, as stored (headers as the export wrote them; ``contract.conform``
    maps them), as pyarrow-backed columns (less memory, faster)."""
    meta, reads = _round_reads(engine, round_id, country, part_rows=None)
    (read,) = reads
    return meta, _hxl_marked(read())


def round_head(engine: sa.Engine, round_id: str, country: str | None = None
               ) -> tuple[RoundMeta, pd.DataFrame]:
    """The round's first row, every column as ``read_round`` names them: what the contract
    matches headers (and an HXL row) on before deciding which columns to read."""
    meta, columns = _described(engine, round_id, country)
    with engine.connect() as conn:
        return meta, _hxl_marked(_first_row(conn, round_id, columns))


def read_round_parts(
    engine: sa.Engine, round_id: str, country: str | None = None,
    columns: list[str] | None = None,
) -> tuple[RoundMeta, Iterator[pd.DataFrame]]:
    """``read_round`` a part at a time: parts of about ``PART_ROWS`` rows in the round's order
    (SQLite; elsewhere the round is one part), the next ones read on threads (one per core)
    while the caller works on this one. A million-site round as read is then never in memory
    whole; each part is typed by its own rows (a count column may be integers in one part and
    text in the next: the contract reads both alike).

    ``columns``: only these (as ``round_head`` names them, in its order); the others are not
    read. An HXL row is then the caller's (``round_head``)."""
    meta, reads = _round_reads(engine, round_id, country, part_rows=PART_ROWS, only=columns)

    def parts() -> Iterator[pd.DataFrame]:
        ahead = read_threads()
        with ThreadPoolExecutor(ahead) as pool:
            pending = deque(pool.submit(read) for read in reads[:ahead])
            for i in range(len(reads)):
                part = pending.popleft().result()
                if i + ahead < len(reads):
                    pending.append(pool.submit(reads[i + ahead]))
                yield _hxl_marked(part) if i == 0 and columns is None else part
                del part

    return meta, parts()


def _hxl_marked(df: pd.DataFrame) -> pd.DataFrame:
    if len(df) and is_hxl_row(df.drop(columns=[ROUND_COLUMN]).iloc[0]):
        # An export loaded as it is, HXL row first: the partition cell is ours, not a hashtag.
        df[ROUND_COLUMN] = df[ROUND_COLUMN].astype(object).mask(df.index == 0, None)
    return df


def _described(engine: sa.Engine, round_id: str, country: str | None
               ) -> tuple[RoundMeta, list[str] | None]:
    """The round's metadata, and the columns a read of its sites selects (None: every column
    of a table another system wrote)."""
    check_round_id(round_id, "round requested")
    metadata.create_all(engine)
    with engine.connect() as conn:
        row = conn.execute(sa.select(rounds).where(rounds.c.round_id == round_id)).first()
        if row is None:
            raise RoundNotFound(f"round {round_id!r} not found in {engine.url!r}")
        if country is not None and row.country != country:
            raise RoundNotFound(f"round {round_id!r} belongs to {row.country}, not {country}")
        recorded = conn.execute(
            sa.select(round_columns.c.name, round_columns.c.stored)
            .where(round_columns.c.round_id == round_id).order_by(round_columns.c.position)).all()
    stored = [name for name, kept in recorded if kept]
    return (meta_of_row(row, tuple(name for name, kept in recorded if not kept)),
            [*stored, ROUND_COLUMN] if stored else None)


def _round_reads(engine: sa.Engine, round_id: str, country: str | None,
                 part_rows: int | None, only: list[str] | None = None
                 ) -> tuple[RoundMeta, list[Callable[[], pd.DataFrame]]]:
    """The round's metadata, and one read per part (``part_rows``; None: one read of the
    whole round), each on a connection of its own; ``only``: of these columns."""
    meta, columns = _described(engine, round_id, country)
    if only is not None:
        columns = list(only)
    with engine.connect() as conn:
        sqlite = _adbc_sqlite(conn, round_id, columns)

    def through_sqlalchemy(span: tuple[int, int] | None = None) -> pd.DataFrame:
        with engine.connect() as conn:
            return _read_sites(conn, round_id, columns, span)

    if sqlite is None:
        return meta, [through_sqlalchemy]
    read, connect = sqlite
    reads, rows = _rowid_ranges(connect, SITE_TABLE, round_id, part_rows)

    def part(spans: list) -> Callable[[], pd.DataFrame]:
        def read_part() -> pd.DataFrame:
            df = _as_read_sql_would(read(spans, rows))
            return df if df is not None else through_sqlalchemy(spans[0] if len(spans) == 1
                                                                else None)
        return read_part

    return meta, [part(spans) for spans in reads]


def _first_row(conn: sa.Connection, round_id: str, columns: list[str] | None) -> pd.DataFrame:
    """The round's first row as a full read would start (SQLite: by rowid; elsewhere the
    table's order, as the full read's)."""
    quote = conn.dialect.identifier_preparer.quote
    what = ", ".join(quote(c) for c in columns) if columns else "*"
    order = " ORDER BY rowid" if conn.dialect.name == "sqlite" else ""
    return pd.read_sql(
        sa.text(f"SELECT {what} FROM {SITE_TABLE} WHERE {ROUND_COLUMN} = :r{order} LIMIT 1"),
        conn, params={"r": round_id}, dtype_backend="pyarrow")


def _read_sites(conn: sa.Connection, round_id: str, columns: list[str] | None,
                span: tuple[int, int] | None = None) -> pd.DataFrame:
    """The round's site rows (``columns``; None: every column of a table another system wrote),
    through ADBC straight into Arrow on PostgreSQL (SQLite: ``_adbc_sqlite``; pandas.read_sql
    builds a Python object per cell: 3.7-5.5x the time and memory at 1M sites, bench/pull.py),
    else through SQLAlchemy (SQLite: the rowids in ``span``, if given). The frame is what
    ``pd.read_sql(..., dtype_backend="pyarrow")`` gives, so the contract sees the same types and
    values either way."""
    table = _arrow_postgresql(conn, round_id, columns) if span is None else None
    if table is not None and (df := _as_read_sql_would(table)) is not None:
        return df
    quote = conn.dialect.identifier_preparer.quote
    what = ", ".join(quote(c) for c in columns) if columns else "*"
    ranged = " AND rowid BETWEEN :a AND :b" if span else ""
    return pd.read_sql(
        sa.text(f"SELECT {what} FROM {SITE_TABLE} WHERE {ROUND_COLUMN} = :r{ranged}"), conn,
        params={"r": round_id, **(dict(zip("ab", span, strict=True)) if span else {})},
        dtype_backend="pyarrow")


def _adbc_sqlite(conn: sa.Connection, round_id: str, columns: list[str] | None):
    """For a SQLite file: (read(rowid spans, rows) -> Arrow table, connect) through ADBC;
    None if ADBC cannot read it (an in-memory database, no site table yet)."""
    url = conn.engine.url
    if conn.dialect.name != "sqlite" or url.database in (None, "", ":memory:") or url.query:
        return None
    declared = {r[1]: r[2] for r in conn.exec_driver_sql(f"PRAGMA table_info({SITE_TABLE})")}
    if not declared:
        return None
    from adbc_driver_sqlite import dbapi

    quote = conn.dialect.identifier_preparer.quote
    names = columns or list(declared)
    # SQLite keeps any value in a column not declared TEXT; ADBC types a column by its
    # first rows. Those columns are read as pandas would read them (see _loose_sqlite).
    loose = [not _sqlite_text_affinity(declared.get(c) or "") for c in names]

    def connect():
        return dbapi.connect(url.database)

    def read(spans: list, rows: int):
        return _loose_sqlite(connect, SITE_TABLE, names, loose, quote, round_id, spans, rows)

    return read, connect


def _arrow_postgresql(conn: sa.Connection, round_id: str, columns: list[str] | None):
    """The site rows as an Arrow table through ADBC, or None (not PostgreSQL, no site table
    yet: SQLAlchemy's path reads or refuses it)."""
    if conn.dialect.name != "postgresql":
        return None
    quote = conn.dialect.identifier_preparer.quote
    # The table the SQLAlchemy session sees (its search_path may come from connect_args,
    # which the URL does not carry): read it by its schema-qualified name.
    schema = conn.execute(sa.text(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(:t)"), {"t": SITE_TABLE}).scalar()
    if schema is None:
        return None
    from adbc_driver_postgresql import dbapi

    what = ", ".join(quote(c) for c in columns) if columns else "*"
    uri = conn.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    sql = (f"SELECT {what} FROM {quote(schema)}.{SITE_TABLE} "
           f"WHERE {ROUND_COLUMN} = current_setting('{_ROUND_SETTING}')")
    return _fetch(lambda: dbapi.connect(uri), sql, round_id, setting=_ROUND_SETTING)


_ROUND_SETTING = "dissemination.round_id"  # PostgreSQL: the round being read, bound (_fetch)
_MISMATCH = re.compile(r"Type mismatch in column (\d+): expected (\w+) but got (\S+)")


def _loose_sqlite(connect, table: str, names: list[str], loose: list[bool], quote,
                  round_id: str, spans: list, rows: int):
    """Read SQLite's loosely typed columns as ``pandas.read_sql`` would, never changing a value:
    integers then reals are reals; any text among numbers makes the column text, each number
    rendered by SQLite (exactly; ADBC's own rendering of a real after text keeps 6 digits).
    ADBC refuses a value unlike the column's first rows (naming the column's position, never
    the value): that column is re-read cast, and so is a loose column that came back as text.

    ``spans``: rowid ranges read at once on threads (``[None]``: the whole round in one query):
    SQLite reads on one core per connection, and ADBC releases the GIL. Each range types its
    columns by its own rows; the ranges agree as one read would (see ``_join``)."""
    casts: dict[int, str] = {}

    def expression(i: int, name: str) -> str:
        column = quote(name)
        if casts.get(i) == "real":
            return (f"CASE typeof({column}) WHEN 'integer' THEN CAST({column} AS REAL) "
                    f"ELSE {column} END AS {column}")
        return f"CAST({column} AS TEXT) AS {column}" if casts.get(i) == "text" else column

    for _ in range(2 * len(names) + 1):  # each pass casts one more column further
        sql = (f"SELECT {', '.join(expression(i, n) for i, n in enumerate(names))} "
               f"FROM {table} WHERE {ROUND_COLUMN} = ?")
        try:
            parts = _fetch_parts(connect, sql, round_id, spans, rows)
        except _Mismatch as exc:
            if exc.position >= len(names) or casts.get(exc.position) == "text":
                column = names[exc.position] if exc.position < len(names) else exc.position
                raise SurveyDatabaseError(f"reading round {round_id}: table {table}, column "
                                          f"{column!r}: {exc.reason}") from None
            casts[exc.position] = "real" if exc.got == "DOUBLE" and exc.position not in casts \
                else "text"
            continue
        result, conflicting = _join(parts)
        text_read = [i for i in range(len(names)) if casts.get(i) != "text" and (
            i in conflicting or loose[i] and any(pa.types.is_string(p.schema.field(i).type)
                                                 for p in parts))]
        if not text_read:
            return result
        casts.update(dict.fromkeys(text_read, "text"))
    raise SurveyDatabaseError(f"reading round {round_id}: table {table}: column types kept "
                              "changing between reads")


#: Below this many rows a round is read in one query; read in parts, its parts are this large.
PART_ROWS = 200_000


def read_threads() -> int:
    """Parts of a large round read at once: one per core this process may use."""
    return len(os.sched_getaffinity(0))


def _rowid_ranges(connect, table: str, round_id: str, part_rows: int | None
                  ) -> tuple[list[list], int]:
    """The reads of a round, each a list of rowid ranges read at once, and the round's number
    of rows. ``part_rows`` None: one read, the round's rowid span cut into one range per core;
    else one read per range of about ``part_rows`` rows. ``[[None]]`` (one query): a small
    round, one core, a table without rowids."""
    from adbc_driver_manager import Error

    try:
        with connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"SELECT min(rowid), max(rowid), count(*) FROM {table} "
                           f"WHERE {ROUND_COLUMN} = ?", (round_id,))
            low, high, rows = cursor.fetchone()
    except Error:  # WITHOUT ROWID: read in one query, as large a batch as can be
        return [[None]], 1 << 30
    cuts = read_threads() if part_rows is None else -(-rows // part_rows)
    if rows < PART_ROWS or low is None or cuts < 2:
        return [[None]], rows
    step = (high - low) // cuts + 1
    spans = [(low + k * step, min(high, low + (k + 1) * step - 1)) for k in range(cuts)]
    return ([spans] if part_rows is None else [[span] for span in spans]), rows


def _fetch_parts(connect, sql: str, round_id: str, spans: list, rows: int) -> list:
    """``sql`` over each rowid range, on threads (in rowid order); a part's error is raised as
    one read's would be. Each part is one ADBC batch: ADBC types a column by its first batch,
    and a column whose first 1,024 cells (its default batch) are empty would be typed as
    integers, refusing the text after them."""
    batch = max(rows, 1024)
    if spans == [None]:
        return [_fetch(connect, sql, round_id, mismatch=True, batch_rows=batch)]
    ranged = f"{sql} AND rowid BETWEEN ? AND ?"
    if len(spans) == 1:
        return [_fetch(connect, ranged, round_id, True, "", spans[0], batch)]
    with ThreadPoolExecutor(len(spans)) as pool:
        futures = [pool.submit(_fetch, connect, ranged, round_id, True, "", span, batch)
                   for span in spans]
        return [future.result() for future in futures]


def _join(parts: list) -> tuple[pa.Table, set[int]]:
    """The parts as one table, typed as one read would type them: a column empty in a part is
    typed by the others (ADBC types an empty column as integers), integers and reals are
    reals; the positions of columns where parts disagree otherwise (text and numbers: read
    again as text, as one read would after its type mismatch)."""
    if len(parts) == 1:
        return parts[0], set()
    columns, conflicting = [], set()
    for i, field in enumerate(parts[0].schema):
        typed = {p.schema.field(i).type for p in parts if p.column(i).null_count < p.num_rows}
        if len(typed) > 1 and not all(pa.types.is_integer(t) or pa.types.is_floating(t)
                                      for t in typed):
            conflicting.add(i)
            typed = {pa.string()}
        kind = (typed.pop() if len(typed) == 1 else pa.float64()) if typed else field.type
        # safe=False: an integer beyond 2**53 becomes the nearest real, as SQLite's own CAST
        # would make it (a safe cast would raise, quoting the value).
        columns.append(pa.chunked_array(
            [c for p in parts for c in p.column(i).cast(kind, safe=False).chunks], kind))
    return pa.table(columns, names=parts[0].column_names), conflicting


class _Mismatch(Exception):
    def __init__(self, position: int, expected: str, got: str):
        self.position, self.got = position, got
        self.reason = f"stored values of types {expected} and {got} (values withheld)"


def _fetch(connect, sql: str, round_id: str, mismatch: bool = False, setting: str = "",
           span: tuple[int, int] | None = None, batch_rows: int = 0):
    """One ADBC query to an Arrow table, the round id bound as its parameter, or first bound
    into the transaction's ``setting`` that the query reads (PostgreSQL: ADBC streams a query
    without parameters through COPY; with one it holds the whole result in libpq, 2.6x the
    memory at 1M sites). A driver's message can quote a value, so only its kind (and SQLSTATE)
    is shown; SQLite's type mismatch, which names a position, is raised apart."""
    from adbc_driver_manager import Error

    error: Exception | None = None
    try:
        with connect() as conn, conn.cursor() as cursor:
            if setting:
                cursor.execute("SELECT set_config($1, $2, true)", (setting, round_id))
                cursor.fetchall()
            if batch_rows:  # SQLite: rows per Arrow batch, and so rows typing each column
                cursor.adbc_statement.set_options(
                    **{"adbc.sqlite.query.batch_rows": str(batch_rows)})
            cursor.execute(sql, None if setting else (round_id, *(span or ())))
            return cursor.fetch_arrow_table()
    except (Error, OSError, pa.ArrowException) as exc:
        if mismatch and (found := _MISMATCH.search(str(exc))):
            error = _Mismatch(int(found[1]), found[2], found[3])
        else:
            code = getattr(exc, "sqlstate", None)
            error = SurveyDatabaseError(
                f"reading round {round_id} through ADBC: {type(exc).__module__}."
                f"{type(exc).__qualname__}{f', SQLSTATE {code}' if code else ''}; the "
                "driver's message is withheld: it can quote the rows")
    raise error  # outside the except: not even chained to the driver's message


def _sqlite_text_affinity(declared: str) -> bool:
    """SQLite's rule: a declared type containing CHAR, CLOB or TEXT (and not INT) stores every
    value as text; any other column keeps integers, reals and text side by side."""
    kind = declared.upper()
    return "INT" not in kind and any(word in kind for word in ("CHAR", "CLOB", "TEXT"))


def _as_read_sql_would(table) -> pd.DataFrame | None:
    """The frame ``pd.read_sql(..., dtype_backend="pyarrow")`` makes of the same rows: integers
    as int64 and reals as double (PostgreSQL's numeric too), dates and JSON as text, a column
    of NULLs only as text, no rows at all as object columns. None for a type it has no rule
    for: the caller reads through pandas instead."""
    if table.num_rows == 0:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in table.column_names})
    try:  # a value a cast cannot take (an overflow): pandas reads it, never this message
        columns = [_as_read_sql_column(column) for column in table.columns]
    except pa.ArrowInvalid:
        return None
    if any(column is None for column in columns):
        return None
    return pa.table(columns, names=table.column_names).to_pandas(types_mapper=pd.ArrowDtype)


def _as_read_sql_column(column):
    kind = column.type
    if column.null_count == len(column):
        return pa.nulls(len(column), pa.string())
    if isinstance(kind, pa.OpaqueType) and kind.type_name == "numeric" \
            and kind.storage_type == pa.string():  # PostgreSQL's numeric, as its text
        return pc.cast(_storage(column), pa.float64())
    if isinstance(kind, pa.JsonType):
        return pc.cast(_storage(column), pa.string())
    if pa.types.is_integer(kind):
        return pc.cast(column, pa.int64())  # safe: an overflow raises
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return pc.cast(column, pa.float64())
    if pa.types.is_date(kind) or pa.types.is_large_string(kind):
        return pc.cast(column, pa.string())
    if pa.types.is_string(kind) or pa.types.is_boolean(kind) or pa.types.is_timestamp(kind):
        return column
    return None


def _storage(column):
    return pa.chunked_array([chunk.storage for chunk in column.chunks], column.type.storage_type)
