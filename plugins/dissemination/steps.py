"""The steps of one dissemination run, as plain functions the DAG tasks call in order.

stage (read the round once; Secret columns never reach the disk) -> plan (classify the round
once, select per agreement) -> package (read the round once, one zip per
agreement) -> deliver (per agreement) -> record (per agreement). What flows between the steps is
small, JSON-friendly and free of data values and secrets, because Airflow stores it as XCom.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from . import headers, memory, normalise, registry, source, staging
from .classification import Classification, Urgency
from .contract import Conformer, ContractBroken
from .disclosure import Delivered, build_contents, explain, explanation_lines
from .errors import PermanentError
from .holdings import DisclosureState, Held
from .ids import check_round_id
from .ledger import (
    MAIN_RECIPIENTS,
    ClaimKey,
    DeliveryFailure,
    DeliveryRecord,
    Ledger,
    LedgerUnavailable,
    slot_of,
)
from .package import DeflatedCsv, build_package, opens_with
from .policy import SITE, Policy, RuleSet
from .registry_ledger import hold_out
from .sensitivity import (
    ColumnDecision,
    Selection,
    active_relational,
    classify_round,
    select_for_agreement,
)
from .sftp import Sessions, SftpTarget, UploadFailed, inspect, upload
from .shown import NotAsDelivered, Shown, delivered, partial_of, shown
from .source import RoundMeta


class AgreementRefused(PermanentError, RuntimeError):
    """An agreement that covers the round but may not receive it (e.g. expired)."""


class UnknownAgreement(PermanentError, ValueError):
    pass


class NoRuleSet(PermanentError, LookupError):
    pass


def ruleset_for(policy: Policy, country: str):
    ruleset = policy.rulesets.get(country)
    if ruleset is None:
        raise NoRuleSet(f"no rule set for country {country}: add include/rules/{country}.yaml")
    return ruleset


def pull_round(engine, round_id: str, policy: Policy, path: Path,
               country: str | None = None) -> dict:
    """Read a round from the survey database and stage it (``stage_round``), reading only the
    columns its contract reads. Headers (and an HXL row) are matched on the round's first row,
    read whole; the parts after it hold no Secret column (at a million sites a third of the
    read's time and 80 MB)."""
    meta, head = source.round_head(engine, round_id, country)
    conformer = Conformer(ruleset_for(policy, meta.country), first_row=1)
    columns = conformer.match(head)
    del head
    meta, parts = source.read_round_parts(engine, round_id, country, columns=columns)
    return stage_round(meta, parts, policy, path, conformer)


#: Reads an export of a round for ``tables_held``: (round id, kept version) -> the round.
ReadExport = Callable[[str, str], pd.DataFrame]


def export_reader(engine, policy: Policy, folder: Path,
                  read_kept: Callable[[str, str], Path]) -> ReadExport:
    """Reads the export a delivered table was made from: a kept one by its version
    (``read_kept``: its staged file, checked), or, for tables kept without one (version ""),
    the survey database's export as a pull reads it (its contract checked)."""
    def read(round_id: str, version: str) -> pd.DataFrame:
        if version:
            try:
                return staging.read_staged(read_kept(round_id, version))
            except (FileNotFoundError, ValueError) as exc:
                raise NotAsDelivered(f"{round_id}: the export its tables were made from "
                                     f"cannot be read: {exc}") from None
        path = staging.staged_round_path(folder, round_id)
        try:
            pull_round(engine, round_id, policy, path)
        except ContractBroken as exc:
            raise NotAsDelivered(f"{round_id} no longer keeps today's contract "
                                 f"({len(exc.violations)} violation(s))") from None
        return staging.read_staged(path)
    return read


def stage_round(meta: RoundMeta, df: pd.DataFrame | Iterable[pd.DataFrame], policy: Policy,
                path: Path, conformer: Conformer | None = None) -> dict:
    """Conform the round to its contract and stage it for the next tasks (``staging.write_staged``).

    Every value is checked first (``contract.Conformer``): a round that breaks its contract
    raises ``ContractBroken`` and nothing of it is written. Secret columns are dropped unread;
    only their names (a position if no rule covers them: ``headers``) travel on, for packages.

    ``df``: the round as read, whole or in parts (``source.read_round_parts``): each part as
    read is freed once conformed (a million-site round as read is as large again as the
    conformed one), as long as the caller keeps no reference to it. ``conformer``: one that
    matched the round's headers before it was read (``pull_round``).
    """
    check_round_id(meta.round_id, "staging")
    ruleset = ruleset_for(policy, meta.country)
    meta = replace(meta, dropped=tuple(headers.withheld(meta.dropped, ruleset)))
    conformer = conformer or Conformer(ruleset, first_row=1)
    parts, active, rows = [], set(), 0
    for raw in [df] if isinstance(df, pd.DataFrame) else df:
        rows += len(raw)
        parts.append(conformer.part(raw))
        del raw
        active |= active_relational(parts[-1], ruleset)
    del df
    conformed = conformer.result().raise_if_broken(
        f"round {meta.round_id} ({meta.country}; rows as read from the survey database)")
    staging.write_staged(parts, path)
    return {**meta.to_xcom(), "path": str(path), "columns": [*conformed.columns, *meta.dropped],
            "rows": rows, "active_relational": sorted(active)}


@dataclass(frozen=True)
class Delivery:
    """One agreement's share of one round, as it moves from plan to ledger."""

    agreement_id: str
    organisation: str  # display name, for people; history is keyed by organisation_id
    round_id: str
    country: str
    urgency: str
    decisions: tuple[dict, ...]
    organisation_id: str = ""
    # The policy the plan was made under: later steps refuse to act under another one.
    policy_sha256: str = ""
    rules_version: str = ""
    # planned -> packaged -> recorded; or refused, already_delivered, in_progress (another run)
    status: str = "planned"
    reason: str = ""
    package_path: str = ""
    content_sha256: str = ""
    package_sha256: str = ""
    row_count: int = 0
    remote_path: str = ""
    destination: str = ""  # "<sftp_conn_id>:<remote_dir>"
    explanation: tuple[str, ...] = field(default_factory=tuple)
    # Who receives it (Table C): "primary", "secondary" or "field:<name>" with their areas.
    recipient: str = "primary"
    recipient_name: str = ""
    recipient_email: str = ""
    areas: dict = field(default_factory=dict)
    # The secondary focal point, used if delivery to the primary fails permanently.
    fallback: dict = field(default_factory=dict)
    # Medium urgency: collection time + the agreement's window (ISO 8601), and whether kept.
    deadline: str = ""
    deadline_met: bool | None = None
    level: str = SITE
    exact_counts: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)
    columns: tuple[dict, ...] = field(default_factory=tuple)  # the package's output columns
    claim_id: int = 0  # the ledger's claim once recorded: its notice goes out once

    def to_xcom(self) -> dict:
        return asdict(self)

    @classmethod
    def from_xcom(cls, data: dict) -> Delivery:
        tuples = ("decisions", "explanation", "exact_counts", "warnings", "columns")
        return cls(**{**data, **{k: tuple(data.get(k, ())) for k in tuples}})

    @property
    def selection(self) -> Selection:
        decisions = tuple(
            ColumnDecision(**{**d, "classification": Classification(d["classification"]),
                              "notes": tuple(d.get("notes", ()))})
            for d in self.decisions
        )
        return Selection(self.agreement_id, Urgency(self.urgency), decisions, self.level,
                         self.exact_counts)


