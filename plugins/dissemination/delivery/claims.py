"""A delivery's claim in the ledger: its key, its failure, its release."""

from __future__ import annotations

from datetime import datetime

from ..errors import PermanentError
from ..ledger.records import (
    MAIN_RECIPIENTS,
    ClaimKey,
    DeliveryFailure,
    LedgerUnavailable,
    slot_of,
)
from ..ledger.store import Ledger
from .planned import Delivery


def slot_recipients(delivery: Delivery) -> tuple[str, ...]:
    """The recipients one ledger slot covers: the main one (primary or its secondary), or one
    field focal point."""
    return MAIN_RECIPIENTS if delivery.recipient in MAIN_RECIPIENTS else (delivery.recipient,)


def claim_key(delivery: Delivery) -> ClaimKey:
    return ClaimKey(delivery.agreement_id, delivery.round_id, delivery.urgency,
                    slot_of(delivery.recipient), delivery.content_sha256)


def failure_of(delivery: Delivery, run_id: str, now: datetime, exc: BaseException
               ) -> DeliveryFailure:
    """What the ledger keeps of a failed delivery: who, which round, why (the error's text names
    files, fields and rows, never a value), and whether a retry could succeed."""
    return DeliveryFailure(delivery.agreement_id, delivery.round_id, delivery.urgency,
                           slot_of(delivery.recipient), delivery.recipient_name, run_id, now,
                           isinstance(exc, PermanentError), f"{type(exc).__name__}: {exc}")


def release_quietly(ledger: Ledger, claim, partial_left, now: datetime) -> None:
    try:
        ledger.release(claim, partial_left, now)
    except LedgerUnavailable:
        pass  # the lease runs out instead; the upload's own error is what the operator needs
