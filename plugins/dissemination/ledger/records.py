"""What the ledger's rows mean, as plain values."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..errors import PermanentError

if TYPE_CHECKING:  # (pandas, numpy: not for the Dissemination page's reads)
    pass

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


def claim_of(row) -> Claim:
    data = {k: getattr(row, k) for k in Claim.__dataclass_fields__}
    for key in ("claimed_at", "lease_until", "notified_at"):
        if data[key] is not None:
            data[key] = utc(data[key])
    return Claim(**data)


def new_attempt() -> str:
    return secrets.token_hex(16)


class ClaimLost(LedgerUnavailable):
    pass


def to_record(row) -> DeliveryRecord:
    data = row._asdict()
    data.pop("id")
    for key in ("delivered_at", "deadline"):  # SQLite drops the offset; we only store UTC
        if data[key] is not None and data[key].tzinfo is None:
            data[key] = data[key].replace(tzinfo=UTC)
    return DeliveryRecord(**data)

def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)



def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value  # SQLite drops it
