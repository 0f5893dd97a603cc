"""The audit trail: audit_chain links every delivery, rotation, alert and intake row by a hash
over its content and the previous entry's hash. Rows already in the ledger are chained here, in
key order per table, and ledger_meta says how many were adopted at upgrade time."""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from dissemination.ledger.rows import adopt_unchained
from dissemination.ledger.tables import CHAIN_ADOPTED, ledger_meta

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "audit_chain",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("row_key", sa.String(1024), nullable=False),
        sa.Column("row_sha256", sa.String(64), nullable=False),
        sa.Column("prev_sha256", sa.String(64), nullable=False),
        sa.Column("chain_sha256", sa.String(64), nullable=False),
        sa.UniqueConstraint("table_name", "row_key", name="uq_chained_once"),
    )
    conn = op.get_bind()
    adopted = adopt_unchained(conn)
    conn.execute(ledger_meta.insert().values(
        key=CHAIN_ADOPTED, at=datetime.now(UTC),
        value=f"{adopted} row(s) written before the chain existed, chained at upgrade time"))


def downgrade() -> None:
    op.execute("DELETE FROM ledger_meta WHERE key = 'chain_adopted'")
    op.drop_table("audit_chain")
