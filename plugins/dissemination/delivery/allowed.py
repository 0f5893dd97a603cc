"""Right before a package leaves: is it still allowed?"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

from ..classification import Urgency
from ..errors import PermanentError
from ..package.archive import opens_with
from ..policy import Policy
from ..policy.lookup import ruleset_for
from .planned import Delivery


class AgreementRefused(PermanentError, RuntimeError):
    """An agreement that covers the round but may not receive it (e.g. expired)."""


class ReviewOverdue(PermanentError, RuntimeError):
    """The country's risk assessment is overdue: the low-urgency path stops until reviewed."""


class PasswordRotated(PermanentError, RuntimeError):
    """The agreement's password changed after its package was made: the partner could not open
    it with the one they are told."""


class PolicyChanged(PermanentError, RuntimeError):
    """The policy files changed after the run planned: its decisions may no longer hold."""


def review_overdue_message(policy: Policy, country: str, today: date) -> str | None:
    ruleset = ruleset_for(policy, country)
    if not ruleset.review_overdue(today):
        return None
    assessed, source = ruleset.risk_assessment, policy.sources.get(f"rules:{country}")
    if assessed.date > today:
        return (f"risk assessment for {country} ({source}) is dated {assessed.date}, after today "
                f"({today}): not made yet, or a typo")
    return (f"risk assessment for {country} ({source}) of {assessed.date} was due for review "
            f"on {assessed.review_due}")


def refusal(policy: Policy, agreement, today: date) -> str:
    """Why an agreement may not receive anything on ``today`` (the wall clock's date), or ""."""
    if agreement.is_active(today):
        return ""
    return (f"agreement {agreement.id} ({policy.sources.get(f'agreement:{agreement.id}')}) is "
            f"valid {agreement.valid_from}..{agreement.valid_until}, not on {today} (checked "
            "against today's date, whatever the run's logical date)")


def check_policy(delivery: Delivery, policy: Policy) -> None:
    """Refuse to act on a plan made under other policy files than the ones loaded now."""
    if delivery.policy_sha256 and delivery.policy_sha256 != policy.content_sha256:
        raise PolicyChanged(
            f"the policy files changed after this run planned {delivery.round_id} -> "
            f"{delivery.agreement_id} (planned under {delivery.policy_sha256[:12]}, now "
            f"{policy.content_sha256[:12]}): its decisions may no longer hold. Nothing was "
            "sent; clear the run from its `plan` task (or trigger a new run) to plan again "
            "under the new policy")


def check_still_allowed(delivery: Delivery, policy: Policy, today: date,
                        password_for: Callable[[str], str] | None = None) -> None:
    """Right before upload: same policy, agreement still valid, review not overdue (low), and
    (with ``password_for``) the package opens with the agreement's password as it is now."""
    check_policy(delivery, policy)
    variable = policy.agreements[delivery.agreement_id].password.variable
    if password_for is not None and not opens_with(Path(delivery.package_path),
                                                   password_for(variable)):
        raise PasswordRotated(
            f"not uploaded: the package password of agreement {delivery.agreement_id} (Variable "
            f"{variable}) changed after {Path(delivery.package_path).name} was made (a "
            "rotation): it would reach the partner locked with the old one. Clear the run from "
            "`package` to make it again")
    reason = refusal(policy, policy.agreements[delivery.agreement_id], today)
    if reason:
        raise AgreementRefused(f"not uploaded: {reason}")
    overdue = review_overdue_message(policy, delivery.country, today)
    if overdue and delivery.urgency == Urgency.LOW.value:
        raise ReviewOverdue(f"not uploaded: {overdue}: the low-urgency path stops until it is "
                            "reviewed")
