"""The ledger's deliveries: recorded once, found by their key."""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..disclosure.shown import Shown
from .holdings import Held

if TYPE_CHECKING:  # (pandas, numpy: not for the Dissemination page's reads)
    from ..disclosure.shown import Shown
from .records import MAIN_RECIPIENTS, DeliveryRecord, to_record, utc
from .rows import insert_chained
from .tables import deliveries, tables_shown


class Deliveries:
    """The ledger's deliveries: recorded once, found by their key."""

    engine: sa.Engine

    def find(
        self, agreement_id: str, round_id: str, urgency: str,
        content_sha256: str | None = None, recipients: tuple[str, ...] = MAIN_RECIPIENTS,
        conn: sa.Connection | None = None,
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
        with self._begin(conn) as c:
            row = c.execute(query.order_by(deliveries.c.delivered_at).limit(1)).first()
        return to_record(row) if row is not None else None

    def record(self, record: DeliveryRecord, conn: sa.Connection | None = None
               ) -> DeliveryRecord:
        """Insert, chained; if this exact delivery is already recorded, keep and return the
        first row. With ``conn``, inside the caller's transaction (e.g. with the claim's
        update); a concurrent duplicate then raises IntegrityError for the caller to handle."""
        def existing(c: sa.Connection | None) -> DeliveryRecord | None:
            return self.find(record.agreement_id, record.round_id, record.urgency,
                             record.content_sha256, (record.recipient,), conn=c)

        if conn is not None:  # no savepoint (pysqlite's are unreliable): look first
            found = existing(conn)
            if found is None:
                insert_chained(conn, deliveries, asdict(record))
            return found or record
        try:
            with self.engine.begin() as own:
                insert_chained(own, deliveries, asdict(record))
        except sa.exc.IntegrityError:
            found = existing(None)
            if found is None:
                raise
            return found
        return record

    def holdings(self, organisation_id: str, agreement_ids: Iterable[str], country: str
                 ) -> list[Held]:
        """Every source column an organisation received for a country: per level and round.

        Keyed by the organisation id, and by its agreements for rows written before ids (the
        display name is never used). Refuses a ledger without its initialisation marker.
        """
        self.require_initialised()
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries.c.level, deliveries.c.columns, deliveries.c.round_id,
                          deliveries.c.agreement_id, deliveries.c.delivered_at)
                .where(deliveries.c.country == country,
                       sa.or_(deliveries.c.organisation_id == organisation_id,
                              deliveries.c.agreement_id.in_(list(agreement_ids))))
                .order_by(deliveries.c.id)
            ).all()
        return [Held(c["source"], level, round_id,
                     f"delivered {utc(at):%Y-%m-%d} under {agreement_id}", agreement_id)
                for level, columns, round_id, agreement_id, at in rows
                for c in json.loads(columns) if c.get("source")]

    def keep_shown(self, tables: Iterable[Shown], now: datetime) -> None:
        """Keep what packages show (once per content: alike tables are kept once)."""
        rows = {t.content_sha256: t for t in tables}
        if not rows:
            return
        with self.engine.begin() as conn:
            have = set(conn.execute(sa.select(tables_shown.c.content_sha256).where(
                tables_shown.c.content_sha256.in_(list(rows)))).scalars())
            new = [{"content_sha256": k, "round_id": t.round_id, "shown": t.to_json(),
                    "kept_at": now} for k, t in rows.items() if k not in have]
            if new:
                conn.execute(tables_shown.insert(), new)

    def shown_of(self, round_id: str) -> tuple[list[tuple[str, str, str]], dict[str, Shown]]:
        """Every delivery of a round, as (organisation id, agreement, content hash), and what
        the tables delivered showed, by content hash (where it was kept)."""
        with self.engine.connect() as conn:
            rows = self.delivered_contents(round_id, conn)
            return rows, self.kept_shown([r[2] for r in rows], conn)

    def kept_shown(self, hashes: Iterable[str], conn=None) -> dict[str, Shown]:
        """What the tables of these content hashes showed, where it was kept (asked in
        chunks: linked rounds may name more hashes than a database takes parameters)."""
        hashes = list(dict.fromkeys(hashes))
        with nullcontext(conn) if conn is not None else self.engine.connect() as c:
            return {k: Shown.from_json(text)
                    for at in range(0, len(hashes), 500) for k, text in c.execute(
                        sa.select(tables_shown.c.content_sha256, tables_shown.c.shown)
                        .where(tables_shown.c.content_sha256.in_(hashes[at:at + 500]))).all()}

    def delivered_contents(self, round_id: str, conn=None) -> list[tuple[str, str, str]]:
        """Every delivery of a round, as (organisation id, agreement, content hash)."""
        with nullcontext(conn) if conn is not None else self.engine.connect() as c:
            return [tuple(r) for r in c.execute(
                sa.select(deliveries.c.organisation_id, deliveries.c.agreement_id,
                          deliveries.c.content_sha256)
                .where(deliveries.c.round_id == round_id).order_by(deliveries.c.id)).all()]

    def delivered_rounds(self, country: str) -> list[str]:
        """Every round of a country with a delivery recorded, by round id (the page's index
        leads with the country: this reads no row's bulk)."""
        with self.engine.connect() as conn:
            return list(conn.execute(
                sa.select(deliveries.c.round_id).where(deliveries.c.country == country)
                .distinct().order_by(deliveries.c.round_id)).scalars())

    def all(self) -> list[DeliveryRecord]:
        return [record for _, record in self.numbered()]

    def numbered(self, delivery_id: int | None = None) -> list[tuple[int, DeliveryRecord]]:
        """(row id, record) of every delivery, or of the one with ``delivery_id``."""
        query = sa.select(deliveries).order_by(deliveries.c.id)
        if delivery_id is not None:
            query = query.where(deliveries.c.id == delivery_id)
        with self.engine.connect() as conn:
            return [(r.id, to_record(r)) for r in conn.execute(query).all()]
