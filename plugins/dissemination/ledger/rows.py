"""The hash chain over the ledger's rows: what a row's hash covers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .chain import next_link

if TYPE_CHECKING:  # (pandas, numpy: not for the Dissemination page's reads)
    pass
from .connection import CHAIN_LOCK, wait_bounds
from .tables import CHAINED, GENESIS, audit_chain, ledger_meta, metadata


def _canonical(value):
    """One text per value on every backend: datetimes as UTC ISO (SQLite drops the offset)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:  # PostgreSQL's, in the session's time zone
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # SQLite's: naive, stored as UTC
    return value


def row_key(table_name: str, row: Mapping) -> str:
    return json.dumps([row[k] for k in CHAINED[table_name][0]], ensure_ascii=False)


def row_sha256(table_name: str, row: Mapping) -> str:
    """SHA-256 of a row's chained columns (not its surrogate id: the chain entry binds that)."""
    content = {c: _canonical(row[c]) for c in CHAINED[table_name][1]}
    text = json.dumps([table_name, content], sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def chained_select(table: sa.Table) -> sa.Select:
    """Only the key and the chained columns: what a row's hash is over, at any later schema."""
    keys, columns = CHAINED[table.name]
    return sa.select(*(table.c[c] for c in dict.fromkeys(keys + columns)))


def chain_row(conn: sa.Connection, table: sa.Table, key: Iterable) -> int:
    """Append the row of ``table`` with primary key ``key`` to the chain; its sequence number.

    Inside the caller's transaction, after the row's insert: on SQLite that insert already
    holds the single writer lock, on PostgreSQL an advisory lock held to commit serialises
    appenders, so two writers never link to the same head (``seq`` is unique besides). Every
    writer of every run waits for that lock, so both of its waits are bounded (see
    ``LOCK_WAIT``)."""
    if conn.dialect.name == "postgresql":  # the bounds first, in the same round trip
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CHAIN_LOCK))
                     .select_from(wait_bounds().subquery()))
    keys = CHAINED[table.name][0]
    row = conn.execute(chained_select(table).where(
        *(table.c[k] == v for k, v in zip(keys, key, strict=True)))).mappings().one()
    head = conn.execute(sa.select(audit_chain.c.seq, audit_chain.c.chain_sha256)
                        .order_by(audit_chain.c.seq.desc()).limit(1)).first()
    seq, prev = (head.seq + 1, head.chain_sha256) if head else (1, GENESIS)
    text_key, digest = row_key(table.name, row), row_sha256(table.name, row)
    conn.execute(audit_chain.insert().values(  # keyed when a key is given (chain.py)
        seq=seq, table_name=table.name, row_key=text_key, row_sha256=digest, prev_sha256=prev,
        chain_sha256=next_link(conn, ledger_meta, prev, seq, table.name, text_key, digest)))
    return seq


def adopt_unchained(conn: sa.Connection) -> int:
    """Chain every row not chained yet, table by table in key order; how many. The upgrade that
    introduced the chain adopts the rows written before it this way."""
    chained = {(t, k) for t, k in conn.execute(
        sa.select(audit_chain.c.table_name, audit_chain.c.row_key))}
    adopted, present = 0, set(sa.inspect(conn).get_table_names())
    for name, (keys, _) in CHAINED.items():
        if name not in present:  # made by a later revision: nothing of it to adopt
            continue
        table = metadata.tables[name]
        for row in conn.execute(sa.select(*(table.c[k] for k in keys))
                                .order_by(*(table.c[k] for k in keys))).all():
            if (name, row_key(name, row._mapping)) not in chained:
                chain_row(conn, table, tuple(row))
                adopted += 1
    return adopted


def insert_chained(conn: sa.Connection, table: sa.Table, values: Mapping) -> tuple:
    """Insert a row of a chained table and its chain entry in the caller's transaction; the
    row's primary key (e.g. ``(id,)``). The only way rows enter a chained table."""
    key = tuple(conn.execute(table.insert().values(**values)).inserted_primary_key)
    chain_row(conn, table, key)
    return key
