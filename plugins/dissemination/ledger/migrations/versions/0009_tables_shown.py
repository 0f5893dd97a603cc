"""tables_shown: what each partial-round package showed (its table's layout and where its
blanks were, no value), so that the cleaned round's packages are protected with it. Keyed by
the delivery's content hash, which checks it when the table is rebuilt (not chained)."""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "tables_shown",
        sa.Column("content_sha256", sa.String(64), primary_key=True),
        sa.Column("round_id", sa.String(64), nullable=False, index=True),
        sa.Column("shown", sa.Text, nullable=False),
        sa.Column("kept_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tables_shown")
