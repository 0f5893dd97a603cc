"""
### Ledger audit: is the delivery ledger as it was written?

Daily. Recomputes the chain over every delivery, password rotation, alert and intake row of the
ledger (what `python -m dissemination ledger verify` does), its links keyed with the chain key
(the connection `dissemination_chain_key`). If a row was changed, deleted, reordered or slipped
in around the chain, or a link re-hashed without the key, DTM's focal points on duty in every
country get an e-mail naming the first bad row (table and key, never a value) and the task
fails, so it shows red. The audit never writes to the ledger.

The head it verified is published outside the ledger's trust domain: in an e-mail to the same
focal points, and as a write-once object under `ledger-heads/` in the staging store; the next
audit fails if the ledger no longer holds the newest one (a chain cut short or rewritten). It is
also kept in the Airflow Variable `ledger_audit_anchor`, from which the Dissemination page checks
only what was chained since (a failure is kept in `ledger_audit_failed` until an audit passes;
the page then verifies the whole chain). See docs/ledger-chain.md.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pendulum
from airflow.sdk import dag, task

from dissemination_airflow import (
    LEDGER_DB_CONN_ID,
    audit_anchor,
    chain_key,
    current_policy,
    engine,
    keep_audit_anchor,
    keep_audit_failure,
    send,
)
from dissemination_airflow.tasks import default_args

log = logging.getLogger(__name__)


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
        """Verify the chain against the last heads published; alert DTM and fail on the first
        bad row; publish the head it verified."""
        from dissemination.delivery import ledger_alert, ledger_head
        from dissemination.ledger import LedgerAuditFailed, keyed, parse_anchor, verify
        from dissemination_airflow.store import PublishedHeads

        ledger, anchor = keyed(engine(LEDGER_DB_CONN_ID), chain_key(required=True)), \
            audit_anchor()
        heads = PublishedHeads()
        result = verify(ledger, parse_anchor(anchor) if anchor else None, heads.newest())
        log.info(result.line())
        policy = current_policy()
        where = ledger.url.render_as_string(hide_password=True)
        if not result.ok:
            keep_audit_failure(result.line())  # the Dissemination page shows it, red
            send(ledger_alert(result.finding.line(), where, policy.alert_to(*policy.dtm)))
            raise LedgerAuditFailed(result.line())
        name = heads.publish(result.head(datetime.now(UTC).isoformat(timespec="seconds")))
        keep_audit_anchor(result.anchor)
        send(ledger_head(result.line(), result.anchor, f"{heads.FOLDER}/{name}", where,
                         policy.alert_to(*policy.dtm)))
        return result.line()

    verify_ledger()


ledger_audit()
