"""TaskFlow tasks shared by the dissemination DAGs: each is a thin call into the domain.

Both paths run the same chain on a list of rounds: pull -> validate -> plan -> package ->
deliver (claim, upload, confirm; mapped per batch of organisations) -> notify (mapped) -> finish.
Only how the rounds are found and the urgency differ, and those live in the DAG files. Heavy imports
stay inside the functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pendulum
from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule, get_current_context, task

from dissemination.runs import holds_a_round

from . import (
    LEDGER_DB_CONN_ID,
    SURVEY_DB_CONN_ID,
    current_policy,
    data_docs_dir,
    delivery_batch_size,
    delivery_threads,
    engine,
    mail_session,
    package_password,
    sftp_stall_seconds,
    sftp_targets,
    staging_retention,
    upgrade_ledger,
)

log = logging.getLogger(__name__)

# Network hiccups are retried; a wrong host key, a bad round or a policy problem fails at once.
RETRY_POLICY = ExceptionRetryPolicy(rules=[
    RetryRule(exception="dissemination.errors.PermanentError", action=RetryAction.FAIL,
              reason="permanent: fix the data, policy or connection, then clear the task"),
])


def default_args() -> dict:
    """Two retries, a minute apart (``DISSEMINATION_RETRY_DELAY_SECONDS``): a cut connection or
    a ledger restart; permanent errors fail at once."""
    delay = int(os.environ.get("DISSEMINATION_RETRY_DELAY_SECONDS", "60"))
    return {"retries": 2, "retry_delay": pendulum.duration(seconds=delay),
            "retry_policy": RETRY_POLICY}


@task
@holds_a_round
def pull_rounds(round_ids: list[str], run_id: str, country: str | None = None) -> dict:
    """Read each round from the survey database once; check every value against the country's
    contract and stage it without Secret columns. A round that breaks its contract (or has no
    rule set) is blocked here, on every path; the others go on."""
    from dissemination.intake import ContractBroken, staged_round_path
    from dissemination.policy import NoRuleSet
    from dissemination.runs import pull_round

    from .store import RunStage

    upgrade_ledger()  # the chain's first task: the ledger at this code's schema
    survey, policy, stage = engine(SURVEY_DB_CONN_ID), current_policy(), RunStage(run_id)
    staged = []
    for round_id in round_ids:
        try:  # read in parts, held by stage_round only: each freed once conformed
            round_ = pull_round(survey, round_id, policy,
                                staged_round_path(stage.local_dir(), round_id), country=country)
        except (ContractBroken, NoRuleSet) as exc:
            log.warning(f"BLOCKED {exc}")
            staged.append({"round_id": round_id, "blocked": str(exc)})
            continue
        local = Path(round_["path"])
        staged.append({**round_, "path": stage.put(local, local.name)})  # a name in the stage
        log.info(f"round {round_id} ({round_['status']}): {round_['rows']} sites, "
                 f"{len(round_['columns'])} columns")
    return {"rounds": stage.write_json("rounds.json", staged), "count": len(staged),
            "blocked": sum("blocked" in r for r in staged)}


@task
@holds_a_round
def validate_rounds(staged: dict, urgency: str, run_id: str) -> dict:
    """Great Expectations per round, with Data Docs; a failing round stops here, the others go
    on."""
    from dissemination import Urgency
    from dissemination.intake import checked, read_staged, staged_columns, validate_round
    from dissemination.policy import ruleset_for

    from .store import RunStage

    policy, stage = current_policy(), RunStage(run_id)
    passed, failed = [], []
    for round_ in stage.read_json(staged["rounds"]):
        if "blocked" in round_:  # broke its contract: never validated, never shared
            failed.append({"round_id": round_["round_id"], "summary": round_["blocked"]})
            continue
        ruleset, path = ruleset_for(policy, round_["country"]), stage.fetch(round_["path"])
        columns = checked(ruleset, staged_columns(path), round_["status"])  # all GX reads
        report = validate_round(read_staged(path, columns=columns, categories=True), ruleset,
                                round_["status"], docs_dir=data_docs_dir())
        log.info(report.summary())
        if report.blocks(Urgency(urgency)):
            failed.append({"round_id": round_["round_id"], "summary": report.summary()})
        else:
            warnings = [f"validation ({report.suite}): {f}" for f in report.failures]
            passed.append({**round_, "validation_warnings": warnings})
    name = stage.write_json("validated.json", {"passed": passed, "failed": failed})
    return {"rounds": name, "passed": len(passed), "failed": len(failed)}


@task
def plan(validated: dict, urgency: str, run_id: str, agreements: list[str] | None = None) -> dict:
    """Classify each round once, then select per covering agreement (names, never values).

    Each organisation is judged on everything it holds: the ledger plus what this task has
    planned for it so far, across rounds and agreements. Dates are checked against the wall
    clock. A country whose risk assessment review is overdue stops here on the low-urgency path.
    """
    from dissemination import Urgency
    from dissemination.delivery import ReviewOverdue
    from dissemination.intake import RoundMeta
    from dissemination.ledger import DisclosureState, Ledger
    from dissemination.runs import Findings, plan_deliveries

    from .store import RunStage

    policy, stage = current_policy(), RunStage(run_id)
    ledger = Ledger(engine(LEDGER_DB_CONN_ID))
    ledger.require_initialised()
    state = DisclosureState(
        lambda org, country: ledger.holdings(org, policy.agreements_of(org), country))
    today = pendulum.now("UTC").date()
    plans, stopped = [], []
    for round_ in stage.read_json(validated["rounds"])["passed"]:
        try:
            plans += plan_deliveries(
                policy, RoundMeta.from_xcom(round_), round_["columns"], Urgency(urgency),
                today=today, only=agreements or (),
                found=Findings(active=round_["active_relational"],
                               warnings=round_.get("validation_warnings", ())),
                state=state,
            )
        except ReviewOverdue as exc:
            log.warning(f"STOPPED {round_['round_id']}: {exc}")
            stopped.append({"round_id": round_["round_id"], "summary": str(exc)})
    for p in plans:
        for warning in p.warnings:
            log.warning(f"WARNING {p.round_id}: {warning}")
        log.info(f"{p.round_id} -> {p.organisation} [{p.agreement_id}]: {p.status} {p.reason}")
        log.info("  " + "\n  ".join(p.explanation))
    name = stage.write_json("plans.json",
                            {"deliveries": [p.to_xcom() for p in plans], "stopped": stopped})
    return {"plans": name, "deliveries": len(plans), "stopped": len(stopped)}


@task
@holds_a_round
def package(validated: dict, planned: dict, run_id: str) -> list[dict]:
    """One AES-256 zip per agreement and round, reading each round once; then the deliveries
    in batches of whole organisations, one mapped ``deliver`` each."""
    from dissemination.delivery import Delivery, batch_deliveries
    from dissemination.intake import RoundMeta, read_staged, staged_columns
    from dissemination.ledger import Ledger
    from dissemination.registry import held_line
    from dissemination.runs import (
        PackagingRun,
        export_reader,
        package_deliveries,
        round_columns,
    )

    from .store import KeptExports, RunStage

    policy, ledger = current_policy(), Ledger(engine(LEDGER_DB_CONN_ID))
    stage, kept = RunStage(run_id), KeptExports()
    # A round is protected with its other exports its recipients hold: read again if so.
    read_export = export_reader(engine(SURVEY_DB_CONN_ID), policy, stage.local_dir(), kept.read)
    plans = [Delivery.from_xcom(p) for p in stage.read_json(planned["plans"])["deliveries"]]
    out = []
    for round_ in stage.read_json(validated["rounds"])["passed"]:
        mine = [p for p in plans if p.round_id == round_["round_id"]]
        if not mine:
            continue
        path = stage.fetch(round_["path"])
        columns = round_columns(round_["round_id"], mine, staged_columns(path), ledger, policy)
        # An export is kept before any package shows it: the next is judged with it.
        version = kept.keep(path, round_["round_id"]) if any(
            p.status == "planned" for p in mine) else ""
        out += package_deliveries(
            read_staged(path, columns=columns),
            RoundMeta.from_xcom(round_), mine, policy, stage.local_dir(), package_password,
            ledger,
            PackagingRun(pendulum.now("UTC"), read_export=read_export, version=version),
        )
        if held := held_line(ledger.engine, round_["country"], round_["round_id"]):
            log.info(held)  # by site key: the registry's sites awaiting review
    out = [replace(d, package_path=stage.put(Path(d.package_path), Path(d.package_path).name))
           if d.package_path else d for d in out]  # staged: any worker can deliver it
    for d in out:
        log.info(f"{d.round_id} -> {d.organisation}: {d.status} {d.package_path or d.reason}")
        log.info("  " + "\n  ".join(d.explanation))
    batches = []
    for batch in batch_deliveries([(d.organisation_id, d.organisation) for d in out],
                                  delivery_batch_size()):
        batches.append({"batch": stage.write_json(
            f"batch-{batch.index:04d}.json",
            {"label": batch.label, "deliveries": [out[i].to_xcom() for i in batch.members]})})
    log.info(f"{len(out)} deliveries in {len(batches)} batch(es)")
    return batches


@task(map_index_template="{{ batch_label }}")
def deliver(batch: dict, run_id: str) -> dict:
    """Claim, upload, confirm, for each delivery of the batch (a few at once): claimed in the
    ledger, uploaded under a temporary name (pinned host key), read back, renamed, and recorded
    with the claim's closing, so a retry, a crash or a concurrent run never sends it twice. The
    agreement's validity and the policy's hash are checked again right before each upload."""
    from dissemination.delivery import Delivery, Sessions, deliver, deliver_each, failed, failure_of
    from dissemination.ledger import Ledger, LedgerUnavailable

    from .store import RunStage

    stage = RunStage(run_id)
    staged = stage.read_json(batch["batch"])  # the label too: XCom carries only the name
    get_current_context()["batch_label"] = staged["label"]
    policy, ledger, target_for = current_policy(), Ledger(engine(LEDGER_DB_CONN_ID)), sftp_targets()
    # one SSH session per server and thread, not one per delivery
    sessions = Sessions(sftp_stall_seconds())
    deliveries = [Delivery.from_xcom(delivery) for delivery in staged["deliveries"]]
    # Read here, once per batch: a Variable read from a delivery thread finds no task context
    passwords = {v: package_password(v) for v in sorted(
        {policy.agreements[d.agreement_id].password.variable for d in deliveries
         if d.status == "packaged" and d.agreement_id in policy.agreements})}

    def attempt(d: Delivery) -> Delivery:
        if d.package_path:  # a name in the stage: a local copy on this worker
            d = replace(d, package_path=str(stage.fetch(d.package_path)))
        return deliver(d, target_for, policy, ledger, pendulum.now("UTC"), run_id,
                             sessions=sessions, password_for=passwords.__getitem__)

    done, failures = [], []
    with sessions:  # closed once every delivery of the batch has ended
        for d, outcome in deliver_each(deliveries, attempt, delivery_threads()):
            if isinstance(outcome, Exception):  # the batch's other deliveries still go
                log.error(f"FAILED {_label(d)}: {type(outcome).__name__}: {outcome}")
                failures.append((_label(d), outcome))
                with contextlib.suppress(LedgerUnavailable):  # the task's own error says it all
                    ledger.record_failure(failure_of(d, run_id, pendulum.now("UTC"),
                                                           outcome))
                continue
            log.info(f"{_label(outcome)}: {outcome.status} to {outcome.recipient} "
                     f"{outcome.recipient_name}: {outcome.remote_path} {outcome.reason}")
            done.append(outcome.to_xcom())
    name = stage.write_json(batch["batch"].replace("batch-", "delivered-"),
                            {"label": staged["label"], "deliveries": done})
    if failures:
        raise failed(failures)
    return {"delivered": name}


@task(map_index_template="{{ batch_label }}")
def notify(batch: dict, run_id: str) -> None:
    """Tell each focal point that data arrived (never the password), once per delivery; tell
    DTM's focal point if an agreement's window was missed."""
    from dissemination.delivery import Delivery, failed
    from dissemination.ledger import Ledger

    from .store import RunStage

    delivered = RunStage(run_id).read_json(batch["delivered"])
    get_current_context()["batch_label"] = delivered["label"]
    policy, ledger = current_policy(), Ledger(engine(LEDGER_DB_CONN_ID))
    failures = []
    with mail_session() as send:  # one SMTP session for the batch's notices
        for delivery in delivered["deliveries"]:
            d = Delivery.from_xcom(delivery)
            try:
                _notify_one(d, policy, ledger, pendulum.now("UTC"), send)
            except Exception as exc:
                log.error(f"FAILED notice {_label(d)}: {type(exc).__name__}: {exc}")
                failures.append((_label(d), exc))
    if failures:
        raise failed(failures)


def _notify_one(d, policy, ledger, now, send) -> None:
    """One delivery's notice (marked on its claim first, so it goes out once) and, if its
    window was missed, one alert to DTM's focal point."""
    from dissemination.delivery import deadline_alert, delivery_notice
    from dissemination.runs import DeadlineState

    if d.status != "recorded":
        log.info(f"{_label(d)}: {d.status}, nothing to announce")
        return
    if not ledger.mark_notified(d.claim_id, now):
        log.info(f"{_label(d)}: notice already sent")
    else:
        try:
            send(delivery_notice(d, policy.dtm[d.country].on_duty()))
        except BaseException:
            ledger.unmark_notified(d.claim_id)  # not sent: the retry sends it
            raise
    if d.deadline_met is False:
        log.error(f"ERROR {_label(d)}: delivered after the window ended at {d.deadline}")
        if ledger.alert_once("missed", f"{d.round_id}/{d.agreement_id}", now):
            who = "the " + d.recipient if ":" not in d.recipient else "a field focal point"
            state = DeadlineState(d.round_id, d.country, d.agreement_id,  # names no one
                                        pendulum.parse(d.deadline), "missed",
                                        f"delivered late to {who}")
            send(deadline_alert([state], policy.alert_to(d.country)))


