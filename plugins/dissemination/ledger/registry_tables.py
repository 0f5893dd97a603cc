"""The site registry's tables in the ledger database (migration 0010).

``site_registry`` is append-only and chained (each registration: a master list's site, or a
coordinator's acceptance, with who and why); a site's registration is its newest row. Values
are digests (``registry.digest``), never text. ``sites_held`` is operational, like the claims:
the sites waiting for review, one row per site, gone once it ships or is accepted.
"""

from __future__ import annotations

import sqlalchemy as sa


def define(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The two tables, on the ledger's metadata (``ledger/tables.py`` calls this once)."""
    registry = sa.Table(
        "site_registry",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("country", sa.String(3), nullable=False),
        sa.Column("site_key", sa.String(255), nullable=False),
        sa.Column("registered", sa.Text, nullable=False),  # JSON {column: digest}
        sa.Column("source", sa.String(255), nullable=False),  # master list, or acceptance
        sa.Column("accepted_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix_site_registry_site", "country", "site_key"),
    )
    held = sa.Table(
        "sites_held",
        metadata,
        sa.Column("country", sa.String(3), primary_key=True),
        sa.Column("site_key", sa.String(255), primary_key=True),
        sa.Column("round_id", sa.String(64), nullable=False),  # the newest round holding it
        sa.Column("reason", sa.Text, nullable=False),  # column names, never a value
        sa.Column("held", sa.Text, nullable=False),  # JSON {column: digest} as held
        sa.Column("first_held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
    )
    return registry, held
