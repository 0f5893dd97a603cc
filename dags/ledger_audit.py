"""
### Ledger audit: is the delivery ledger as it was written?

Daily. Recomputes the hash chain over every delivery, password rotation, alert and intake row
of the ledger (what `python -m dissemination ledger verify` does). If a row was changed, deleted,
reordered or slipped in around the chain, DTM's focal points on duty in every country get an
e-mail naming the first bad row (table and key, never a value) and the task fails, so it shows
red. The audit never writes to the ledger. The head it verified is kept in the Airflow Variable
`ledger_audit_anchor`, so the next audit also notices a chain cut short or rewritten, and the
Dissemination page checks only what was chained since (a failure is kept in
`ledger_audit_failed` until an audit passes; the page then verifies the whole chain).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from dissemination_airflow.tasks import default_args


@dag(
    dag_id="ledger_audit",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["dissemination", "security", "monitoring"],
    doc_md=__doc__,
    default_args=default_args(),
)
def ledger_audit():
    @task
    def verify_ledger() -> str:
        """Verify the chain from the last audit's head; alert DTM and fail on the first bad
        row."""
        from dissemination.audit import LedgerAuditFailed, parse_anchor, verify
        from dissemination.notify import ledger_alert
        from dissemination_airflow import (
            LEDGER_DB_CONN_ID,
            audit_anchor,
            current_policy,
            engine,
            keep_audit_anchor,
            keep_audit_failure,
            send,
        )

        ledger, anchor = engine(LEDGER_DB_CONN_ID), audit_anchor()
        result = verify(ledger, parse_anchor(anchor) if anchor else None)
        print(result.line())
        if not result.ok:
            keep_audit_failure(result.line())  # the Dissemination page shows it, red
            policy = current_policy()
            send(ledger_alert(result.finding.line(),
                              ledger.url.render_as_string(hide_password=True),
                              policy.alert_to(*policy.dtm)))
            raise LedgerAuditFailed(result.line())
        keep_audit_anchor(result.anchor)
        return result.line()

    verify_ledger()


ledger_audit()
