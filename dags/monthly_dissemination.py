"""
### Monthly dissemination (low urgency): the cleaned rounds of the month -> partners

Cleaned data, shared on a schedule (Table B, low urgency). Each run takes the cleaned rounds
collected in its data interval (one calendar month), validates them with the stricter cleaned
Great Expectations suite (any failure stops that round, the others go on), stops a country whose
risk assessment review is overdue, and delivers to every agreement whose low tier covers the
country. Re-running a month delivers nothing twice: the ledger knows what each agreement has.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, task

from dissemination_airflow import SURVEY_DB_CONN_ID, engine
from dissemination_airflow.tasks import default_args, disseminate

log = logging.getLogger(__name__)


@dag(
    dag_id="monthly_dissemination",
    # One calendar month per run (data interval), run when the month is over.
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["dissemination", "low-urgency"],
    doc_md=__doc__,
    default_args=default_args(),
)
def monthly_dissemination():
    @task
    def find_rounds(data_interval_start=None, data_interval_end=None) -> list[str]:
        """Cleaned rounds collected in this run's month."""
        from dissemination.intake import round_ids_between

        ids = round_ids_between(engine(SURVEY_DB_CONN_ID), "cleaned", data_interval_start,
                                data_interval_end)
        log.info(f"{len(ids)} cleaned round(s) collected in "
                 f"[{data_interval_start}, {data_interval_end}): {ids}")
        return ids

    disseminate(find_rounds(), "low")


monthly_dissemination()
