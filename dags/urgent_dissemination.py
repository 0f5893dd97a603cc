"""
### Urgent dissemination (medium urgency): a raw partial round -> partners, within the window

Raw partial data, shared **before cleaning** (Table B, medium urgency). The round is validated
with the raw-partial Great Expectations suite (only structural failures block), every column is
classified (IOM Table A; a column no rule covers is Secret, and Secret never leaves), and each
covering agreement receives what its medium tier allows as an AES-256 zip over SFTP (pinned host
key), recorded in the ledger.

Trigger it from the UI form: country, round (empty = the latest partial round), agreements (empty
= every agreement covering the country) and a justification. Passwords come from the agreements'
Airflow Variables and are never logged, returned, or sent with the file.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import dag, task

from dissemination import ROUND_ID_PATTERN
from dissemination_airflow import (
    SURVEY_DB_CONN_ID,
    engine,
    form_param,
    include_dir,
    pick_list,
    policy_choices,
)
from dissemination_airflow.tasks import default_args, disseminate

log = logging.getLogger(__name__)

COUNTRIES, AGREEMENTS = policy_choices()


@dag(
    dag_id="urgent_dissemination",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["dissemination", "medium-urgency"],
    doc_md=__doc__,
    default_args=default_args(),
    params={
        "country": form_param(COUNTRIES[0], type="string", enum=COUNTRIES, title="Country",
                              description="Country whose partial round is shared"),
        "round_id": form_param(None, type=["null", "string"], pattern=ROUND_ID_PATTERN,
                               title="Round",
                               description="Round id, e.g. NGA-R004-partial; empty = the "
                                           "latest partial round of the country"),
        # An array with examples is the UI's pick list (up to PICK_LIST_MAX ids). Not an enum:
        # resolve_request refuses an unknown id, naming the agreements folder.
        "agreements": form_param([], type="array", title="Agreements",
                                 items={"type": "string"}, examples=pick_list(AGREEMENTS),
                                 description="Data-sharing agreements to deliver to, one id "
                                             "per line; empty = every agreement whose medium "
                                             "tier covers the country (Browse -> "
                                             "Dissemination lists them)"),
        "justification": form_param(type="string", minLength=10, title="Justification",
                                    description="Why this dataset is urgent (kept with the run "
                                                "and its log)"),
    },
)
def urgent_dissemination():
    @task(multiple_outputs=True)
    def resolve_request(params: dict) -> dict:
        """Which round, for which agreements, and why: the officer's request, checked."""
        from dissemination import check_round_id

        unknown = sorted(set(params["agreements"]) - set(policy_choices()[1]))
        if unknown:  # before pulling a round: the form lists agreements but does not enforce
            from dissemination.runs import UnknownAgreement

            raise UnknownAgreement(f"trigger form (agreements): no agreement file for {unknown} "
                                   f"in {include_dir() / 'agreements'}")
        if params["round_id"] is not None:  # the form checks it too; conf may bypass forms
            round_id = check_round_id(params["round_id"], "trigger form (round_id)")
        else:  # the survey database's newest partial round (pandas and SQLAlchemy: only here)
            from dissemination.intake import latest_round_id

            round_id = latest_round_id(engine(SURVEY_DB_CONN_ID), params["country"], "partial")
        log.info(f"urgent request for {round_id}: {params['justification']}")
        return {"round_ids": [round_id], "agreements": params["agreements"],
                "country": params["country"]}

    request = resolve_request()
    disseminate(request["round_ids"], "medium", request["agreements"], request["country"])


urgent_dissemination()
