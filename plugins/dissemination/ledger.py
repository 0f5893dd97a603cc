"""The delivery ledger: who received what, when, under which rules, with which hashes.

One row per delivered package. The unique key (agreement, round, urgency, content hash) is what
makes a re-run harmless: the same data is never sent to the same agreement twice. PostgreSQL is
the production ledger; SQLite the embedded default. The schema is managed by migrations
(``ledger_migrations``; ``python -m dissemination ledger upgrade``).

It is also an audit trail: every delivery, password rotation, alert and intake row is chained in
``audit_chain`` by a hash over its content and the previous entry's (HMAC-SHA256 under the
chain key, ``chain.py``), so a row changed, deleted or reordered afterwards is found by
``python -m dissemination ledger verify`` (``audit.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .chain import next_link
from .errors import PermanentError
from .holdings import Held
from .registry_tables import define as _registry_tables

if TYPE_CHECKING:  # (pandas, numpy: not for the Dissemination page's reads)
    from .shown import Shown

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

MAIN_RECIPIENTS = ("primary", "secondary")


class LedgerNeedsUpgrade(PermanentError, RuntimeError):
    """The ledger's schema is not the one this code writes: upgrade it first (never guessed)."""


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


@dataclass(frozen=True)
class DeliverySummary:
    """What the Dissemination page shows of a delivery: a row without its manifest explanation
    (``columns``, most of its bytes) or hashes, so years of history read quickly."""

    agreement_id: str
    recipient: str
    focal_point_name: str
    round_id: str
    country: str
    urgency: str
    delivered_at: datetime
    run_id: str
    row_count: int
    package_name: str
    deadline_met: bool | None


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
class OpenClaim:
    agreement_id: str
    round_id: str
    urgency: str
    slot: str
    run_id: str
    claimed_at: datetime
    lease_until: datetime


@dataclass(frozen=True)
class DeliveryFailure:
    """One failed attempt: ``permanent`` when a retry would fail alike (refused)."""
    agreement_id: str
    round_id: str
    urgency: str
    slot: str
    focal_point_name: str
    run_id: str
    failed_at: datetime
    permanent: bool
    reason: str


@dataclass(frozen=True)
class Rotation:
    id: int
    agreement_id: str
    rotated_at: datetime
    focal_point_to_tell: str
    notified_at: datetime | None
    called_at: datetime | None


