"""
### Round intake: fresh survey rounds in, routed by urgency

Every few minutes: rounds dropped as files (CSV/XLSX in the drop folder) are loaded into the survey
database; then every round exported since the last intake (a watermark) whose content is new is
registered. Partial (raw) rounds start the **medium-urgency** path at once: one
`urgent_dissemination` run per round, with an automatic justification. Urgent-action signals named
by the rules (e.g. more than 10 unaccompanied children at a site, or a jump since the previous
round) alert DTM's focal point on duty and start the medium path for the agreements covering them,
even for a cleaned round. Other cleaned rounds wait for the **monthly** run. A corrected re-export
of a round (same id, new content) is routed again and says so; an unchanged re-export is ignored.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from dissemination_airflow import (
    LEDGER_DB_CONN_ID,
    SURVEY_DB_CONN_ID,
    current_policy,
    drop_dir,
    engine,
    send,
    upgrade_ledger,
)
from dissemination_airflow.tasks import default_args

log = logging.getLogger(__name__)


@dag(
    dag_id="round_intake",
    schedule=os.environ.get("DISSEMINATION_INTAKE_SCHEDULE", "*/15 * * * *"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["dissemination", "intake"],
    doc_md=__doc__,
    default_args=default_args(),
)
def round_intake():
    @task
    def import_file_drop() -> list[str]:
        """CSV/XLSX exports in the drop folder, checked against their country's contract ->
        survey database (Secret columns dropped unread); any file that fails -> rejected/."""
        from dissemination.intake import import_drop

        return import_drop(drop_dir(), engine(SURVEY_DB_CONN_ID), pendulum.now("UTC"),
                           current_policy())

    @task
    def find_new_rounds() -> list[dict]:
        """Rounds exported since the watermark whose content was never seen."""
        from dissemination.intake import new_rounds

        upgrade_ledger()  # the first task that writes the ledger
        found = new_rounds(engine(SURVEY_DB_CONN_ID), engine(LEDGER_DB_CONN_ID),
                           pendulum.now("UTC"))
        for r in found:
            log.info(f"new: {r.round_id} ({r.status}) v{r.version}"
                     + (f", corrects content {r.replaces[:12]}" if r.corrected else ""))
        return [{**asdict(r), "corrected": r.corrected} for r in found]

    @task
    def detect_signals(new: list[dict]) -> list[dict]:
        """Urgent-action signals the rules name (thresholds, jumps since the previous round):
        alert DTM's focal point and start the medium path for the agreements covering them."""
        from dissemination.intake import signal_new_rounds

        return signal_new_rounds(engine(SURVEY_DB_CONN_ID), current_policy(), new, send)

    @task.branch
    def route(new: list[dict], signalled: list[dict]) -> list[str]:
        """partial (or signalled) -> medium-urgency path now; cleaned -> the monthly run."""
        routes = []
        if any(r["status"] == "partial" for r in new) or any(s["agreements"] for s in signalled):
            routes.append("urgent_requests")
        if any(r["status"] == "cleaned" for r in new):
            routes.append("queue_for_monthly")
        return routes or ["nothing_new"]

    @task
    def urgent_requests(new: list[dict], signalled: list[dict]) -> list[dict]:
        """One trigger-form request per partial round (and per cleaned round with an urgent
        signal, for the agreements covering it), as an officer would fill it in."""
        signals = {s["round_id"]: s for s in signalled}
        requests = []
        for r in new:
            signal = signals.get(r["round_id"])
            if r["status"] == "partial":
                agreements, why = [], (
                    f"automatic: corrected re-export v{r['version']} of {r['round_id']} "
                    f"(replaces content {r['replaces'][:12]})" if r["corrected"]
                    else f"automatic: partial round {r['round_id']} arrived")
            elif signal and signal["agreements"]:
                agreements = signal["agreements"]
                why = f"automatic: urgent signal {', '.join(signal['signals'])}"
            else:
                continue
            requests.append({"country": r["country"], "round_id": r["round_id"],
                             "agreements": agreements, "justification": why})
        return requests

    @task
    def queue_for_monthly(new: list[dict]) -> None:
        """Cleaned rounds are shared by the next monthly run of their collection month."""
        for r in new:
            if r["status"] == "cleaned":
                log.info(f"{r['round_id']} v{r['version']}: waits for monthly_dissemination")

    new = find_new_rounds()
    import_file_drop() >> new
    signalled = detect_signals(new)
    requests = urgent_requests(new, signalled)
    route(new, signalled) >> [requests, queue_for_monthly(new),
                              EmptyOperator(task_id="nothing_new")]
    TriggerDagRunOperator.partial(
        task_id="trigger_urgent", trigger_dag_id="urgent_dissemination",
    ).expand(conf=requests)


round_intake()
