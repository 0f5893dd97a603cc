"""TaskFlow tasks shared by the dissemination DAGs: each is a thin call into the domain.

Both paths run the same chain on a list of rounds: pull -> validate -> plan -> package ->
deliver (claim, upload, confirm; mapped per recipient) -> notify (mapped) -> finish. Only how the rounds are found and
the urgency differ, and those live in the DAG files. Heavy imports stay inside the functions.
"""

from __future__ import annotations

from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule, get_current_context, task

# Network hiccups are retried; a wrong host key, a bad round or a policy problem fails at once.
RETRY_POLICY = ExceptionRetryPolicy(rules=[
    RetryRule(exception="dissemination.errors.PermanentError", action=RetryAction.FAIL,
              reason="permanent: fix the data, policy or connection, then clear the task"),
])


def default_args() -> dict:
    """Two retries, a minute apart (``DISSEMINATION_RETRY_DELAY_SECONDS``): a cut connection or
    a ledger restart; permanent errors fail at once."""
    import os

    import pendulum

    delay = int(os.environ.get("DISSEMINATION_RETRY_DELAY_SECONDS", "60"))
    return {"retries": 2, "retry_delay": pendulum.duration(seconds=delay),
            "retry_policy": RETRY_POLICY}


@task
def pull_rounds(round_ids: list[str], run_id: str, country: str | None = None) -> list[dict]:
    """Read each round from the survey database once; check every value against the country's
    contract and stage it without Secret columns. A round that breaks its contract (or has no
    rule set) is blocked here, on every path; the others go on."""
    from dissemination.contract import ContractBroken
    from dissemination.policy import load_policy
    from dissemination.source import read_round
    from dissemination.staging import staged_round_path
    from dissemination.steps import NoRuleSet, stage_round

    from . import SURVEY_DB_CONN_ID, engine, include_dir, staging_dir, upgrade_ledger

    upgrade_ledger()  # the chain's first task: the ledger at this code's schema
    survey, policy = engine(SURVEY_DB_CONN_ID), load_policy(include_dir())
    staged = []
    for round_id in round_ids:
        meta, df = read_round(survey, round_id, country=country)
        try:
            staged.append(stage_round(meta, df, policy,
                                      staged_round_path(staging_dir(run_id), round_id)))
        except (ContractBroken, NoRuleSet) as exc:
            print(f"BLOCKED {exc}")
            staged.append({"round_id": round_id, "blocked": str(exc)})
            continue
        print(f"round {round_id} ({meta.status}): {len(df)} sites, {df.shape[1]} columns")
    return staged


@task(multiple_outputs=True)
def validate_rounds(rounds: list[dict], urgency: str, run_id: str) -> dict:
    """Great Expectations per round, with Data Docs; a failing round stops here, the others go
    on."""
    import pandas as pd

    from dissemination.classification import Urgency
    from dissemination.policy import load_policy
    from dissemination.steps import ruleset_for
    from dissemination.validation import validate_round

    from . import data_docs_dir, include_dir

    policy = load_policy(include_dir())
    passed, failed = [], []
    for round_ in rounds:
        if "blocked" in round_:  # broke its contract: never validated, never shared
            failed.append({"round_id": round_["round_id"], "summary": round_["blocked"]})
            continue
        ruleset = ruleset_for(policy, round_["country"])
        report = validate_round(pd.read_parquet(round_["path"]), ruleset, round_["status"],
                                docs_dir=data_docs_dir())
        print(report.summary())
        if report.blocks(Urgency(urgency)):
            failed.append({"round_id": round_["round_id"], "summary": report.summary()})
        else:
            warnings = [f"validation ({report.suite}): {f}" for f in report.failures]
            passed.append({**round_, "validation_warnings": warnings})
    return {"passed": passed, "failed": failed}


