"""An index of deliveries by country: the Dissemination page per country reads one country's
deliveries, a twentieth of years of history at a thousand agreements, without scanning the
rest (each row carries its manifest explanation, most of the table's bytes)."""

from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_index("ix_deliveries_country", "deliveries", ["country"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_country", table_name="deliveries")
