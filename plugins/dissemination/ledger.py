"""The delivery ledger: who received what, when, under which rules, with which hashes.

One row per delivered package. The unique key (agreement, round, urgency, content hash) is what
makes a re-run harmless: the same data is never sent to the same agreement twice. SQLite is the
embedded default; PostgreSQL works unchanged through SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from .errors import PermanentError
from .holdings import Held

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

MAIN_RECIPIENTS = ("primary", "secondary")


class LedgerNotInitialised(PermanentError, RuntimeError):
    """A ledger without its initialisation marker is new or was wiped: it cannot tell what
    partners already hold, so nothing is planned from it until an operator says why."""


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
    organisation_id: str | None = None

    @staticmethod
    def columns_json(columns: list[dict]) -> str:
        return json.dumps(columns, sort_keys=True)


# --- claim, upload, confirm ----------------------------------------------------------------------


class LedgerUnavailable(RuntimeError):
    """The ledger database could not be reached or written: retryable. The message names the
    step and what is safe, never the database's own text (it may quote row values)."""


@dataclass(frozen=True)
class ClaimKey:
    agreement_id: str
    round_id: str
    urgency: str
    slot: str  # "main" or "field:<name>"
    content_sha256: str


@dataclass(frozen=True)
class Claim:
    id: int
    attempt: str
    state: str
    run_id: str
    package_sha256: str
    destination: str
    remote_path: str
    claimed_at: datetime
    lease_until: datetime
    delivery_id: int | None = None
    notified_at: datetime | None = None


@dataclass(frozen=True)
class ClaimResult:
    """``new``, ``resumed`` (this run's earlier attempt), ``taken_over`` (another run's attempt
    whose lease ran out), ``held`` (another run's live attempt) or ``delivered``. ``previous``:
    the claim as the earlier attempt left it, which a retry checks on the server first."""

    outcome: str
    claim: Claim
    previous: Claim | None = None

    @property
    def ours(self) -> bool:
        return self.outcome in ("new", "resumed", "taken_over")


def _claim_of(row) -> Claim:
    data = {k: getattr(row, k) for k in Claim.__dataclass_fields__}
    for key in ("claimed_at", "lease_until", "notified_at"):
        if data[key] is not None:
            data[key] = _utc(data[key])
    return Claim(**data)


def _new_attempt() -> str:
    import secrets

    return secrets.token_hex(16)