@task(multiple_outputs=True, show_return_value_in_logs=False)  # logged readably instead
def plan(rounds: list[dict], urgency: str, agreements: list[str] | None = None) -> dict:
    """Classify each round once, then select per covering agreement (names, never values).

    Each organisation is judged on everything it holds: the ledger plus what this task has
    planned for it so far, across rounds and agreements. Dates are checked against the wall
    clock. A country whose risk assessment review is overdue stops here on the low-urgency path.
    """
    import pendulum

    from dissemination.classification import Urgency
    from dissemination.holdings import DisclosureState
    from dissemination.ledger import Ledger
    from dissemination.policy import load_policy
    from dissemination.source import RoundMeta
    from dissemination.steps import ReviewOverdue, plan_deliveries

    from . import LEDGER_DB_CONN_ID, engine, include_dir

    policy = load_policy(include_dir())
    ledger = Ledger(engine(LEDGER_DB_CONN_ID))
    ledger.require_initialised()
    state = DisclosureState(
        lambda org, country: ledger.holdings(org, policy.agreements_of(org), country))
    today = pendulum.now("UTC").date()
    plans, stopped = [], []
    for round_ in rounds:
        try:
            plans += plan_deliveries(
                policy, RoundMeta.from_xcom(round_), round_["columns"], Urgency(urgency),
                today=today, only=agreements or (),
                active=round_["active_relational"], state=state,
                warnings=round_.get("validation_warnings", ()),
            )
        except ReviewOverdue as exc:
            print(f"STOPPED {round_['round_id']}: {exc}")
            stopped.append({"round_id": round_["round_id"], "summary": str(exc)})
    for p in plans:
        for warning in p.warnings:
            print(f"WARNING {p.round_id}: {warning}")
        print(f"{p.round_id} -> {p.organisation} [{p.agreement_id}]: {p.status} {p.reason}")
        print("  " + "\n  ".join(p.explanation))
    return {"deliveries": [p.to_xcom() for p in plans], "stopped": stopped}


@task(show_return_value_in_logs=False)
def package(rounds: list[dict], plans: list[dict]) -> list[dict]:
    """One AES-256 zip per agreement and round, reading each round once."""
    from pathlib import Path

    import pandas as pd
    import pendulum

    from dissemination.ledger import Ledger
    from dissemination.policy import load_policy
    from dissemination.source import RoundMeta
    from dissemination.steps import Delivery, package_deliveries

    from . import LEDGER_DB_CONN_ID, engine, include_dir, package_password

    policy, ledger = load_policy(include_dir()), Ledger(engine(LEDGER_DB_CONN_ID))
    out = []
    for round_ in rounds:
        mine = [Delivery.from_xcom(p) for p in plans if p["round_id"] == round_["round_id"]]
        if not mine:
            continue
        out += package_deliveries(
            pd.read_parquet(round_["path"]), RoundMeta.from_xcom(round_), mine, policy,
            Path(round_["path"]).parent, package_password, ledger, pendulum.now("UTC"),
        )
    for d in out:
        print(f"{d.round_id} -> {d.organisation}: {d.status} {d.package_path or d.reason}")
        print("  " + "\n  ".join(d.explanation))
    return [d.to_xcom() for d in out]


@task(map_index_template="{{ organisation }}", show_return_value_in_logs=False)
def deliver(delivery: dict, run_id: str) -> dict:
    """Claim, upload, confirm: the delivery is claimed in the ledger, uploaded under a temporary
    name (pinned host key), renamed, read back, and recorded with the claim's closing, so a
    retry, a crash or a concurrent run never sends it twice. The agreement's validity and the
    policy's hash are checked again right before."""
    import pendulum

    from dissemination import steps
    from dissemination.ledger import Ledger
    from dissemination.policy import load_policy

    from . import LEDGER_DB_CONN_ID, engine, include_dir, sftp_target

    d = steps.Delivery.from_xcom(delivery)
    get_current_context()["organisation"] = _label(d)
    done = steps.deliver(d, sftp_target, load_policy(include_dir()),
                         Ledger(engine(LEDGER_DB_CONN_ID)), pendulum.now("UTC"), run_id)
    print(f"{_label(d)}: {done.status} to {done.recipient} {done.recipient_name}: "
          f"{done.remote_path} {done.reason}")
    return done.to_xcom()


