"""Schema migrations of the ledger (Alembic, driven from code: no alembic.ini).

``upgrade(engine)`` brings any ledger to the schema this code writes, in place: a new database
from nothing, a migrated one from its revision, and one made before migrations existed (tables
created by older code, no version table) after recognising which release made it. The version
table has its own name, ``ledger_alembic_version``, so it never meets Airflow's or anyone's.
PostgreSQL upgrades in one transaction under an advisory lock (two DAGs starting at once do not
race); SQLite serialises writers itself.

A new revision: copy the newest file in ``versions/``, set ``revision``/``down_revision``, and
raise ``dissemination.ledger.tables.SCHEMA_REVISION``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from ..connection import schema_revision
from ..store import Ledger
from ..tables import SCHEMA_REVISION
from .baseline import first_release_tables

__all__ = ["HERE", "UPGRADE_LOCK", "Upgraded", "legacy_revision", "open_upgraded", "upgrade"]

HERE = Path(__file__).resolve().parent
#: pg_advisory_xact_lock key of an upgrade in progress (any constant; "ledgup" in ASCII).
UPGRADE_LOCK = 0x6C6564677570


@dataclass(frozen=True)
class Upgraded:
    before: str | None  # the revision found (None: a new, empty database)
    after: str
    recognised: bool  # made before migrations: its tables told which release made it

    def line(self, url: str) -> str:
        if self.before == self.after:
            return f"{url}: at schema revision {self.after}, nothing to do"
        start = "an empty database" if self.before is None else f"revision {self.before}"
        made = " (made before migrations: recognised by its tables)" if self.recognised else ""
        return f"{url}: upgraded from {start}{made} to {self.after}"


def upgrade(engine: sa.Engine) -> Upgraded:
    """Migrate the ledger to this code's schema (a no-op when it is there already).

    At this code's revision, the version table says so and Alembic is not loaded: every run's
    first task calls this, and Alembic's import and script scan cost it a third of a second."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(UPGRADE_LOCK)))
        before = schema_revision(conn)
        if before == SCHEMA_REVISION:
            return Upgraded(before, before, False)
        from alembic import command

        config = _config(conn)
        recognised = before is None and (before := legacy_revision(conn)) is not None
        if recognised:
            _complete_legacy(conn)
            command.stamp(config, before)
        command.upgrade(config, "head")
        after = schema_revision(conn)
    assert after == SCHEMA_REVISION, f"migrations end at {after}, the code expects " \
                                     f"{SCHEMA_REVISION}"
    return Upgraded(before, after, recognised)


def legacy_revision(conn: sa.Connection) -> str | None:
    """The revision whose schema an unversioned ledger's tables match; None if it has none."""
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    if "deliveries" not in tables:
        return None
    if "delivery_claims" in tables:
        return "0003"
    if "organisation_id" in {c["name"] for c in inspector.get_columns("deliveries")}:
        return "0002"
    return "0001"


def _complete_legacy(conn: sa.Connection) -> None:
    """What older code made lazily or not at all: ``intake`` only when the intake first ran,
    and the index on ``organisation_id`` never when the column was added in place."""
    for table in first_release_tables(sa.MetaData()):
        table.create(conn, checkfirst=True)
    inspector = sa.inspect(conn)
    columns = {c["name"] for c in inspector.get_columns("deliveries")}
    indexes = {i["name"] for i in inspector.get_indexes("deliveries")}
    if "organisation_id" in columns and "ix_deliveries_organisation_id" not in indexes:
        conn.execute(sa.text("CREATE INDEX ix_deliveries_organisation_id "
                             "ON deliveries (organisation_id)"))


def _config(conn: sa.Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = conn
    return config


def open_upgraded(engine: sa.Engine):
    """Upgrade, then open: for the sandbox and tests (production upgrades in a DAG's first
    task or by ``python -m dissemination ledger upgrade``, then opens)."""
    upgrade(engine)
    return Ledger(engine)