def _destination(person, agreement) -> str:
    dest = person.destination or agreement.destination
    return f"{dest.sftp_conn_id}:{dest.remote_dir}"


def recipients(agreement, people) -> list[dict]:
    """The organisation's main recipient (primary, or secondary when the primary is marked
    unavailable), with the secondary as fallback, then each field focal point and its areas."""
    main, role = people.primary, "primary"
    if not main.available:
        main, role = people.secondary, "secondary"
    out = []
    if main.available:
        fallback = {}
        if role == "primary" and people.secondary.available:
            fallback = {"destination": _destination(people.secondary, agreement),
                        "name": people.secondary.name, "email": people.secondary.email}
        out.append({"recipient": role, "recipient_name": main.name,
                    "recipient_email": main.email, "destination": _destination(main, agreement),
                    "fallback": fallback, "areas": {}})
    for person in people.field:
        if person.available:
            out.append({"recipient": f"field:{person.name}", "recipient_name": person.name,
                        "recipient_email": person.email,
                        "destination": _destination(person, agreement), "fallback": {},
                        "areas": {k: list(v) for k, v in person.areas.items()}})
    return out


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


def plan_deliveries(
    policy: Policy,
    meta: RoundMeta,
    columns: Sequence[str],
    urgency: Urgency,
    today: date,
    only: Sequence[str] = (),
    *,
    active: Sequence[str] | None = None,
    state: DisclosureState | None = None,
    warnings: Sequence[str] = (),
) -> list[Delivery]:
    """Classify the round's columns once, then select what each covering agreement receives.

    ``today``: the wall clock's date (never a run's logical date: a backfill or an old run
    cleared today must not deliver under an agreement that has since expired).
    ``active``: relational rules the round triggers (``stage_round`` computes them);
    ``state``: what each organisation holds (the ledger plus this run's earlier plans); every
    planned delivery is added to it, so the next agreement of the same organisation sees it.
    """
    ruleset = ruleset_for(policy, meta.country)
    warnings = (*warnings, *headers.not_found(columns, ruleset))
    overdue = review_overdue_message(policy, meta.country, today)
    if overdue:
        if urgency is Urgency.LOW:
            raise ReviewOverdue(f"{overdue}: the low-urgency path stops until it is reviewed "
                                "(then update risk_assessment.date)")
        warnings += (f"{overdue}; shared anyway at medium urgency (the risk of not sharing)",)
    covering = policy.agreements_for(meta.country, urgency)
    if only:
        unknown = sorted(set(only) - {a.id for a in covering})
        if unknown:
            raise UnknownAgreement(
                f"agreement(s) {unknown} do not cover {urgency.value}-urgency data for "
                f"{meta.country}; covering: {[a.id for a in covering]}"
            )
        covering = [a for a in covering if a.id in only]
    base = classify_round(columns, ruleset)
    state = state if state is not None else DisclosureState()
    plans = []
    for agreement in covering:
        name = policy.organisation_name(agreement)
        holdings = state.of(policy.holder(agreement.organisation), name, meta.country)
        selection = select_for_agreement(base, ruleset, agreement, urgency, active=active,
                                         held=holdings)
        reason = refusal(policy, agreement, today)
        tier = agreement.tiers.get(urgency)
        deadline = (meta.collected_at + timedelta(hours=tier.window_hours)).isoformat() \
            if urgency is Urgency.MEDIUM else ""
        people = recipients(agreement, policy.focal_points[agreement.focal_points])
        if not people:
            reason = (f"no available focal point for {agreement.id}: mark one available in "
                      f"focal_points/{agreement.focal_points}.yaml")
            people = [{"recipient": "primary", "destination": "", "fallback": {}, "areas": {}}]
        if not reason:
            holdings.add(Held(d.column, selection.level, meta.round_id,
                              f"planned in this run for {agreement.id}", agreement.id,
                              delivered=False) for d in selection.shared)
        for person in people:
            plans.append(
                Delivery(
                    agreement_id=agreement.id,
                    organisation=name,
                    organisation_id=agreement.organisation,
                    round_id=meta.round_id,
                    country=meta.country,
                    urgency=urgency.value,
                    decisions=tuple(
                        {**asdict(d), "classification": d.classification.value}
                        for d in selection.decisions
                    ),
                    status="refused" if reason else "planned",
                    reason=reason,
                    explanation=tuple(explanation_lines(explain(selection))),
                    level=selection.level,
                    exact_counts=selection.exact_counts,
                    warnings=warnings,
                    deadline=deadline,
                    policy_sha256=policy.content_sha256,
                    rules_version=ruleset.version,
                    **person,
                )
            )
    return plans


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


