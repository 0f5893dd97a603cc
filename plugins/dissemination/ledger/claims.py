"""The ledger's claims: exactly-once delivery across runs and retries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:  # (pandas, numpy: not for the Dissemination page's reads)
    pass
from .records import (
    Claim,
    ClaimKey,
    ClaimLost,
    ClaimResult,
    DeliveryRecord,
    LedgerUnavailable,
    OpenClaim,
    claim_of,
    new_attempt,
    utc,
)
from .rows import insert_chained
from .tables import deliveries, delivery_claims, partials_left


class Claims:
    """The ledger's claims: exactly-once delivery across runs and retries."""

    engine: sa.Engine

    def claim(self, key: ClaimKey, run_id: str, package_sha256: str, destination: str,
              remote_path: str, now: datetime, lease: timedelta) -> ClaimResult:
        """Claim a delivery before uploading it: exactly one attempt holds a claim at a time.

        A retry of the same run resumes its claim; another run takes it over only once its
        lease has run out (the attempt holding it is presumed dead), otherwise sees it held."""
        mine = {"attempt": new_attempt(), "run_id": run_id, "package_sha256": package_sha256,
                "destination": destination, "remote_path": remote_path, "claimed_at": now,
                "lease_until": now + lease}
        where = sa.and_(*(delivery_claims.c[k] == v for k, v in asdict(key).items()))
        for _ in range(5):  # lost races re-read; more than a few means something is wrong
            try:
                with self._writing("claim the delivery") as conn:
                    conn.execute(delivery_claims.insert().values(
                        **asdict(key), state="claimed", **mine))
                    return ClaimResult("new", claim_of(conn.execute(
                        sa.select(delivery_claims).where(where)).one()))
            except sa.exc.IntegrityError:
                pass
            with self._reading("read the delivery's claim") as conn:
                row = conn.execute(sa.select(delivery_claims).where(where)).first()
            if row is None:
                continue  # released in between: claim it afresh
            previous = claim_of(row)
            if previous.state == "delivered":
                return ClaimResult("delivered", previous)
            if previous.run_id == run_id:
                outcome = "resumed"
            elif previous.lease_until <= now:
                outcome = "taken_over"
            else:
                return ClaimResult("held", previous)
            with self._writing("take over the delivery's claim") as conn:
                taken = conn.execute(delivery_claims.update().where(
                    delivery_claims.c.id == previous.id,
                    delivery_claims.c.attempt == previous.attempt,
                    delivery_claims.c.state == "claimed").values(**mine)).rowcount
            if taken == 1:
                return ClaimResult(outcome, replace(previous, **mine), previous)
        raise LedgerUnavailable(f"could not claim {key.agreement_id}/{key.round_id}: the "
                                "claim kept changing under this attempt; nothing was uploaded")

    def redirect(self, claim: Claim, destination: str, remote_path: str) -> Claim:
        """Record where this attempt now uploads (e.g. the secondary focal point's server)."""
        with self._writing("record the fallback destination in the claim") as conn:
            conn.execute(delivery_claims.update().where(
                delivery_claims.c.id == claim.id, delivery_claims.c.attempt == claim.attempt)
                .values(destination=destination, remote_path=remote_path))
        return replace(claim, destination=destination, remote_path=remote_path)

    def release(self, claim: Claim, partial_left: tuple[str, str] | None = None,
                now: datetime | None = None) -> None:
        """Give a claim up after an attempt that certainly left no file under the final name.

        ``partial_left`` (destination, path): a temporary file the attempt could not remove, kept in
        the same transaction, so that neither the claim nor the file is forgotten: while the
        claim stands, the next attempt looks for it on the server."""
        with self._writing("release the delivery's claim") as conn:
            if partial_left is not None:
                destination, remote_path = partial_left
                conn.execute(partials_left.insert().values(
                    destination=destination, remote_path=remote_path,
                    left_at=now or datetime.now(UTC)))
            conn.execute(delivery_claims.delete().where(
                delivery_claims.c.id == claim.id, delivery_claims.c.attempt == claim.attempt,
                delivery_claims.c.state == "claimed"))

    def partials_left(self, destination: str) -> list[str]:
        """Temporary files attempts left at ``destination`` (``<connection id>:<folder>``)."""
        with self._reading("read the temporary files left at the destination") as conn:
            return sorted(set(conn.execute(sa.select(partials_left.c.remote_path).where(
                partials_left.c.destination == destination)).scalars()))

    def all_partials_left(self) -> list[tuple[str, str, datetime]]:
        """(destination, path, left at) of every temporary file still to remove: what ``ledger
        status`` lists."""
        c = partials_left.c
        with self.engine.connect() as conn:
            return [(r.destination, r.remote_path, utc(r.left_at)) for r in conn.execute(
                sa.select(c.destination, c.remote_path, c.left_at).order_by(c.id))]

    def forget_partials(self, destination: str, paths: Iterable[str]) -> None:
        """The upload removed them (or found them gone)."""
        with self._writing("forget the removed temporary files") as conn:
            conn.execute(partials_left.delete().where(
                partials_left.c.destination == destination,
                partials_left.c.remote_path.in_(list(paths))))

    def confirm(self, claim: Claim, record: DeliveryRecord) -> DeliveryRecord:
        """The uploaded, verified package becomes a delivery: the ledger row and the claim's new
        state are written in one transaction, so neither exists without the other."""
        with self._writing("record the verified delivery") as conn:
            (delivery_id,) = insert_chained(conn, deliveries, asdict(record))
            moved = conn.execute(delivery_claims.update().where(
                delivery_claims.c.id == claim.id, delivery_claims.c.attempt == claim.attempt,
                delivery_claims.c.state == "claimed").values(
                    state="delivered", delivery_id=delivery_id,
                    package_sha256=record.package_sha256, destination=record.destination,
                    remote_path=record.remote_path)).rowcount
            if moved != 1:
                raise ClaimLost(
                    f"the claim on {record.agreement_id}/{record.round_id} passed to another "
                    "attempt during this upload (its lease ran out): the delivery is left to "
                    "that attempt, which finds this file on the server")
        return record

    def mark_notified(self, claim_id: int, now: datetime) -> bool:
        """True for the one caller that gets to send the delivery's notice."""
        with self._writing("record the notice") as conn:
            return conn.execute(delivery_claims.update().where(
                delivery_claims.c.id == claim_id, delivery_claims.c.notified_at.is_(None))
                .values(notified_at=now)).rowcount == 1

    def unmark_notified(self, claim_id: int) -> None:
        """The notice could not be sent: let a retry send it."""
        with self._writing("undo the notice mark") as conn:
            conn.execute(delivery_claims.update().where(delivery_claims.c.id == claim_id)
                         .values(notified_at=None))

    def claims(self) -> list[Claim]:
        with self.engine.connect() as conn:
            return [claim_of(r) for r in conn.execute(
                sa.select(delivery_claims).order_by(delivery_claims.c.id))]

    def open_claims(self) -> list[OpenClaim]:
        """Claims not (yet) delivered, with what they claim: what ``ledger status`` lists."""
        c = delivery_claims.c
        with self.engine.connect() as conn:
            return [OpenClaim(r.agreement_id, r.round_id, r.urgency, r.slot, r.run_id,
                              utc(r.claimed_at), utc(r.lease_until))
                    for r in conn.execute(sa.select(delivery_claims).where(c.state == "claimed")
                                          .order_by(c.claimed_at))]
