"""Baseline: the ledger of the first release (deliveries, alerts, password rotations, intake)."""

import sqlalchemy as sa
from alembic import op

from dissemination.ledger.migrations.baseline import first_release_tables

revision = "0001"
down_revision = None


def upgrade() -> None:
    metadata = sa.MetaData()
    first_release_tables(metadata)
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    for name in ("intake", "password_rotations", "alerts", "deliveries"):
        op.drop_table(name)
