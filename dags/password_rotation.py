"""
### Password rotation: each agreement's package password, on its plan

Daily. When an agreement's password is older than `password.rotate_every_days` (or its age is
unknown), a new strong password is generated and stored in the agreement's Airflow Variable, the
rotation is recorded in the ledger with the focal point who must be told, and DTM's focal
point on duty (`include/focal_points/dtm/`) gets an e-mail saying whom to call. The password itself
is never logged, returned, e-mailed or sent with a package.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import dag, task

from dissemination_airflow import (
    LEDGER_DB_CONN_ID,
    current_policy,
    engine,
    send,
    set_password,
    upgrade_ledger,
)
from dissemination_airflow.tasks import default_args

log = logging.getLogger(__name__)


@dag(
    dag_id="password_rotation",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["dissemination", "security"],
    doc_md=__doc__,
    default_args=default_args(),
)
def password_rotation():
    @task
    def rotate_due_passwords(data_interval_end=None) -> list[str]:
        """Rotate what is due; return the agreement ids (never a password)."""
        from dissemination.delivery import rotation_notice
        from dissemination.ledger import Ledger
        from dissemination.runs import rotate_password, rotations_due

        upgrade_ledger()
        now = data_interval_end or pendulum.now("UTC")
        policy, ledger = current_policy(), Ledger(engine(LEDGER_DB_CONN_ID))
        rotated = []
        for agreement in rotations_due(policy, ledger, now):
            who = rotate_password(agreement, policy, ledger, now, set_password)
            log.info(f"rotated the package password of {agreement.id}; tell {who} by phone")
            rotated.append(agreement.id)
        # Told separately, so a mail failure is retried without rotating twice.
        for rotation_id, agreement_id in ledger.unnotified_rotations():
            agreement = policy.agreements[agreement_id]
            send(rotation_notice(agreement, policy.focal_points[agreement.focal_points],
                                 policy.alert_to(*agreement.countries),
                                 policy.organisation_name(agreement)))
            ledger.mark_rotation_notified(rotation_id, pendulum.now("UTC"))
        return rotated

    rotate_due_passwords()


password_rotation()
