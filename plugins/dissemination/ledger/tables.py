"""The ledger's tables: the schema every migration leads to."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from .registry_tables import define as _registry_tables

if TYPE_CHECKING:  # (pandas, numpy: not for the Dissemination page's reads)
    pass


metadata = sa.MetaData()


deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agreement_id", sa.String(64), nullable=False),
    sa.Column("organisation", sa.String(200), nullable=False),  # display name at the time
    # include/organisations/<id>: what disclosure history is keyed by (NULL in rows written
    # before organisations had ids; those are found through their agreement instead).
    sa.Column("organisation_id", sa.String(64), nullable=True, index=True),
    sa.Column("recipient", sa.String(64), nullable=False),  # primary | secondary | field
    sa.Column("focal_point_name", sa.String(200), nullable=False),
    sa.Column("focal_point_email", sa.String(200), nullable=False),
    sa.Column("round_id", sa.String(64), nullable=False),
    sa.Column("country", sa.String(3), nullable=False),
    sa.Column("urgency", sa.String(8), nullable=False),
    sa.Column("level", sa.String(32), nullable=False),  # "site" or the admin level aggregated to
    sa.Column("rules_version", sa.String(64), nullable=False),
    sa.Column("columns", sa.Text, nullable=False),  # JSON [{name, source, classification, rule}]
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("package_sha256", sa.String(64), nullable=False),
    sa.Column("package_name", sa.String(255), nullable=False),
    sa.Column("destination", sa.String(255), nullable=False),
    sa.Column("remote_path", sa.String(1024), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(255), nullable=False, default=""),
    # Medium urgency: the agreement's window from collection, and whether it was kept.
    sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deadline_met", sa.Boolean, nullable=True),
    sa.UniqueConstraint(
        "agreement_id", "round_id", "urgency", "recipient", "content_sha256",
        name="uq_delivery_once"
    ),
    # The Dissemination page's reads (migration 0008): none reads the table's bulk.
    sa.Index("ix_deliveries_page", "country", "agreement_id", "urgency", "recipient",
             "delivered_at", "round_id", "deadline_met"),
    sa.Index("ix_deliveries_round", "round_id", "urgency", "agreement_id", "deadline_met"),
)


#: Claim, upload, confirm: a delivery is claimed here before its upload starts, so a concurrent
#: or repeated attempt sees it. Operational state (rows change as attempts come and go), so it is
#: not part of the audit trail; the ``deliveries`` row written at confirmation is.
delivery_claims = sa.Table(
    "delivery_claims",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agreement_id", sa.String(64), nullable=False),
    sa.Column("round_id", sa.String(64), nullable=False),
    sa.Column("urgency", sa.String(8), nullable=False),
    # "main" (the primary, or the secondary after a fallback) or "field:<name>"
    sa.Column("slot", sa.String(255), nullable=False),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # claimed | delivered
    sa.Column("attempt", sa.String(64), nullable=False),  # who holds it: one per upload try
    sa.Column("run_id", sa.String(255), nullable=False),
    sa.Column("package_sha256", sa.String(64), nullable=False),
    sa.Column("destination", sa.String(255), nullable=False),
    sa.Column("remote_path", sa.String(1024), nullable=False),  # the final name, once known
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivery_id", sa.Integer, nullable=True),  # deliveries.id once confirmed
    sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),  # notice sent once
    sa.UniqueConstraint("agreement_id", "round_id", "urgency", "slot", "content_sha256",
                        name="uq_claim_once"),
)


alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),  # at_risk | missed | ...
    sa.Column("subject", sa.String(255), primary_key=True),  # e.g. "<round>/<agreement>"
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
)


password_rotations = sa.Table(
    "password_rotations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agreement_id", sa.String(64), nullable=False, index=True),
    sa.Column("variable", sa.String(64), nullable=False),
    sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=False),
    # The new password is passed on by phone; this says that someone must do it.
    sa.Column("focal_point_to_tell", sa.String(200), nullable=False),
    # When DTM's focal point was e-mailed about it; NULL until then (retried until sent).
    sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
    # When DTM's focal point confirmed the phone call (``ledger rotation-called``); NULL until.
    sa.Column("called_at", sa.DateTime(timezone=True), nullable=True),
)


#: Each failed delivery attempt and why (never a value: the errors name files, fields, rows).
#: Operational, like the claims: what awaits a retry and what was refused, for the operators.
delivery_failures = sa.Table(
    "delivery_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agreement_id", sa.String(64), nullable=False, index=True),
    sa.Column("round_id", sa.String(64), nullable=False),
    sa.Column("urgency", sa.String(8), nullable=False),
    sa.Column("slot", sa.String(255), nullable=False),  # as in delivery_claims
    sa.Column("focal_point_name", sa.String(200), nullable=False),
    sa.Column("run_id", sa.String(255), nullable=False),
    sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("permanent", sa.Boolean, nullable=False),  # refused: a retry would fail alike
    sa.Column("reason", sa.Text, nullable=False),
)


#: Temporary files an attempt could not remove from a partner's server (its connection was cut
#: mid-upload), so that the next upload there removes them without listing the folder first.
#: Operational, like the claims; written in the transaction that releases the attempt's claim.
partials_left = sa.Table(
    "partials_left",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("destination", sa.String(255), nullable=False, index=True),  # as in claims
    sa.Column("remote_path", sa.String(1024), nullable=False),
    sa.Column("left_at", sa.DateTime(timezone=True), nullable=False),
)


#: What each partial-round package showed (``shown.Shown``: layout and blanks, no value), so
#: that the cleaned round is protected with it. Checked by the delivery's content hash when
#: used, so not chained; written when the package is made (unused unless it is delivered).
tables_shown = sa.Table(
    "tables_shown",
    metadata,
    sa.Column("content_sha256", sa.String(64), primary_key=True),
    sa.Column("round_id", sa.String(64), nullable=False, index=True),
    sa.Column("shown", sa.Text, nullable=False),
    sa.Column("kept_at", sa.DateTime(timezone=True), nullable=False),
)


intake_log = sa.Table(
    "intake",
    metadata,
    sa.Column("round_id", sa.String(64), primary_key=True),
    sa.Column("content_sha256", sa.String(64), primary_key=True),
    sa.Column("country", sa.String(3), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # The intake's watermark: moves when the same content is exported again (not chained).
    sa.Column("exported_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)


#: What the ledger knows about itself, e.g. when and how it was initialised.
ledger_meta = sa.Table(
    "ledger_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


INITIALISED = "initialised"


site_registry, sites_held = _registry_tables(metadata)  # the site registry (registry_ledger)


CHAIN_ADOPTED = "chain_adopted"  # rows that existed before the chain, chained at upgrade time


#: The hash chain: one entry per chained row, in the order they were written. Append-only.
audit_chain = sa.Table(
    "audit_chain",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),  # 1, 2, 3...
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("row_key", sa.String(1024), nullable=False),  # JSON list of primary key values
    sa.Column("row_sha256", sa.String(64), nullable=False),
    sa.Column("prev_sha256", sa.String(64), nullable=False),
    sa.Column("chain_sha256", sa.String(64), nullable=False),
    sa.UniqueConstraint("table_name", "row_key", name="uq_chained_once"),
)


GENESIS = "0" * 64


#: What is chained: per table, its key and the columns hashed. An explicit list, so a column
#: added later does not change old rows' hashes; mutable columns are left out on purpose.
CHAINED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "deliveries": (("id",), (
        "agreement_id", "organisation", "organisation_id", "recipient", "focal_point_name",
        "focal_point_email", "round_id", "country", "urgency", "level", "rules_version",
        "columns", "row_count", "content_sha256", "package_sha256", "package_name",
        "destination", "remote_path", "delivered_at", "run_id", "deadline", "deadline_met")),
    # notified_at is set when DTM's focal point has been e-mailed, after the row was written.
    "password_rotations": (("id",), ("agreement_id", "variable", "rotated_at",
                                     "focal_point_to_tell")),
    "alerts": (("kind", "subject"), ("kind", "subject", "sent_at")),
    # exported_at is the intake's watermark: it moves when the same content is exported again.
    "intake": (("round_id", "content_sha256"),
               ("round_id", "content_sha256", "country", "status", "seen_at", "version")),
    "site_registry": (("id",), ("country", "site_key", "registered", "source", "accepted_by",
                                "reason", "recorded_at")),
}


#: Must match the newest revision in ledger_migrations/versions (a test checks it).
SCHEMA_REVISION = "0010"


VERSION_TABLE = "ledger_alembic_version"
