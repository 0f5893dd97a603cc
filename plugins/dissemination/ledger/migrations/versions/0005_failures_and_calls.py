"""delivery_failures: each failed attempt and its reason (operational, not chained), so the
Dissemination page shows what awaits a retry and what was refused; password_rotations.called_at:
when DTM's focal point confirmed the phone call that passed the new password on (mutable, so
not chained either)."""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "delivery_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agreement_id", sa.String(64), nullable=False, index=True),
        sa.Column("round_id", sa.String(64), nullable=False),
        sa.Column("urgency", sa.String(8), nullable=False),
        sa.Column("slot", sa.String(255), nullable=False),
        sa.Column("focal_point_name", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("permanent", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.add_column("password_rotations",
                  sa.Column("called_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("password_rotations", "called_at")
    op.drop_table("delivery_failures")
