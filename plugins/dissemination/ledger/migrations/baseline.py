"""The ledger as the first release created it (before organisations and migrations), frozen:
revision 0001 creates it, and ``upgrade`` completes a ledger that release made lazily."""

from __future__ import annotations

import sqlalchemy as sa


def first_release_tables(metadata: sa.MetaData) -> list[sa.Table]:
    deliveries = sa.Table(
        "deliveries", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agreement_id", sa.String(64), nullable=False),
        sa.Column("organisation", sa.String(200), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("focal_point_name", sa.String(200), nullable=False),
        sa.Column("focal_point_email", sa.String(200), nullable=False),
        sa.Column("round_id", sa.String(64), nullable=False),
        sa.Column("country", sa.String(3), nullable=False),
        sa.Column("urgency", sa.String(8), nullable=False),
        sa.Column("level", sa.String(32), nullable=False),
        sa.Column("rules_version", sa.String(64), nullable=False),
        sa.Column("columns", sa.Text, nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("package_sha256", sa.String(64), nullable=False),
        sa.Column("package_name", sa.String(255), nullable=False),
        sa.Column("destination", sa.String(255), nullable=False),
        sa.Column("remote_path", sa.String(1024), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline_met", sa.Boolean, nullable=True),
        sa.UniqueConstraint("agreement_id", "round_id", "urgency", "recipient",
                            "content_sha256", name="uq_delivery_once"),
    )
    alerts = sa.Table(
        "alerts", metadata,
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("subject", sa.String(255), primary_key=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    )
    password_rotations = sa.Table(
        "password_rotations", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agreement_id", sa.String(64), nullable=False, index=True),
        sa.Column("variable", sa.String(64), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("focal_point_to_tell", sa.String(200), nullable=False),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
    )
    intake = sa.Table(
        "intake", metadata,
        sa.Column("round_id", sa.String(64), primary_key=True),
        sa.Column("content_sha256", sa.String(64), primary_key=True),
        sa.Column("country", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    return [deliveries, alerts, password_rotations, intake]