def package_deliveries(
    round_df: pd.DataFrame,
    meta: RoundMeta,
    plans: Sequence[Delivery],
    policy: Policy,
    out_dir: Path,
    password_for: Callable[[str], str],
    ledger: Ledger,
    created_at: datetime,
    workers: int | None = None,
    read_export: ReadExport | None = None,
    version: str = "",
) -> list[Delivery]:
    """One AES zip per planned delivery, from one in-memory copy of the round. The tables one
    organisation receives from the round (its agreements, levels, field focal points) are
    suppressed jointly, so none can be differenced against another.

    Organisations alike (``alike``) share their tables, built once per group. Groups are
    packaged in parallel by ``workers`` forked processes (default ``package_workers()``; 1: in
    this process). Passwords are read here first: ``password_for``
    may talk to Airflow, which a forked child must not. The ledger is asked here too.

    Every package keeps what it shows in the ledger (``shown``), with the ``version`` of the
    export it is made from (kept by the caller). Packages are protected with what each
    organisation was shown of the round's exports, under any of its agreements and in any run
    (a cleaned round's partial ones too), read by ``read_export`` (withheld, and said why,
    where that cannot be rebuilt as delivered).

    Sites the registry does not know as they are (``registry_ledger.hold_out``) are left out
    of every table, site or area, before disclosure control: what ships is judged as shipped."""
    ruleset = ruleset_for(policy, meta.country)
    review = hold_out(round_df, meta.round_id, ruleset, ledger, created_at) if any(
        p.status == "planned" for p in plans) else registry.Review()
    plans = review.held_back(plans, meta.round_id, meta.country)
    held = tables_held(ledger, policy, meta, plans, ruleset, read_export, round_df, version)
    plans = [replace(p, status="refused", reason=held[p.organisation_id])
             if p.status == "planned" and isinstance(held.get(p.organisation_id), str) else p
             for p in plans]
    held = {k: v for k, v in held.items() if not isinstance(v, str)}
    todo = [p for p in plans if p.status == "planned"]
    for plan in todo:
        check_policy(plan, policy)
    variables = dict.fromkeys(policy.agreements[p.agreement_id].password.variable for p in todo)
    organisations = [[p for p in todo if p.organisation_id == organisation]
                     for organisation in dict.fromkeys(p.organisation_id for p in todo)]
    job = _Job(round_df, meta, ruleset, policy, out_dir, created_at,
               {v: password_for(v) for v in variables},
               alike(organisations, lambda o: held.get(o, ((), []))[0]), held,
               version=version, review=review)
    packaged = {id(plan): fields
                for group, results in zip(job.groups, _package_groups(
                    job, package_workers() if workers is None else workers), strict=True)
                for plans, fields_of in zip(group, results, strict=True)
                for plan, fields in zip(plans, fields_of, strict=True)}
    ledger.keep_shown([Shown.from_json(f.pop("shown")) for f in packaged.values()
                       if "shown" in f], created_at)
    out = []
    for plan in plans:
        if plan.status != "planned":
            out.append(plan)
            continue
        fields = packaged[id(plan)]
        done = ledger.find(plan.agreement_id, plan.round_id, plan.urgency,
                           fields["content_sha256"],
                           _slot_recipients(plan))
        if done is not None:
            Path(fields["package_path"]).unlink()
            out.append(replace(
                plan, status="already_delivered", content_sha256=fields["content_sha256"],
                remote_path=done.remote_path,
                reason=f"same data delivered on {done.delivered_at:%Y-%m-%d %H:%M} UTC",
            ))
            continue
        out.append(replace(plan, status="packaged", **fields))
    return out


