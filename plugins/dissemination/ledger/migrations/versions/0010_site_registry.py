"""site_registry (chained: each site's registered Public text and admin codes, as digests,
from a master list or a coordinator's acceptance) and sites_held (operational: sites held out
of their round's packages, waiting for review)."""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.create_table(
        "site_registry",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("country", sa.String(3), nullable=False),
        sa.Column("site_key", sa.String(255), nullable=False),
        sa.Column("registered", sa.Text, nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("accepted_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_site_registry_site", "site_registry", ["country", "site_key"])
    op.create_table(
        "sites_held",
        sa.Column("country", sa.String(3), primary_key=True),
        sa.Column("site_key", sa.String(255), primary_key=True),
        sa.Column("round_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("held", sa.Text, nullable=False),
        sa.Column("first_held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sites_held")
    op.drop_index("ix_site_registry_site", "site_registry")
    op.drop_table("site_registry")