@task(map_index_template="{{ organisation }}", show_return_value_in_logs=False)
def notify(delivery: dict) -> None:
    """Tell the focal point that data arrived (never the password), once per delivery; tell
    DTM's focal point if the agreement's window was missed."""
    import pendulum

    from dissemination import notify as notices
    from dissemination import steps
    from dissemination.ledger import Ledger
    from dissemination.policy import load_policy

    from . import LEDGER_DB_CONN_ID, engine, include_dir, send

    d = steps.Delivery.from_xcom(delivery)
    get_current_context()["organisation"] = _label(d)
    if d.status != "recorded":
        print(f"{_label(d)}: {d.status}, nothing to announce")
        return
    policy, ledger, now = load_policy(include_dir()), Ledger(engine(LEDGER_DB_CONN_ID)), \
        pendulum.now("UTC")
    if not ledger.mark_notified(d.claim_id, now):
        print(f"{_label(d)}: notice already sent")
    else:
        try:
            send(notices.delivery_notice(d, policy.dtm[d.country].on_duty()))
        except BaseException:
            ledger.unmark_notified(d.claim_id)  # not sent: the retry sends it
            raise
    if d.deadline_met is False:
        print(f"ERROR {_label(d)}: delivered after the window ended at {d.deadline}")
        if ledger.alert_once("missed", f"{d.round_id}/{d.agreement_id}", now):
            state = steps.DeadlineState(d.round_id, d.country, d.agreement_id,
                                        pendulum.parse(d.deadline), "missed",
                                        f"delivered late to {d.recipient_name}")
            send(notices.deadline_alert([state], policy.alert_to(d.country)))


def _label(d) -> str:
    """The map index shown in the UI: organisation, agreement, round, and who receives it."""
    from dissemination.ledger import MAIN_RECIPIENTS

    who = "" if d.recipient in MAIN_RECIPIENTS else f" -> {d.recipient_name}"
    return f"{d.organisation}, {d.agreement_id} ({d.round_id}){who}"


@task(trigger_rule="none_failed")
def finish(invalid: list[dict], stopped: list[dict], run_id: str) -> None:
    """Remove the run's staging once every delivery is recorded; report rounds that stopped.

    A run whose delivery failed keeps its staging, so clearing the failed task can resume.
    """
    import shutil

    from dissemination.validation import RoundsStopped

    from . import staging_dir

    shutil.rmtree(staging_dir(run_id), ignore_errors=True)
    if invalid or stopped:
        raise RoundsStopped([f["summary"] for f in [*invalid, *stopped]])


@task
def sweep_staging() -> int:
    """Remove failed runs' staging (kept so a cleared task can resume) once the retention has
    passed (DISSEMINATION_STAGING_RETENTION_HOURS)."""
    import pendulum

    from dissemination.staging import sweep

    from . import staging_retention, staging_root

    removed = sweep(staging_root(), staging_retention(), pendulum.now("UTC"))
    print(f"removed {len(removed)} staging folder(s) older than {staging_retention()}: "
          f"{[p.name for p in removed]}")
    return len(removed)


def disseminate(round_ids, urgency: str, agreements=None, country=None) -> None:
    """Wire the common chain inside a DAG: what a reader should see in the graph."""
    staged = pull_rounds(round_ids, country=country)
    validated = validate_rounds(staged, urgency)
    plans = plan(validated["passed"], urgency, agreements)
    packaged = package(validated["passed"], plans["deliveries"])
    delivered = deliver.expand(delivery=packaged)
    notify.expand(delivery=delivered) >> finish(validated["failed"], plans["stopped"])
