"""Package passwords: which are due for rotation, and rotating them."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from ..ledger.store import Ledger
from ..policy import Policy


def rotations_due(policy: Policy, ledger: Ledger, now: datetime) -> list:
    """Agreements whose package password is older than their plan allows (or never rotated by
    the pipeline: an unknown age counts as due)."""
    due = []
    for agreement in sorted(policy.agreements.values(), key=lambda a: a.id):
        last = ledger.last_rotation(agreement.id)
        if last is None or now - last >= timedelta(days=agreement.password.rotate_every_days):
            due.append(agreement)
    return due


def rotate_password(agreement, policy: Policy, ledger: Ledger, now: datetime,
                    store: Callable[[str, str], None]) -> str:
    """Generate and store a new strong password; record who must be told, by phone.

    Returns the names of the focal points to tell, never the password.
    """
    people = policy.focal_points[agreement.focal_points]
    store(agreement.password.variable, new_password())
    holders = people.password_holders()  # (only the primary was named: on leave, the
    # secondary opening the packages was never told)
    who = "; ".join(f"{p.name} ({p.mobile})" for p in holders)
    if len(who) > 200:  # the ledger's column: names alone, then as many as fit
        who = "; ".join(p.name for p in holders)
        who = who if len(who) <= 200 else who[:197] + "..."
    ledger.record_rotation(agreement.id, agreement.password.variable, now, who)
    return who


def new_password() -> str:
    """A strong package password: 24 URL-safe characters (~143 bits)."""
    return secrets.token_urlsafe(18)
