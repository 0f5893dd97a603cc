"""Two narrow indexes of deliveries, for the Dissemination page: it reads each recipient's newest
delivery and counts each agreement's windows met and missed from the first (by country, so a
country's page reads its own part), and looks up the deliveries of a few rounds (those owed
now, those whose window was missed) in the second. Each holds every column those reads need,
so years of history are read without their manifest explanations, most of the table's bytes.
The first replaces 0007's index by country, which leads it."""

from alembic import op

revision = "0008"
down_revision = "0007"

PAGE = ["country", "agreement_id", "urgency", "recipient", "delivered_at", "round_id",
        "deadline_met"]
ROUND = ["round_id", "urgency", "agreement_id", "deadline_met"]


def upgrade() -> None:
    op.create_index("ix_deliveries_page", "deliveries", PAGE)
    op.create_index("ix_deliveries_round", "deliveries", ROUND)
    op.drop_index("ix_deliveries_country", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_country", "deliveries", ["country"])
    op.drop_index("ix_deliveries_round", table_name="deliveries")
    op.drop_index("ix_deliveries_page", table_name="deliveries")