def slot_of(recipient: str) -> str:
    """The claim slot a recipient's delivery fills: ``main`` (primary or its secondary) or the
    field focal point's own."""
    return "main" if recipient in MAIN_RECIPIENTS else recipient


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
        """Open a ledger at the current schema; refuses any other (``upgrade`` migrates it)."""
        self.engine = engine
        require_schema(engine)

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
        """Insert a row keyed by its primary key (chained if its table is): True the first
        time, False after."""
        try:
            with self.engine.begin() as conn:
                if table.name in CHAINED:
                    insert_chained(conn, table, values)
                else:
                    conn.execute(table.insert().values(**values))
        except sa.exc.IntegrityError:
            return False
        return True

    @contextmanager
    def _begin(self, conn: sa.Connection | None) -> Iterator[sa.Connection]:
        """The caller's connection (its transaction), or a transaction of our own."""
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as own:
            yield own

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
        return _to_record(row) if row is not None else None

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
                     f"delivered {_utc(at):%Y-%m-%d} under {agreement_id}", agreement_id)
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
        from .shown import Shown

        with self.engine.connect() as conn:
            rows = self.delivered_contents(round_id, conn)
            hashes = list(dict.fromkeys(r[2] for r in rows))
            kept = {k: Shown.from_json(text) for k, text in conn.execute(
                sa.select(tables_shown.c.content_sha256, tables_shown.c.shown)
                .where(tables_shown.c.content_sha256.in_(hashes))).all()} if hashes else {}
        return rows, kept

    def delivered_contents(self, round_id: str, conn=None) -> list[tuple[str, str, str]]:
        """Every delivery of a round, as (organisation id, agreement, content hash)."""
        with nullcontext(conn) if conn is not None else self.engine.connect() as c:
            return [tuple(r) for r in c.execute(
                sa.select(deliveries.c.organisation_id, deliveries.c.agreement_id,
                          deliveries.c.content_sha256)
                .where(deliveries.c.round_id == round_id).order_by(deliveries.c.id)).all()]

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
            return [Rotation(r.id, r.agreement_id, _utc(r.rotated_at), r.focal_point_to_tell,
                             _utc_or_none(r.notified_at), _utc_or_none(r.called_at))
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
                with self._writing("claim the delivery") as conn:
                    conn.execute(delivery_claims.insert().values(
                        **asdict(key), state="claimed", **mine))
                    return ClaimResult("new", _claim_of(conn.execute(
                        sa.select(delivery_claims).where(where)).one()))
            except sa.exc.IntegrityError:
                pass
            with self._reading("read the delivery's claim") as conn:
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
            return [(r.destination, r.remote_path, _utc(r.left_at)) for r in conn.execute(
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
            return [_claim_of(r) for r in conn.execute(
                sa.select(delivery_claims).order_by(delivery_claims.c.id))]

    def open_claims(self) -> list[OpenClaim]:
        """Claims not (yet) delivered, with what they claim: what ``ledger status`` lists."""
        c = delivery_claims.c
        with self.engine.connect() as conn:
            return [OpenClaim(r.agreement_id, r.round_id, r.urgency, r.slot, r.run_id,
                              _utc(r.claimed_at), _utc(r.lease_until))
                    for r in conn.execute(sa.select(delivery_claims).where(c.state == "claimed")
                                          .order_by(c.claimed_at))]

    @contextmanager
    def _writing(self, doing: str):
        """A transaction updating rows others may update too (a claim, a rotation's marks); on
        PostgreSQL with its waits bounded (a row locked by a writer that froze would otherwise
        hold every other writer of it for ever)."""
        with _unavailable_as(doing, self.engine), self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(wait_bounds())
            yield conn

    @contextmanager
    def _reading(self, doing: str):
        with _unavailable_as(doing, self.engine), self.engine.connect() as conn:
            yield conn

    def all(self) -> list[DeliveryRecord]:
        return [record for _, record in self.numbered()]

    def numbered(self, delivery_id: int | None = None) -> list[tuple[int, DeliveryRecord]]:
        """(row id, record) of every delivery, or of the one with ``delivery_id``."""
        query = sa.select(deliveries).order_by(deliveries.c.id)
        if delivery_id is not None:
            query = query.where(deliveries.c.id == delivery_id)
        with self.engine.connect() as conn:
            return [(r.id, _to_record(r)) for r in conn.execute(query).all()]

    # --- what the Dissemination page reads: a few rows per agreement, whatever the history ----

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
                values[at] = _utc(values[at])
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
            return [DeliveryFailure(**{**r._asdict(), "failed_at": _utc(r.failed_at)})
                    for r in conn.execute(query)]

    def alerts(self, kind: str) -> list[tuple[str, datetime]]:
        """(subject, sent_at) of every alert of ``kind`` raised so far."""
        with self.engine.connect() as conn:
            return [(r.subject, _utc(r.sent_at)) for r in conn.execute(
                sa.select(alerts.c.subject, alerts.c.sent_at).where(alerts.c.kind == kind))]

    def intake(self) -> list[tuple[str, str, str, datetime]]:
        """(round id, country, status, first seen) of every round version the intake saw."""
        c = intake_log.c
        with self.engine.connect() as conn:
            return [(r.round_id, r.country, r.status, _utc(r.seen_at)) for r in conn.execute(
                sa.select(c.round_id, c.country, c.status, c.seen_at).order_by(c.seen_at))]


class ClaimLost(LedgerUnavailable):
    pass


@contextmanager
def _unavailable_as(doing: str, engine: sa.Engine):
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        url = engine.url.render_as_string(hide_password=True)
        if getattr(exc.orig, "pgcode", None) == LOCK_NOT_AVAILABLE:
            raise LedgerUnavailable(
                f"waited {LOCK_WAIT.total_seconds():g} s for a lock of the ledger {url} "
                f"while trying to {doing}: another writer holds it, stuck mid-transaction (its "
                "process stopped?); PostgreSQL ends such a transaction after "
                f"{STUCK_AFTER.total_seconds():g} s idle. Retrying is safe") from None
        raise LedgerUnavailable(
            f"the ledger {url} is unavailable ({type(exc.orig).__name__}) while trying to "
            f"{doing}") from None


LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock wait past lock_timeout


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value  # SQLite drops it


def schema_revision(conn: sa.Connection) -> str | None:
    """The ledger's migration revision; None if it has none (new, or made before migrations)."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def require_schema(engine: sa.Engine) -> None:
    """Raise ``LedgerNeedsUpgrade`` naming the command unless the ledger is at this code's
    schema: writing to an older one would fail half-way or write unchained rows."""
    with engine.connect() as conn:
        found = schema_revision(conn)
    if found != SCHEMA_REVISION:
        url = engine.url.render_as_string(hide_password=True)
        raise LedgerNeedsUpgrade(
            f"the ledger {url} is at schema revision {found or 'none'}, this code needs "
            f"{SCHEMA_REVISION}: back it up, then run python -m dissemination ledger upgrade "
            f"--url '{url}' (the DAGs' first task does it too)")


# --- the hash chain ---------------------------------------------------------------------------


def _canonical(value):
    """One text per value on every backend: datetimes as UTC ISO (SQLite drops the offset)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:  # PostgreSQL's, in the session's time zone
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # SQLite's: naive, stored as UTC
    return value


def row_key(table_name: str, row: Mapping) -> str:
    return json.dumps([row[k] for k in CHAINED[table_name][0]], ensure_ascii=False)


def row_sha256(table_name: str, row: Mapping) -> str:
    """SHA-256 of a row's chained columns (not its surrogate id: the chain entry binds that)."""
    content = {c: _canonical(row[c]) for c in CHAINED[table_name][1]}
    text = json.dumps([table_name, content], sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def chained_select(table: sa.Table) -> sa.Select:
    """Only the key and the chained columns: what a row's hash is over, at any later schema."""
    keys, columns = CHAINED[table.name]
    return sa.select(*(table.c[c] for c in dict.fromkeys(keys + columns)))


def chain_row(conn: sa.Connection, table: sa.Table, key: Iterable) -> int:
    """Append the row of ``table`` with primary key ``key`` to the chain; its sequence number.

    Inside the caller's transaction, after the row's insert: on SQLite that insert already
    holds the single writer lock, on PostgreSQL an advisory lock held to commit serialises
    appenders, so two writers never link to the same head (``seq`` is unique besides). Every
    writer of every run waits for that lock, so both of its waits are bounded (see
    ``LOCK_WAIT``)."""
    if conn.dialect.name == "postgresql":  # the bounds first, in the same round trip
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CHAIN_LOCK))
                     .select_from(wait_bounds().subquery()))
    keys = CHAINED[table.name][0]
    row = conn.execute(chained_select(table).where(
        *(table.c[k] == v for k, v in zip(keys, key, strict=True)))).mappings().one()
    head = conn.execute(sa.select(audit_chain.c.seq, audit_chain.c.chain_sha256)
                        .order_by(audit_chain.c.seq.desc()).limit(1)).first()
    seq, prev = (head.seq + 1, head.chain_sha256) if head else (1, GENESIS)
    text_key, digest = row_key(table.name, row), row_sha256(table.name, row)
    conn.execute(audit_chain.insert().values(  # keyed when a key is given (chain.py)
        seq=seq, table_name=table.name, row_key=text_key, row_sha256=digest, prev_sha256=prev,
        chain_sha256=next_link(conn, ledger_meta, prev, seq, table.name, text_key, digest)))
    return seq


def adopt_unchained(conn: sa.Connection) -> int:
    """Chain every row not chained yet, table by table in key order; how many. The upgrade that
    introduced the chain adopts the rows written before it this way."""
    chained = {(t, k) for t, k in conn.execute(
        sa.select(audit_chain.c.table_name, audit_chain.c.row_key))}
    adopted, present = 0, set(sa.inspect(conn).get_table_names())
    for name, (keys, _) in CHAINED.items():
        if name not in present:  # made by a later revision: nothing of it to adopt
            continue
        table = metadata.tables[name]
        for row in conn.execute(sa.select(*(table.c[k] for k in keys))
                                .order_by(*(table.c[k] for k in keys))).all():
            if (name, row_key(name, row._mapping)) not in chained:
                chain_row(conn, table, tuple(row))
                adopted += 1
    return adopted


def insert_chained(conn: sa.Connection, table: sa.Table, values: Mapping) -> tuple:
    """Insert a row of a chained table and its chain entry in the caller's transaction; the
    row's primary key (e.g. ``(id,)``). The only way rows enter a chained table."""
    key = tuple(conn.execute(table.insert().values(**values)).inserted_primary_key)
    chain_row(conn, table, key)
    return key


#: pg_advisory_xact_lock key of the chain head (any constant; "ledger" in ASCII).
CHAIN_LOCK = 0x6C6564676572
#: On PostgreSQL, how long a writer waits for a lock before giving up (an error the caller
#: retries): the chain lock every writer needs, or a claim's row. A live writer holds one for
#: milliseconds; one whose process froze mid-transaction (stopped, paused, swapped out), for
#: ever. Such a writer's transaction, idle past ``STUCK_AFTER``, is ended by the server, which
#: frees its locks for everyone else. Both are set by each writer for its own transaction only.
LOCK_WAIT = timedelta(seconds=30)
STUCK_AFTER = timedelta(seconds=60)


def wait_bounds() -> sa.Select:
    """``LOCK_WAIT`` and ``STUCK_AFTER`` for the rest of the transaction (PostgreSQL)."""
    def ms(limit: timedelta) -> str:
        return f"{limit.total_seconds() * 1000:.0f}"

    return sa.select(
        sa.func.set_config("lock_timeout", ms(LOCK_WAIT), True).label("lock_wait"),
        sa.func.set_config("idle_in_transaction_session_timeout", ms(STUCK_AFTER),
                           True).label("stuck_after"))


def _to_record(row) -> DeliveryRecord:
    data = row._asdict()
    data.pop("id")
    for key in ("delivered_at", "deadline"):  # SQLite drops the offset; we only store UTC
        if data[key] is not None and data[key].tzinfo is None:
            data[key] = data[key].replace(tzinfo=UTC)
    return DeliveryRecord(**data)