def _label(d) -> str:
    """One delivery in a log line: organisation, agreement, round, and who receives it."""
    from dissemination.ledger import MAIN_RECIPIENTS

    who = "" if d.recipient in MAIN_RECIPIENTS else f" -> {d.recipient_name}"
    return f"{d.organisation}, {d.agreement_id} ({d.round_id}){who}"


@task(trigger_rule="none_failed")
def finish(validated: dict, planned: dict, delivered: list[dict], run_id: str) -> None:
    """Report one line per organisation, remove the run's staging once every delivery is
    recorded, and fail if a round stopped.

    A run whose delivery failed keeps its staging, so clearing the failed task can resume.
    """
    from dissemination.intake import RoundsStopped

    from .store import RunStage

    stage = RunStage(run_id)
    failed = stage.read_json(validated["rounds"])["failed"]
    stopped = stage.read_json(planned["plans"])["stopped"]
    outcomes: dict[str, Counter] = {}
    for batch in delivered or ():
        for d in stage.read_json(batch["delivered"])["deliveries"]:
            outcomes.setdefault(d["organisation"], Counter())[d["status"]] += 1
    for organisation, counts in sorted(outcomes.items()):
        log.info(f"{organisation}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    stage.remove()
    if failed or stopped:
        raise RoundsStopped([f["summary"] for f in [*failed, *stopped]])


@task
def sweep_staging() -> int:
    """Remove failed runs' staging (kept so a cleared task can resume) once the retention has
    passed (DISSEMINATION_STAGING_RETENTION_HOURS)."""
    from .store import sweep

    removed = sweep(staging_retention(), pendulum.now("UTC"))
    log.info(f"removed {len(removed)} staging folder(s) older than {staging_retention()}: "
             f"{removed}")
    return len(removed)


def disseminate(round_ids, urgency: str, agreements=None, country=None) -> None:
    """Wire the common chain inside a DAG: what a reader should see in the graph. XCom carries
    names and counts only; the run's plans and packages stay in its staging."""
    staged = pull_rounds(round_ids, country=country)
    validated = validate_rounds(staged, urgency)
    planned = plan(validated, urgency, agreements=agreements)
    batches = package(validated, planned)
    delivered = deliver.expand(batch=batches)
    notify.expand(batch=delivered) >> finish(validated, planned, delivered)
