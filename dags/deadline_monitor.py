"""
### Deadline monitor: urgent deliveries at risk of missing their window

Every 30 minutes, for each partial round of the last week and each agreement whose medium tier
covers its country: the window (e.g. 48 hours from collection) is met, pending, **at risk** (less
than a quarter left and not delivered) or **missed**. At risk and missed raise one e-mail to
DTM's focal point on duty in the round's country (never repeated), and a newly missed window fails
this task, so it shows red in the UI. Deliveries themselves record met/missed in the ledger. It also
removes the staging of failed runs once its retention has passed
(`DISSEMINATION_STAGING_RETENTION_HOURS`).

(Airflow 3.3's Deadline Alerts cannot be tested with `dags test`, apache/airflow#73428: this
monitor is the equivalent, and is tested.)
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from dissemination_airflow import (
    LEDGER_DB_CONN_ID,
    SURVEY_DB_CONN_ID,
    current_policy,
    engine,
    send,
    upgrade_ledger,
)
from dissemination_airflow.tasks import default_args, sweep_staging

log = logging.getLogger(__name__)


@dag(
    dag_id="deadline_monitor",
    schedule="*/30 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["dissemination", "medium-urgency", "monitoring"],
    doc_md=__doc__,
    default_args=default_args(),
)
def deadline_monitor():
    @task
    def check_deadlines(data_interval_end=None) -> dict:
        """Compare every recent partial round with its agreements' windows; alert once."""
        from dissemination.delivery import deadline_alert
        from dissemination.intake import read_meta, round_ids_between
        from dissemination.ledger import Ledger
        from dissemination.runs import DeadlinesMissed, deadline_states

        upgrade_ledger()
        now = data_interval_end or pendulum.now("UTC")
        survey, ledger = engine(SURVEY_DB_CONN_ID), Ledger(engine(LEDGER_DB_CONN_ID))
        metas = [read_meta(survey, r) for r in
                 round_ids_between(survey, "partial", now - timedelta(days=7), now)]
        policy = current_policy()
        states = deadline_states(policy, metas, ledger, now)
        for s in states:
            log.info(f"{s.state:8s} {s.round_id} -> {s.agreement_id}: {s.deadline:%Y-%m-%d %H:%M} "
                     f"UTC; {s.detail}")
        new = [s for s in states if s.state in ("at_risk", "missed")
               and ledger.alert_once(s.state, f"{s.round_id}/{s.agreement_id}", now)]
        for country in sorted({s.country for s in new}):  # each to that country's DTM
            send(deadline_alert([s for s in new if s.country == country],
                                policy.alert_to(country)))
        missed = [s for s in new if s.state == "missed"]
        if missed:
            raise DeadlinesMissed(missed)
        return {s.state: sum(1 for x in states if x.state == s.state) for s in states}

    check_deadlines()
    sweep_staging()  # independent: a failing check does not keep old staging on disk


deadline_monitor()
