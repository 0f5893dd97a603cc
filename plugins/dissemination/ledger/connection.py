"""The ledger's connection rules: its schema revision, locks and errors."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:  # (pandas, numpy: not for the Dissemination page's reads)
    pass
from .records import LedgerNeedsUpgrade, LedgerUnavailable
from .tables import SCHEMA_REVISION, VERSION_TABLE


@contextmanager
def unavailable_as(doing: str, engine: sa.Engine):
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        url = engine.url.render_as_string(hide_password=True)
        if getattr(exc.orig, "pgcode", None) == LOCK_NOT_AVAILABLE:
            raise LedgerUnavailable(
                f"waited {LOCK_WAIT.total_seconds():g} s for a lock of the ledger {url} "
                f"while trying to {doing}: another writer holds it, stuck mid-transaction (its "
                "process stopped?); PostgreSQL ends such a transaction after "
                f"{STUCK_AFTER.total_seconds():g} s idle. Retrying is safe") from None
        raise LedgerUnavailable(
            f"the ledger {url} is unavailable ({type(exc.orig).__name__}) while trying to "
            f"{doing}") from None


LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock wait past lock_timeout




def schema_revision(conn: sa.Connection) -> str | None:
    """The ledger's migration revision; None if it has none (new, or made before migrations)."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def require_schema(engine: sa.Engine) -> None:
    """Raise ``LedgerNeedsUpgrade`` naming the command unless the ledger is at this code's
    schema: writing to an older one would fail half-way or write unchained rows."""
    with engine.connect() as conn:
        found = schema_revision(conn)
    if found != SCHEMA_REVISION:
        url = engine.url.render_as_string(hide_password=True)
        raise LedgerNeedsUpgrade(
            f"the ledger {url} is at schema revision {found or 'none'}, this code needs "
            f"{SCHEMA_REVISION}: back it up, then run python -m dissemination ledger upgrade "
            f"--url '{url}' (the DAGs' first task does it too)")


#: pg_advisory_xact_lock key of the chain head (any constant; "ledger" in ASCII).
CHAIN_LOCK = 0x6C6564676572


#: On PostgreSQL, how long a writer waits for a lock before giving up (an error the caller
#: retries): the chain lock every writer needs, or a claim's row. A live writer holds one for
#: milliseconds; one whose process froze mid-transaction (stopped, paused, swapped out), for
#: ever. Such a writer's transaction, idle past ``STUCK_AFTER``, is ended by the server, which
#: frees its locks for everyone else. Both are set by each writer for its own transaction only.
LOCK_WAIT = timedelta(seconds=30)


STUCK_AFTER = timedelta(seconds=60)


def wait_bounds() -> sa.Select:
    """``LOCK_WAIT`` and ``STUCK_AFTER`` for the rest of the transaction (PostgreSQL)."""
    def ms(limit: timedelta) -> str:
        return f"{limit.total_seconds() * 1000:.0f}"

    return sa.select(
        sa.func.set_config("lock_timeout", ms(LOCK_WAIT), True).label("lock_wait"),
        sa.func.set_config("idle_in_transaction_session_timeout", ms(STUCK_AFTER),
                           True).label("stuck_after"))
