"""The ledger's password rotations, alerts, failures and intake log."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:  # (pandas, numpy: not for the Dissemination page's reads)
    pass
from .records import MAIN_RECIPIENTS, DeliveryFailure, Rotation, utc, utc_or_none
from .rows import insert_chained
from .tables import alerts, deliveries, delivery_failures, intake_log, password_rotations


class RotationsAndAlerts:
    """The ledger's password rotations, alerts, failures and intake log."""

    engine: sa.Engine

    def alert_once(self, kind: str, subject: str, now: datetime) -> bool:
        """True the first time an alert is raised, False after: no alert storms."""
        return self._insert_once(alerts, kind=kind, subject=subject, sent_at=now)

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
            insert_chained(conn, password_rotations, dict(
                agreement_id=agreement_id, variable=variable, rotated_at=rotated_at,
                focal_point_to_tell=focal_point_to_tell))

    def unnotified_rotations(self) -> list[tuple[int, str]]:
        """(row id, agreement id) of rotations DTM's focal point has not been told about yet."""
        with self.engine.connect() as conn:
            return [(r.id, r.agreement_id) for r in conn.execute(
                sa.select(password_rotations.c.id, password_rotations.c.agreement_id)
                .where(password_rotations.c.notified_at.is_(None))
                .order_by(password_rotations.c.id))]

    def rotations(self, agreement_ids: Iterable[str] | None = None, newest_only: bool = False
                  ) -> list[Rotation]:
        """Every password rotation (of these agreements), or each agreement's newest, in id
        order."""
        r = password_rotations.c
        query = sa.select(password_rotations).order_by(r.id)
        if agreement_ids is not None:
            query = query.where(r.agreement_id.in_(list(agreement_ids)))
        if newest_only:
            query = query.where(r.id.in_(sa.select(sa.func.max(r.id)).group_by(r.agreement_id)))
        with self.engine.connect() as conn:
            return [Rotation(r.id, r.agreement_id, utc(r.rotated_at), r.focal_point_to_tell,
                             utc_or_none(r.notified_at), utc_or_none(r.called_at))
                    for r in conn.execute(query)]

    def mark_rotation_called(self, agreement_id: str, now: datetime) -> int:
        """DTM's focal point passed the agreement's new password on by phone: every rotation of
        it not marked yet is done. How many rows were marked (0: none was awaiting a call)."""
        c = password_rotations.c
        with self._writing("mark the rotation called") as conn:
            return conn.execute(password_rotations.update()
                                .where(c.agreement_id == agreement_id, c.called_at.is_(None))
                                .values(called_at=now)).rowcount

    def mark_rotation_notified(self, rotation_id: int, now: datetime) -> None:
        with self._writing("mark the rotation notified") as conn:
            conn.execute(password_rotations.update()
                         .where(password_rotations.c.id == rotation_id).values(notified_at=now))

    def record_failure(self, failure: DeliveryFailure) -> None:
        with self._writing("recording a failed delivery") as conn:
            conn.execute(delivery_failures.insert().values(
                **{**asdict(failure), "reason": failure.reason[:2000]}))

    def failures(self, agreement_ids: Iterable[str] | None = None, open_only: bool = False
                 ) -> list[DeliveryFailure]:
        """Every failed delivery attempt (of these agreements), in id order; ``open_only``,
        those no delivery of the same round, urgency and slot has followed."""
        f, d = delivery_failures.c, deliveries.c
        query = sa.select(*(c for c in delivery_failures.c if c.name != "id")).order_by(f.id)
        if agreement_ids is not None:
            query = query.where(f.agreement_id.in_(list(agreement_ids)))
        if open_only:
            # slot_of, in SQL (the page's property test holds the two to the same answers)
            slot = sa.case((d.recipient.in_(MAIN_RECIPIENTS), "main"), else_=d.recipient)
            query = query.where(~sa.exists().where(
                d.agreement_id == f.agreement_id, d.round_id == f.round_id,
                d.urgency == f.urgency, slot == f.slot, d.delivered_at >= f.failed_at))
        with self.engine.connect() as conn:
            return [DeliveryFailure(**{**r._asdict(), "failed_at": utc(r.failed_at)})
                    for r in conn.execute(query)]

    def alerts(self, kind: str) -> list[tuple[str, datetime]]:
        """(subject, sent_at) of every alert of ``kind`` raised so far."""
        with self.engine.connect() as conn:
            return [(r.subject, utc(r.sent_at)) for r in conn.execute(
                sa.select(alerts.c.subject, alerts.c.sent_at).where(alerts.c.kind == kind))]

    def intake(self) -> list[tuple[str, str, str, datetime]]:
        """(round id, country, status, first seen) of every round version the intake saw."""
        c = intake_log.c
        with self.engine.connect() as conn:
            return [(r.round_id, r.country, r.status, utc(r.seen_at)) for r in conn.execute(
                sa.select(c.round_id, c.country, c.status, c.seen_at).order_by(c.seen_at))]
