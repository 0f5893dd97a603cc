"""partials_left: temporary files an attempt could not remove from a partner's server (its
connection was cut mid-upload), kept when its claim is released, so that the next upload there
removes them by name instead of listing the folder on every delivery (operational, not
chained)."""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "partials_left",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("destination", sa.String(255), nullable=False, index=True),
        sa.Column("remote_path", sa.String(1024), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("partials_left")