class Ledger:
    def __init__(self, engine: sa.Engine):
        self.engine = engine
        metadata.create_all(engine)
        _add_missing_columns(engine)

    # --- initialisation ----------------------------------------------------------------------

    def initialised(self) -> tuple[str, datetime] | None:
        """(how, when) the ledger was initialised, or None for a new or wiped ledger."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(ledger_meta.c.value, ledger_meta.c.at)
                               .where(ledger_meta.c.key == INITIALISED)).first()
        return None if row is None else (row.value, _utc(row.at))

    def initialise(self, reason: str, now: datetime) -> bool:
        """Declare a fresh start (or adopt the rows already here): recorded once, with why.
        False if the ledger was already initialised."""
        with self.engine.connect() as conn:
            existing = conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar()
        how = f"{reason} ({existing} earlier deliveries adopted)" if existing else reason
        return self._insert_once(ledger_meta, key=INITIALISED, value=how, at=now)

    def _insert_once(self, table: sa.Table, **values) -> bool:
        """Insert a row keyed by its primary key: True the first time, False after."""
        try:
            with self.engine.begin() as conn:
                conn.execute(table.insert().values(**values))
        except sa.exc.IntegrityError:
            return False
        return True

    def require_initialised(self) -> None:
        if self.initialised() is None:
            url = self.engine.url.render_as_string(hide_password=True)
            raise LedgerNotInitialised(
                f"the ledger {url} has no initialisation marker: it is new or was wiped, so "
                "it cannot tell what partners already hold and every check against their "
                "history would pass silently. Restore it from backup; or, if this really is "
                "a fresh start, declare it: python -m dissemination ledger init --url "
                f"'{url}' --fresh-start 'why'")

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
                     f"delivered {_utc(at):%Y-%m-%d} under {agreement_id}", agreement_id)
                for level, columns, round_id, agreement_id, at in rows
                for c in json.loads(columns) if c.get("source")]

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

    # --- claim, upload, confirm --------------------------------------------------------------

    def claim(self, key: ClaimKey, run_id: str, package_sha256: str, destination: str,
              remote_path: str, now: datetime, lease: timedelta) -> ClaimResult:
        """Claim a delivery before uploading it: exactly one attempt holds a claim at a time.

        A retry of the same run resumes its claim; another run takes it over only once its
        lease has run out (the attempt holding it is presumed dead), otherwise sees it held."""
        mine = {"attempt": _new_attempt(), "run_id": run_id, "package_sha256": package_sha256,
                "destination": destination, "remote_path": remote_path, "claimed_at": now,
                "lease_until": now + lease}
        where = sa.and_(*(delivery_claims.c[k] == v for k, v in asdict(key).items()))
        for _ in range(5):  # lost races re-read; more than a few means something is wrong
            try:
                with self._begin("claim the delivery") as conn:
                    conn.execute(delivery_claims.insert().values(
                        **asdict(key), state="claimed", **mine))
                    return ClaimResult("new", _claim_of(conn.execute(
                        sa.select(delivery_claims).where(where)).one()))
            except sa.exc.IntegrityError:
                pass
            with self._connect("read the delivery's claim") as conn:
                row = conn.execute(sa.select(delivery_claims).where(where)).first()
            if row is None:
                continue  # released in between: claim it afresh
            previous = _claim_of(row)
            if previous.state == "delivered":
                return ClaimResult("delivered", previous)
            if previous.run_id == run_id:
                outcome = "resumed"
            elif previous.lease_until <= now:
                outcome = "taken_over"
            else:
                return ClaimResult("held", previous)
            with self._begin("take over the delivery's claim") as conn:
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
        with self._begin("record the fallback destination in the claim") as conn:
            conn.execute(delivery_claims.update().where(
                delivery_claims.c.id == claim.id, delivery_claims.c.attempt == claim.attempt)
                .values(destination=destination, remote_path=remote_path))
        return replace(claim, destination=destination, remote_path=remote_path)

    def release(self, claim: Claim) -> None:
        """Give a claim up after an attempt that certainly left no file under the final name."""
        with self._begin("release the delivery's claim") as conn:
            conn.execute(delivery_claims.delete().where(
                delivery_claims.c.id == claim.id, delivery_claims.c.attempt == claim.attempt,
                delivery_claims.c.state == "claimed"))

    def confirm(self, claim: Claim, record: DeliveryRecord) -> DeliveryRecord:
        """The uploaded, verified package becomes a delivery: the ledger row and the claim's new
        state are written in one transaction, so neither exists without the other."""
        with self._begin("record the verified delivery") as conn:
            delivery_id = conn.execute(deliveries.insert().values(**asdict(record))
                                       ).inserted_primary_key[0]
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
        with self._begin("record the notice") as conn:
            return conn.execute(delivery_claims.update().where(
                delivery_claims.c.id == claim_id, delivery_claims.c.notified_at.is_(None))
                .values(notified_at=now)).rowcount == 1

    def unmark_notified(self, claim_id: int) -> None:
        """The notice could not be sent: let a retry send it."""
        with self._begin("undo the notice mark") as conn:
            conn.execute(delivery_claims.update().where(delivery_claims.c.id == claim_id)
                         .values(notified_at=None))

    def claims(self) -> list[Claim]:
        with self.engine.connect() as conn:
            return [_claim_of(r) for r in conn.execute(
                sa.select(delivery_claims).order_by(delivery_claims.c.id))]

    @contextmanager
    def _begin(self, doing: str):
        with _unavailable_as(doing, self.engine), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _connect(self, doing: str):
        with _unavailable_as(doing, self.engine), self.engine.connect() as conn:
            yield conn

    def all(self) -> list[DeliveryRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(deliveries).order_by(deliveries.c.id)).all()
        return [_to_record(r) for r in rows]


class ClaimLost(LedgerUnavailable):
    pass


@contextmanager
def _unavailable_as(doing: str, engine: sa.Engine):
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        url = engine.url.render_as_string(hide_password=True)
        raise LedgerUnavailable(
            f"the ledger {url} is unavailable ({type(exc.orig).__name__}) while trying to "
            f"{doing}") from None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value  # SQLite drops it


def _add_missing_columns(engine: sa.Engine) -> None:
    """Add columns that newer code expects to an existing ledger (nullable ones only).

    A stopgap that keeps an existing ledger usable in place until schema migrations exist."""
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                kind = column.type.compile(dialect=engine.dialect)
                with engine.begin() as conn:
                    conn.execute(sa.text(
                        f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def _to_record(row) -> DeliveryRecord:
    data = row._asdict()
    data.pop("id")
    for key in ("delivered_at", "deadline"):  # SQLite drops the offset; we only store UTC
        if data[key] is not None and data[key].tzinfo is None:
            data[key] = data[key].replace(tzinfo=UTC)
    return DeliveryRecord(**data)