def tables_held(ledger: Ledger, policy: Policy, meta: RoundMeta, plans: Sequence[Delivery],
                ruleset: RuleSet, read_export: ReadExport | None,
                round_df: pd.DataFrame | None = None, version: str = ""
                ) -> dict[str, tuple[tuple[str, ...], list] | str]:
    """Per organisation about to receive the round, the tables it holds of the round's
    exports (their content hashes and ``disclosure.Delivered``), under any agreement and from
    any run: those of any export of this round, this one too (the agreement may have changed
    since; ``round_df`` is this one, at ``version``), and a cleaned round's partial ones. Or
    why they cannot be known as delivered: then its packages are withheld."""
    organisations = {p.organisation_id: p for p in plans if p.status == "planned"}
    if not organisations:
        return {}
    records = [(r, *ledger.shown_of(r)) for r in _versions_of(meta.round_id)]
    if not any(rows for _, rows, _ in records):
        return {}
    frames: dict[tuple[str, str], pd.DataFrame] = {}  # each export read once, if at all
    if round_df is not None:
        frames[(meta.round_id, version)] = round_df

    def held_table(kept: Shown) -> Delivered:
        key = (kept.round_id, kept.version)
        if key not in frames:
            if read_export is None:
                raise NotAsDelivered("no survey database to read it from")
            frames[key] = read_export(*key)
        return delivered(kept, frames[key], ruleset, _rows_of)

    out: dict[str, tuple[tuple[str, ...], list] | str] = {}
    for organisation, plan in organisations.items():
        contents, tables = [], []
        for round_id, rows, shown_by_content in records:
            mine = _contents_held(rows, policy, organisation)
            why = ""
            if unknown := [c for c in mine if c not in shown_by_content]:
                why = (f"{len(unknown)} table(s) delivered without a record of what they "
                       "showed (before this version kept them)")
            else:
                try:
                    tables += [held_table(shown_by_content[c]) for c in mine]
                except (NotAsDelivered, source.RoundNotFound) as exc:
                    why = str(exc)
            if why:
                out[organisation] = (
                    f"withheld: {plan.organisation} holds tables of {round_id}, and these must "
                    f"be protected with what it was shown there, which cannot be known: {why}. "
                    "Review what it holds, then deliver by hand, or restore the round's export "
                    "as it was")
                break
            contents += mine
        else:
            if contents:
                out[organisation] = (tuple(contents), tables)
    return out


def _versions_of(round_id: str) -> list[str]:
    """The rounds whose delivered tables a round's packages are judged with: itself (its
    exports), and a cleaned round's partial version."""
    return [round_id, *filter(None, [partial_of(round_id)])]


def _contents_held(rows: Sequence[tuple[str, str, str]], policy: Policy,
                   organisation: str) -> list[str]:
    """Content hashes of the tables ``organisation``'s holder received, of ``rows`` as
    ``Ledger.delivered_contents`` gives them. Keyed as ``Ledger.holdings``: by organisation id
    (one holder's together), or its agreements for older rows."""
    return list(dict.fromkeys(
        content for org, agreement, content in rows
        if policy.holder(organisation) in (policy.holder(org), policy.holder(
            policy.agreements[agreement].organisation if agreement in policy.agreements else org))))


def round_columns(round_id: str, plans: Sequence[Delivery], columns: Sequence[str],
                  ledger: Ledger, policy: Policy) -> list[str]:
    """Of a staged round's ``columns``, those the package task reads for ``plans``:
    ``packaged_columns``, or every column where an organisation of ``plans`` holds tables of
    the round (of any export, or of a cleaned round's partial one: the versions' tables are
    linked cell by cell, and through additive groups by columns these packages do not show)."""
    for held in _versions_of(round_id):
        rows = ledger.delivered_contents(held)
        if rows and any(_contents_held(rows, policy, p.organisation_id)
                        for p in plans if p.status == "planned"):
            return list(columns)
    review = registry.read_columns(ruleset_for(policy, plans[0].country), columns) \
        if plans else []  # the site registry's, to hold out sites as they are
    return [c for c in columns if c in {*packaged_columns(plans, columns), *review}]


def packaged_columns(plans: Sequence[Delivery], columns: Sequence[str]) -> list[str]:
    """Of a staged round's ``columns``, those ``package_deliveries`` reads for ``plans``: what
    each delivery shares and what names a field focal point's areas. The rest stays on disk: a
    column no delivery receives is never held in memory at all (tens of MB at a million sites)."""
    needed = {d.column for p in plans for d in p.selection.shared} \
        | {column for p in plans for column in p.areas}
    return [c for c in columns if c in needed]


def package_workers() -> int:
    """``DISSEMINATION_PACKAGE_WORKERS``, or one process per core this task may use."""
    value = os.environ.get("DISSEMINATION_PACKAGE_WORKERS", "").strip()
    if not value:
        return len(os.sched_getaffinity(0))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"DISSEMINATION_PACKAGE_WORKERS: expected a whole number of processes "
                         f"(1 or more), got {value!r}")
    return int(value)


