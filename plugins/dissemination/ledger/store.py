"""The ledger: one object over deliveries, claims, rotations and the page's reads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:  # (pandas, numpy: not for the Dissemination page's reads)
    pass
from .claims import Claims
from .connection import require_schema, unavailable_as, wait_bounds
from .deliveries import Deliveries
from .reads import PageReads
from .records import LedgerNotInitialised, utc
from .rotations import RotationsAndAlerts
from .rows import insert_chained
from .tables import CHAINED, INITIALISED, deliveries, ledger_meta


class Ledger(Deliveries, Claims, RotationsAndAlerts, PageReads):
    def __init__(self, engine: sa.Engine):
        """Open a ledger at the current schema; refuses any other (``upgrade`` migrates it)."""
        self.engine = engine
        require_schema(engine)

    def initialised(self) -> tuple[str, datetime] | None:
        """(how, when) the ledger was initialised, or None for a new or wiped ledger."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(ledger_meta.c.value, ledger_meta.c.at)
                               .where(ledger_meta.c.key == INITIALISED)).first()
        return None if row is None else (row.value, utc(row.at))

    def initialise(self, reason: str, now: datetime) -> bool:
        """Declare a fresh start (or adopt the rows already here): recorded once, with why.
        False if the ledger was already initialised."""
        with self.engine.connect() as conn:
            existing = conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar()
        how = f"{reason} ({existing} earlier deliveries adopted)" if existing else reason
        return self._insert_once(ledger_meta, key=INITIALISED, value=how, at=now)

    def _insert_once(self, table: sa.Table, **values) -> bool:
        """Insert a row keyed by its primary key (chained if its table is): True the first
        time, False after."""
        try:
            with self.engine.begin() as conn:
                if table.name in CHAINED:
                    insert_chained(conn, table, values)
                else:
                    conn.execute(table.insert().values(**values))
        except sa.exc.IntegrityError:
            return False
        return True

    @contextmanager
    def _begin(self, conn: sa.Connection | None) -> Iterator[sa.Connection]:
        """The caller's connection (its transaction), or a transaction of our own."""
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as own:
            yield own

    def require_initialised(self) -> None:
        if self.initialised() is None:
            url = self.engine.url.render_as_string(hide_password=True)
            raise LedgerNotInitialised(
                f"the ledger {url} has no initialisation marker: it is new or was wiped, so "
                "it cannot tell what partners already hold and every check against their "
                "history would pass silently. Restore it from backup; or, if this really is "
                "a fresh start, declare it: python -m dissemination ledger init --url "
                f"'{url}' --fresh-start 'why'")

    @contextmanager
    def _writing(self, doing: str):
        """A transaction updating rows others may update too (a claim, a rotation's marks); on
        PostgreSQL with its waits bounded (a row locked by a writer that froze would otherwise
        hold every other writer of it for ever)."""
        with unavailable_as(doing, self.engine), self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(wait_bounds())
            yield conn

    @contextmanager
    def _reading(self, doing: str):
        with unavailable_as(doing, self.engine), self.engine.connect() as conn:
            yield conn
