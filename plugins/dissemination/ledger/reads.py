"""The ledger's reads for the Dissemination page."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:  # (pandas, numpy: not for the Dissemination page's reads)
    pass
from .records import DeliverySummary, utc
from .tables import deliveries


class PageReads:
    """The ledger's reads for the Dissemination page."""

    engine: sa.Engine

    def latest(self, country: str | None = None) -> list[tuple[int, DeliverySummary]]:
        """(row id, summary) of the newest delivery to each recipient of each agreement,
        country and urgency (of one country), in id order; two at the same instant are both
        read."""
        d = deliveries.c
        key = (d.country, d.agreement_id, d.urgency, d.recipient)
        newest = sa.select(*key, sa.func.max(d.delivered_at).label("at")).group_by(*key)
        if country is not None:
            newest = newest.where(d.country == country)
        newest = newest.subquery()
        names = [f.name for f in fields(DeliverySummary)]
        query = sa.select(d.id, *(d[n] for n in names)).join(newest, sa.and_(
            *(c == newest.c[c.name] for c in key), d.delivered_at == newest.c.at)
        ).order_by(d.id)
        at = names.index("delivered_at")
        out = []
        with self.engine.connect() as conn:
            for delivery_id, *values in conn.execute(query):
                values[at] = utc(values[at])
                out.append((delivery_id, DeliverySummary(*values)))
        return out

    def windows(self, country: str | None = None) -> dict[tuple[str, str], tuple[int, int]]:
        """(agreement id, country) -> how many rounds a medium delivery reached within the
        window, and how many only after it."""
        d = deliveries.c
        per_round = sa.select(
            d.agreement_id, d.country,
            sa.func.max(sa.case((d.deadline_met, 1), else_=0)).label("met"),
            sa.func.max(sa.case((sa.not_(d.deadline_met), 1), else_=0)).label("late"),
        ).where(d.urgency == "medium").group_by(d.country, d.agreement_id, d.round_id)
        if country is not None:
            per_round = per_round.where(d.country == country)
        r = per_round.subquery()
        query = sa.select(r.c.agreement_id, r.c.country, sa.func.sum(r.c.met),
                          sa.func.sum(sa.case(((r.c.met == 0) & (r.c.late == 1), 1), else_=0))
                          ).group_by(r.c.agreement_id, r.c.country)
        with self.engine.connect() as conn:
            return {(a, c): (int(met), int(late)) for a, c, met, late in conn.execute(query)}

    def rounds_delivered(self, round_ids: Iterable[str]) -> dict[tuple[str, str], bool]:
        """(agreement id, round id) -> whether a window was judged, for each medium delivery
        of these rounds (a few: those owed now, those whose window was missed)."""
        d = deliveries.c
        judged = sa.func.max(sa.case((d.deadline_met.is_not(None), 1), else_=0))
        query = sa.select(d.agreement_id, d.round_id, judged).where(
            d.round_id.in_(sorted(set(round_ids))), d.urgency == "medium"
        ).group_by(d.round_id, d.agreement_id)
        with self.engine.connect() as conn:
            return {(a, r): bool(j) for a, r, j in conn.execute(query)}