@dataclass(frozen=True)
class _Job:
    """What every organisation's packages are built from; forked workers inherit it."""

    df: pd.DataFrame
    meta: RoundMeta
    ruleset: RuleSet
    policy: Policy
    out_dir: Path
    created_at: datetime
    # by variable; inherited by fork, never sent through a pipe, nor shown by repr (a
    # traceback's locals, a debugger, a log of the job)
    passwords: dict[str, str] = field(repr=False)
    groups: list[list[list[Delivery]]]  # organisations alike (``alike``), each its plans
    # organisation id -> (content hashes, tables) it holds of the round's partial version
    held: dict[str, tuple[tuple[str, ...], list]] = field(default_factory=dict)
    version: str = ""  # the kept export the packages are made from
    review: registry.Review = registry.Review()  # the sites held out, left out of every table


def alike(organisations: list[list[Delivery]],
          holding: Callable[[str], tuple] = lambda organisation: ()
          ) -> list[list[list[Delivery]]]:
    """Organisations (each its planned deliveries) grouped by the tables they receive from the
    round: the same selections, but for the agreement's id, over the same areas, in the same
    order, and holding the same tables of its partial version (``holding``). Many agreements
    follow a few templates (a cluster's members, a country's UN agencies); their tables are
    built, suppressed and deflated once per group."""
    groups: dict[tuple, list[list[Delivery]]] = {}
    for plans in organisations:
        key = tuple((replace(p.selection, agreement_id=""),
                     tuple((c, tuple(v)) for c, v in sorted(p.areas.items()))) for p in plans)
        groups.setdefault((key, holding(plans[0].organisation_id)), []).append(plans)
    return list(groups.values())


#: The job forked workers read (set by ``_package_groups`` around its pool, then cleared).
_FORKED: _Job | None = None


def _package_groups(job: _Job, workers: int) -> list[list[list[dict]]]:
    """Each group's packages, in the order of ``job.groups``; the first group (in that order)
    that failed raises its error, as its type with its message."""
    if workers <= 1 or len(job.groups) <= 1:
        return [_package_alike(job, group) for group in job.groups]
    global _FORKED
    _FORKED = job
    try:
        # fork: the round is shared copy-on-write, not pickled; the children only compute.
        with _children_allowed(), ProcessPoolExecutor(min(workers, len(job.groups)),
                                 mp_context=multiprocessing.get_context("fork")) as pool:
            # Every worker forks at the first submit. Frozen, the parent's objects are never
            # collected in a child: no finaliser of the parent's (a socket's, a connection's)
            # runs there, and their pages stay shared.
            with memory.frozen():
                futures = [pool.submit(_package_forked, i) for i in range(len(job.groups))]
            try:
                return [future.result() for future in futures]
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    finally:
        _FORKED = None


@contextlib.contextmanager
def _children_allowed():
    """A Celery worker's pool processes are daemonic, and the task process Airflow forks from
    one inherits the flag, so multiprocessing refuses it children ("daemonic processes are not
    allowed to have children"). The flag only guards against orphans outliving a daemon; this
    pool is joined before the task returns, so it is lifted for the pool's lifetime."""
    process = multiprocessing.current_process()
    daemon = process._config.get("daemon")
    process._config["daemon"] = False
    try:
        yield
    finally:
        if daemon is not None:
            process._config["daemon"] = daemon


def _package_forked(index: int) -> list[list[dict]]:
    return _package_alike(_FORKED, _FORKED.groups[index])


def _package_alike(job: _Job, organisations: list[list[Delivery]]) -> list[list[dict]]:
    """The tables organisations alike receive (suppressed jointly, as one organisation's), built
    once; then each organisation's packages: the fields each delivery gains, small enough to
    come back from a worker. Each zip is its own, encrypted with its agreement's password; its
    CSV is deflated once per table (``DeflatedCsv``) when more than one organisation gets it."""
    first = organisations[0]
    with _noted(job.meta, first, len(organisations) - 1):
        contents = build_contents(job.df, [(p.selection, job.review.covering(
            _rows_of(job.df, p.areas))) for p in first],
                                  job.ruleset, job.held.get(first[0].organisation_id, ((), []))[1])
    deflated = [DeflatedCsv() if len(organisations) > 1 else None for _ in contents]

    def zipped(plan: Delivery, content, csv) -> dict:
        agreement = job.policy.agreements[plan.agreement_id]
        package = build_package(
            content, job.meta, plan.selection, job.ruleset, agreement, job.out_dir,
            job.passwords[agreement.password.variable], job.created_at, plan.warnings,
            recipient=plan.recipient, organisation=plan.organisation, deflated=csv,
        )
        fields = {
            "package_path": str(package.path), "content_sha256": package.content_sha256,
            "package_sha256": package.package_sha256, "row_count": package.row_count,
            "columns": tuple(package.manifest["columns"]),
            "explanation": tuple(explanation_lines(package.manifest["explanation"])),
        }
        fields["shown"] = shown(content, plan.selection, plan.areas, job.meta.round_id,
                                package.content_sha256, job.version, job.review.keys).to_json()
        return fields

    # The zips are independent, and their CSV, deflate, AES and SHA-256 release the GIL: an
    # organisation with several packages, or a group's organisations past the first (whose
    # zips deflate each table for the others'), use the cores other workers leave idle.
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        with _noted(job.meta, first):
            out = [list(pool.map(zipped, first, contents, deflated))]
        pending = [[pool.submit(zipped, *z) for z in zip(plans, contents, deflated, strict=True)]
                   for plans in organisations[1:]]
        try:
            for plans, futures in zip(organisations[1:], pending, strict=True):
                with _noted(job.meta, plans):
                    out.append([future.result() for future in futures])
        except BaseException:
            for future in (f for futures in pending for f in futures):
                future.cancel()
            raise
    return out


