"""The delivery ledger: who received what, when, under which rules, with which hashes.

One row per delivered package. The unique key (agreement, round, urgency, content hash) is what
makes a re-run harmless: the same data is never sent to the same agreement twice. SQLite is the
embedded default; PostgreSQL works unchanged through SQLAlchemy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

metadata = sa.MetaData()
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agreement_id", sa.String(64), nullable=False),
    sa.Column("organisation", sa.String(200), nullable=False),
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
)


MAIN_RECIPIENTS = ("primary", "secondary")


@dataclass(frozen=True)
class DeliveryRecord:
    agreement_id: str
    organisation: str
    recipient: str
    focal_point_name: str
    focal_point_email: str
    round_id: str
    country: str
    urgency: str
    level: str
    rules_version: str
    columns: str
    row_count: int
    content_sha256: str
    package_sha256: str
    package_name: str
    destination: str
    remote_path: str
    delivered_at: datetime
    run_id: str = ""
    deadline: datetime | None = None
    deadline_met: bool | None = None

    @staticmethod
    def columns_json(columns: list[dict]) -> str:
        return json.dumps(columns, sort_keys=True)


class Ledger:
    def __init__(self, engine: sa.Engine):
        self.engine = engine
        metadata.create_all(engine)

    def find(
        self, agreement_id: str, round_id: str, urgency: str,
        content_sha256: str | None = None, recipients: tuple[str, ...] = MAIN_RECIPIENTS,
    ) -> DeliveryRecord | None:
        """The first delivery of a round (of this content, if given) to any of ``recipients``.

        An organisation's main recipient is its primary or, after a fallback, its secondary:
        either counts as the organisation having received it.
        """
        query = sa.select(deliveries).where(
            deliveries.c.agreement_id == agreement_id,
            deliveries.c.round_id == round_id,
            deliveries.c.urgency == urgency,
            deliveries.c.recipient.in_(recipients),
        )
        if content_sha256 is not None:
            query = query.where(deliveries.c.content_sha256 == content_sha256)
        with self.engine.connect() as conn:
            row = conn.execute(query.order_by(deliveries.c.delivered_at).limit(1)).first()
        return _to_record(row) if row is not None else None

    def record(self, record: DeliveryRecord) -> DeliveryRecord:
        """Insert; if this exact delivery is already recorded, keep and return the first row."""
        try:
            with self.engine.begin() as conn:
                conn.execute(deliveries.insert().values(**asdict(record)))
        except sa.exc.IntegrityError:
            existing = self.find(
                record.agreement_id, record.round_id, record.urgency, record.content_sha256,
                (record.recipient,),
            )
            if existing is None:
                raise
            return existing
        return record

    def shared_columns(self, organisation: str, country: str) -> dict[str, set[str]]:
        """Source columns an organisation received for a country, per level (site, admin1...).

        Relational rules look across deliveries: a combination completed with what the same
        organisation already holds is as sensitive as one inside a single package.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries.c.level, deliveries.c.columns).where(
                    deliveries.c.organisation == organisation, deliveries.c.country == country)
            ).all()
        shared: dict[str, set[str]] = {}
        for level, columns in rows:
            shared.setdefault(level, set()).update(
                c["source"] for c in json.loads(columns) if c.get("source"))
        return shared

    def alert_once(self, kind: str, subject: str, now: datetime) -> bool:
        """True the first time an alert is raised, False after: no alert storms."""
        try:
            with self.engine.begin() as conn:
                conn.execute(alerts.insert().values(kind=kind, subject=subject, sent_at=now))
        except sa.exc.IntegrityError:
            return False
        return True

    def last_rotation(self, agreement_id: str) -> datetime | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(sa.func.max(password_rotations.c.rotated_at))
                .where(password_rotations.c.agreement_id == agreement_id)
            ).scalar()
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # SQLite drops the offset; we store UTC
        return value

    def record_rotation(self, agreement_id: str, variable: str, rotated_at: datetime,
                        focal_point_to_tell: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(password_rotations.insert().values(
                agreement_id=agreement_id, variable=variable, rotated_at=rotated_at,
                focal_point_to_tell=focal_point_to_tell))

    def unnotified_rotations(self) -> list[tuple[int, str]]:
        """(row id, agreement id) of rotations DTM's focal point has not been told about yet."""
        with self.engine.connect() as conn:
            return [(r.id, r.agreement_id) for r in conn.execute(
                sa.select(password_rotations.c.id, password_rotations.c.agreement_id)
                .where(password_rotations.c.notified_at.is_(None))
                .order_by(password_rotations.c.id))]

    def mark_rotation_notified(self, rotation_id: int, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(password_rotations.update()
                         .where(password_rotations.c.id == rotation_id).values(notified_at=now))

    def all(self) -> list[DeliveryRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(deliveries).order_by(deliveries.c.id)).all()
        return [_to_record(r) for r in rows]


def _to_record(row) -> DeliveryRecord:
    data = row._asdict()
    data.pop("id")
    for key in ("delivered_at", "deadline"):  # SQLite drops the offset; we only store UTC
        if data[key] is not None and data[key].tzinfo is None:
            data[key] = data[key].replace(tzinfo=UTC)
    return DeliveryRecord(**data)
