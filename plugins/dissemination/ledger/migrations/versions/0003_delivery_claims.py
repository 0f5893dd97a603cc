"""delivery_claims: claim, upload, confirm (operational state, not chained)."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "delivery_claims",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agreement_id", sa.String(64), nullable=False),
        sa.Column("round_id", sa.String(64), nullable=False),
        sa.Column("urgency", sa.String(8), nullable=False),
        sa.Column("slot", sa.String(255), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("package_sha256", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(255), nullable=False),
        sa.Column("remote_path", sa.String(1024), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivery_id", sa.Integer, nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("agreement_id", "round_id", "urgency", "slot", "content_sha256",
                            name="uq_claim_once"),
    )


def downgrade() -> None:
    op.drop_table("delivery_claims")