@contextlib.contextmanager
def _noted(meta: RoundMeta, plans: list[Delivery], alike: int = 0):
    """An error while packaging names the round, the organisation and its agreements."""
    try:
        yield
    except Exception as exc:
        others = f" and {alike} organisation(s) alike" if alike else ""
        exc.add_note(f"packaging {meta.round_id} for {plans[0].organisation}{others} "
                     f"(agreements {sorted({p.agreement_id for p in plans})})")
        raise


def _rows_of(round_df: pd.DataFrame, areas: dict):
    """A field focal point's rows (a boolean mask), or None for the whole round. Areas match
    in normal form, as the policy's load checked them: ``ng008001`` is ``NG008001``."""
    if not areas:
        return None
    mask = np.ones(len(round_df), dtype=bool)
    for column, values in areas.items():
        if column not in round_df:
            return mask & False
        wanted = {normalise.token(v) for v in values}
        spelt = [v for v in round_df[column].dropna().unique() if normalise.token(v) in wanted]
        mask &= round_df[column].isin(spelt).fillna(False).to_numpy()
    return mask


#: How long a claim keeps other runs out before its attempt is presumed dead (a retry of the same
#: run resumes at once). Longer than any upload; short enough that a crashed run blocks no one
#: for long.
CLAIM_LEASE = timedelta(hours=2)


def deliver(delivery: Delivery, target_for: Callable[[str], SftpTarget], policy: Policy,
            ledger: Ledger, now: datetime, run_id: str, lease: timedelta = CLAIM_LEASE,
            sessions: Sessions | None = None,
            password_for: Callable[[str], str] | None = None) -> Delivery:
    """Claim, upload, confirm: exactly once, whatever fails in between.

    The delivery is claimed in the ledger first; a concurrent run sees the claim and stops, a
    retry of this run resumes it. A retry whose earlier attempt may have renamed the file checks
    the server first and, if the package is there whole, confirms without uploading again. After
    upload and read-back, the ledger row is written in the same transaction that closes the
    claim. If the primary's destination fails permanently, the secondary receives it.
    ``policy`` and ``now`` (the wall clock) are checked again right before upload, and with
    ``password_for`` (a Variable's value) that a rotation since packaging has not made the
    package one its partner cannot open. ``sessions``: the batch's open SFTP sessions
    (default: one of its own per upload)."""
    if delivery.status == "refused":
        raise AgreementRefused(delivery.reason)
    if delivery.status != "packaged":
        return delivery
    check_still_allowed(delivery, policy, now.date(), password_for)
    remote_path = _final_path(delivery.destination, delivery.package_path)
    got = ledger.claim(_claim_key(delivery), run_id, delivery.package_sha256,
                       delivery.destination, remote_path, now, lease)
    if got.outcome == "delivered":
        if got.claim.run_id == run_id and got.claim.notified_at is None:
            # An earlier attempt of this run recorded it, then its batch failed on another
            # delivery: recorded still, so the notice (not yet sent) goes out after this one.
            record = ledger.find(delivery.agreement_id, delivery.round_id, delivery.urgency,
                                 delivery.content_sha256, _slot_recipients(delivery))
            return replace(delivery, status="recorded", remote_path=got.claim.remote_path,
                           claim_id=got.claim.id, reason="recorded by an earlier attempt",
                           deadline_met=record.deadline_met if record else None)
        return replace(delivery, status="already_delivered", remote_path=got.claim.remote_path,
                       reason=f"delivered by run {got.claim.run_id}; not sent again")
    if got.outcome == "held":
        return replace(delivery, status="in_progress", reason=(
            f"run {got.claim.run_id} is delivering the same package (claimed "
            f"{got.claim.claimed_at:%Y-%m-%d %H:%M} UTC); that run reports the outcome"))
    claim, done = got.claim, None
    if got.previous is not None:
        done = _already_on_server(delivery, got.previous, target_for, sessions)
    if done is None:
        try:
            done, claim = _upload_with_fallback(delivery, claim, target_for, ledger,
                                                got.previous, sessions)
        except Exception as exc:
            if not getattr(exc, "final_may_exist", False):  # nothing under the final name:
                # another run need not wait for the lease
                _release_quietly(ledger, claim, getattr(exc, "left_at", None), now)
            raise
    record = _delivery_record(done, now, run_id)
    try:
        ledger.confirm(claim, record)
    except LedgerUnavailable as exc:
        raise LedgerUnavailable(
            f"{done.remote_path} is on {done.destination}, complete and verified, but not yet "
            f"recorded: {exc}. The retry confirms it without uploading again.") from None
    return replace(done, status="recorded", deadline_met=record.deadline_met, claim_id=claim.id)


