"""Organisations are first-class: deliveries.organisation_id; ledger_meta (the initialisation
marker)."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("organisation_id", sa.String(64), nullable=True))
        batch.create_index("ix_deliveries_organisation_id", ["organisation_id"])
    op.create_table(
        "ledger_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_meta")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_organisation_id")
        batch.drop_column("organisation_id")
