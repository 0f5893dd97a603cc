"""Deliver exactly once: claim, upload, confirm, whatever fails in between."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta

from ..ledger.records import (
    LedgerUnavailable,
)
from ..ledger.store import Ledger
from ..policy import Policy
from .allowed import AgreementRefused, check_still_allowed
from .claims import claim_key, release_quietly, slot_recipients
from .confirm import delivery_record
from .planned import Delivery
from .sftp_sessions import Sessions
from .sftp_target import SftpTarget
from .upload import already_on_server, final_path, upload_with_fallback

#: How long a claim keeps other runs out before its attempt is presumed dead (a retry of the same
#: run resumes at once). Longer than any upload; short enough that a crashed run blocks no one
#: for long.
CLAIM_LEASE = timedelta(hours=2)


def deliver(delivery: Delivery, target_for: Callable[[str], SftpTarget], policy: Policy,
            ledger: Ledger, now: datetime, run_id: str, sessions: Sessions | None = None,
            password_for: Callable[[str], str] | None = None) -> Delivery:
    """Claim, upload, confirm: exactly once, whatever fails in between.

    The delivery is claimed in the ledger first; a concurrent run sees the claim and stops, a
    retry of this run resumes it. A retry whose earlier attempt may have renamed the file checks
    the server first and, if the package is there whole, confirms without uploading again. After
    upload and read-back, the ledger row is written in the same transaction that closes the
    claim. If the primary's destination fails permanently, the secondary receives it.
    ``policy`` and ``now`` (the wall clock) are checked again right before upload, and with
    ``password_for`` (a Variable's value) that a rotation since packaging has not made the
    package one its partner cannot open. ``sessions``: the batch's open SFTP sessions
    (default: one of its own per upload)."""
    if delivery.status == "refused":
        raise AgreementRefused(delivery.reason)
    if delivery.status != "packaged":
        return delivery
    check_still_allowed(delivery, policy, now.date(), password_for)
    remote_path = final_path(delivery.destination, delivery.package_path)
    got = ledger.claim(claim_key(delivery), run_id, delivery.package_sha256,
                       delivery.destination, remote_path, now, CLAIM_LEASE)
    if got.outcome == "delivered":
        if got.claim.run_id == run_id and got.claim.notified_at is None:
            # An earlier attempt of this run recorded it, then its batch failed on another
            # delivery: recorded still, so the notice (not yet sent) goes out after this one.
            record = ledger.find(delivery.agreement_id, delivery.round_id, delivery.urgency,
                                 delivery.content_sha256, slot_recipients(delivery))
            return replace(delivery, status="recorded", remote_path=got.claim.remote_path,
                           claim_id=got.claim.id, reason="recorded by an earlier attempt",
                           deadline_met=record.deadline_met if record else None)
        return replace(delivery, status="already_delivered", remote_path=got.claim.remote_path,
                       reason=f"delivered by run {got.claim.run_id}; not sent again")
    if got.outcome == "held":
        return replace(delivery, status="in_progress", reason=(
            f"run {got.claim.run_id} is delivering the same package (claimed "
            f"{got.claim.claimed_at:%Y-%m-%d %H:%M} UTC); that run reports the outcome"))
    claim, done = got.claim, None
    if got.previous is not None:
        done = already_on_server(delivery, got.previous, target_for, sessions)
    if done is None:
        try:
            done, claim = upload_with_fallback(delivery, claim, target_for, ledger,
                                                got.previous, sessions)
        except Exception as exc:
            if not getattr(exc, "final_may_exist", False):  # nothing under the final name:
                # another run need not wait for the lease
                release_quietly(ledger, claim, getattr(exc, "left_at", None), now)
            raise
    record = delivery_record(done, now, run_id)
    try:
        ledger.confirm(claim, record)
    except LedgerUnavailable as exc:
        raise LedgerUnavailable(
            f"{done.remote_path} is on {done.destination}, complete and verified, but not yet "
            f"recorded: {exc}. The retry confirms it without uploading again.") from None
    return replace(done, status="recorded", deadline_met=record.deadline_met, claim_id=claim.id)


def deliver_each(deliveries: Sequence[Delivery], attempt: Callable[[Delivery], Delivery],
                 threads: int) -> Iterator[tuple[Delivery, Delivery | Exception]]:
    """Attempt every delivery of a batch, up to ``threads`` at once; yield each with its outcome
    or the error it raised, in batch order.

    A delivery mostly waits on its partner's server (TCP and SSH handshakes, login, upload,
    read-back: round trips to another continent), so a batch's waits overlap. Exactly-once is
    each attempt's own business (claim, upload, confirm in the ledger), so concurrency changes
    none of it; one delivery's failure stops none of the others. If the caller stops (a task
    timeout), deliveries not yet begun are cancelled and those under way finish and are
    recorded, so no claim is left to wait out its lease."""
    if threads <= 1 or len(deliveries) <= 1:
        for delivery in deliveries:
            try:
                yield delivery, attempt(delivery)
            except Exception as exc:
                yield delivery, exc
        return
    pool = ThreadPoolExecutor(min(threads, len(deliveries)), thread_name_prefix="deliver")
    try:
        futures = [pool.submit(attempt, delivery) for delivery in deliveries]
        for delivery, future in zip(deliveries, futures, strict=True):
            error = future.exception()
            if error is not None and not isinstance(error, Exception):
                raise error  # as the serial loop would: an interrupt is not a delivery's failure
            yield delivery, error if error is not None else future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