def deliver_each(deliveries: Sequence[Delivery], attempt: Callable[[Delivery], Delivery],
                 threads: int) -> Iterator[tuple[Delivery, Delivery | Exception]]:
    """Attempt every delivery of a batch, up to ``threads`` at once; yield each with its outcome
    or the error it raised, in batch order.

    A delivery mostly waits on its partner's server (TCP and SSH handshakes, login, upload,
    read-back: round trips to another continent), so a batch's waits overlap. Exactly-once is
    each attempt's own business (claim, upload, confirm in the ledger), so concurrency changes
    none of it; one delivery's failure stops none of the others. If the caller stops (a task
    timeout), deliveries not yet begun are cancelled and those under way finish and are
    recorded, so no claim is left to wait out its lease."""
    if threads <= 1 or len(deliveries) <= 1:
        for delivery in deliveries:
            try:
                yield delivery, attempt(delivery)
            except Exception as exc:
                yield delivery, exc
        return
    pool = ThreadPoolExecutor(min(threads, len(deliveries)), thread_name_prefix="deliver")
    try:
        futures = [pool.submit(attempt, delivery) for delivery in deliveries]
        for delivery, future in zip(deliveries, futures, strict=True):
            error = future.exception()
            if error is not None and not isinstance(error, Exception):
                raise error  # as the serial loop would: an interrupt is not a delivery's failure
            yield delivery, error if error is not None else future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _slot_recipients(delivery: Delivery) -> tuple[str, ...]:
    """The recipients one ledger slot covers: the main one (primary or its secondary), or one
    field focal point."""
    return MAIN_RECIPIENTS if delivery.recipient in MAIN_RECIPIENTS else (delivery.recipient,)


def _claim_key(delivery: Delivery) -> ClaimKey:
    return ClaimKey(delivery.agreement_id, delivery.round_id, delivery.urgency,
                    slot_of(delivery.recipient), delivery.content_sha256)


def failure_of(delivery: Delivery, run_id: str, now: datetime, exc: BaseException
               ) -> DeliveryFailure:
    """What the ledger keeps of a failed delivery: who, which round, why (the error's text names
    files, fields and rows, never a value), and whether a retry could succeed."""
    return DeliveryFailure(delivery.agreement_id, delivery.round_id, delivery.urgency,
                           slot_of(delivery.recipient), delivery.recipient_name, run_id, now,
                           isinstance(exc, PermanentError), f"{type(exc).__name__}: {exc}")


def _final_path(destination: str, package_path: str) -> str:
    return posixpath.join(destination.split(":", 1)[1], Path(package_path).name)


def _already_on_server(delivery: Delivery, previous, target_for,
                       sessions: Sessions | None) -> Delivery | None:
    """After a crash: is the earlier attempt's package on the server, whole? Then it was
    delivered, and only the ledger row is missing."""
    conn_id = previous.destination.split(":", 1)[0]
    remote = inspect(target_for(conn_id), previous.remote_path, sessions)
    if remote is None or remote.sha256 != previous.package_sha256:
        return None
    done = replace(delivery, status="delivered", remote_path=remote.path,
                   package_sha256=previous.package_sha256,
                   reason="found complete on the server after an interrupted attempt; "
                          "not uploaded again")
    if previous.destination == delivery.fallback.get("destination"):
        done = _to_secondary(done, "the earlier attempt fell back to the secondary")
    return replace(done, destination=previous.destination)


def _upload_with_fallback(delivery: Delivery, claim, target_for, ledger: Ledger,
                          earlier, sessions: Sessions | None):
    try:
        remote = _upload_to(delivery.destination, delivery, target_for, ledger, earlier, sessions)
    except PermanentError as exc:
        if not delivery.fallback:
            raise
        secondary = delivery.fallback["destination"]
        claim = ledger.redirect(claim, secondary, _final_path(secondary, delivery.package_path))
        remote = _upload_to(secondary, delivery, target_for, ledger, earlier, sessions)
        return replace(_to_secondary(delivery, f"primary focal point's destination failed "
                                               f"({exc}); sent to the secondary"),
                       status="delivered", remote_path=remote.path), claim
    return replace(delivery, status="delivered", remote_path=remote.path), claim


def _to_secondary(delivery: Delivery, reason: str) -> Delivery:
    return replace(delivery, recipient="secondary", recipient_name=delivery.fallback["name"],
                   recipient_email=delivery.fallback["email"],
                   destination=delivery.fallback["destination"], reason=reason)


def _upload_to(destination: str, delivery: Delivery, target_for, ledger: Ledger,
               earlier, sessions: Sessions | None):
    """Upload to ``destination``, first removing the temporary files attempts cut off there
    left: named by the ledger, or, after an attempt that died holding its claim (``earlier``),
    found in the folder under this zip's name or that attempt's (a zip made since differs)."""
    conn_id, remote_dir = destination.split(":", 1)
    stale = None if earlier else ledger.partials_left(destination)
    try:
        remote = upload(target_for(conn_id), Path(delivery.package_path), remote_dir,
                        expected_sha256=delivery.package_sha256, stale=stale, sessions=sessions,
                        earlier_name=posixpath.basename(earlier.remote_path) if earlier else "")
    except UploadFailed as exc:
        if exc.partial_left:  # where it is, as the ledger names it: kept with the release
            exc.left_at = (destination, exc.partial_left)
        raise
    if stale:
        try:
            ledger.forget_partials(destination, stale)
        except LedgerUnavailable:
            pass  # the next upload there removes them again, finding them gone
    return remote


def _release_quietly(ledger: Ledger, claim, partial_left, now: datetime) -> None:
    try:
        ledger.release(claim, partial_left, now)
    except LedgerUnavailable:
        pass  # the lease runs out instead; the upload's own error is what the operator needs


def _delivery_record(delivery: Delivery, delivered_at: datetime, run_id: str) -> DeliveryRecord:
    deadline = datetime.fromisoformat(delivery.deadline) if delivery.deadline else None
    shared = [{k: c[k] for k in ("name", "source", "classification", "rule")}
              for c in delivery.columns]
    return DeliveryRecord(
        agreement_id=delivery.agreement_id,
        organisation=delivery.organisation,
        organisation_id=delivery.organisation_id,
        recipient=delivery.recipient,
        focal_point_name=delivery.recipient_name,
        focal_point_email=delivery.recipient_email,
        round_id=delivery.round_id,
        country=delivery.country,
        urgency=delivery.urgency,
        level=delivery.level,
        rules_version=delivery.rules_version,
        columns=DeliveryRecord.columns_json(shared),
        row_count=delivery.row_count,
        content_sha256=delivery.content_sha256,
        package_sha256=delivery.package_sha256,
        package_name=Path(delivery.package_path).name,
        destination=delivery.destination,
        remote_path=delivery.remote_path,
        delivered_at=delivered_at,
        run_id=run_id,
        deadline=deadline,
        deadline_met=None if deadline is None else delivered_at <= deadline,
    )


# --- deadlines (medium urgency) -----------------------------------------------------------------


@dataclass(frozen=True)
class DeadlineState:
    round_id: str
    country: str
    agreement_id: str
    deadline: datetime
    state: str  # met | missed | at_risk | pending
    detail: str = ""


class DeadlinesMissed(PermanentError, RuntimeError):
    def __init__(self, states: list[DeadlineState]):
        self.states = states
        super().__init__(f"{len(states)} urgent window(s) missed: " + "; ".join(
            f"{s.round_id} -> {s.agreement_id} ({s.detail})" for s in states))


def deadline_states(policy: Policy, rounds: Sequence[RoundMeta], ledger: Ledger, now: datetime,
                    at_risk: float = 0.25) -> list[DeadlineState]:
    """Where each partial round stands against each covering agreement's window.

    ``at_risk``: not delivered with less than this fraction of the window left.
    """
    states = []
    for meta in rounds:
        for agreement in policy.agreements_for(meta.country, Urgency.MEDIUM):
            if not agreement.is_active(now.date()):
                continue
            window = timedelta(hours=agreement.tiers.medium.window_hours)
            deadline = meta.collected_at + window
            done = ledger.find(agreement.id, meta.round_id, Urgency.MEDIUM.value)
            if done is not None:
                late = done.delivered_at - deadline
                state = "met" if late <= timedelta(0) else "missed"
                detail = f"delivered {done.delivered_at:%Y-%m-%d %H:%M} UTC" + (
                    f", {late} late" if state == "missed" else "")
            elif now > deadline:
                state, detail = "missed", f"not delivered, {now - deadline} past the window"
            elif deadline - now <= window * at_risk:
                state, detail = "at_risk", f"not delivered, {deadline - now} left"
            else:
                state, detail = "pending", f"{deadline - now} left"
            states.append(DeadlineState(meta.round_id, meta.country, agreement.id, deadline,
                                        state, detail))
    return states


# --- passwords ----------------------------------------------------------------------------------


def rotations_due(policy: Policy, ledger: Ledger, now: datetime) -> list:
    """Agreements whose package password is older than their plan allows (or never rotated by
    the pipeline: an unknown age counts as due)."""
    due = []
    for agreement in sorted(policy.agreements.values(), key=lambda a: a.id):
        last = ledger.last_rotation(agreement.id)
        if last is None or now - last >= timedelta(days=agreement.password.rotate_every_days):
            due.append(agreement)
    return due


def rotate_password(agreement, policy: Policy, ledger: Ledger, now: datetime,
                    store: Callable[[str, str], None]) -> str:
    """Generate and store a new strong password; record who must be told, by phone.

    Returns the names of the focal points to tell, never the password.
    """
    people = policy.focal_points[agreement.focal_points]
    store(agreement.password.variable, new_password())
    holders = people.password_holders()  # (only the primary was named: on leave, the
    # secondary opening the packages was never told)
    who = "; ".join(f"{p.name} ({p.mobile})" for p in holders)
    if len(who) > 200:  # the ledger's column: names alone, then as many as fit
        who = "; ".join(p.name for p in holders)
        who = who if len(who) <= 200 else who[:197] + "..."
    ledger.record_rotation(agreement.id, agreement.password.variable, now, who)
    return who


def new_password() -> str:
    """A strong package password: 24 URL-safe characters (~143 bits)."""
    import secrets

    return secrets.token_urlsafe(18)
