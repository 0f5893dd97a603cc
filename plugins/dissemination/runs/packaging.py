"""Package a round's deliveries: one AES zip per delivery, from one copy of the round."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .. import normalise
from ..delivery.allowed import check_policy
from ..delivery.claims import slot_recipients
from ..delivery.planned import Delivery
from ..disclosure.engine import Shared, build_contents
from ..disclosure.explanation import explanation_lines
from ..disclosure.pooling import shared_decisions
from ..disclosure.shown import NotAsDelivered, Shown, delivered, partial_of, shown
from ..disclosure.versions import Delivered
from ..ids import ROUND_ID
from ..intake import source
from ..intake.source import RoundMeta
from ..ledger.store import Ledger
from ..package.archive import DeflatedCsv, Issue, build_package
from ..policy import Policy, RuleSet
from ..policy.lookup import ruleset_for
from ..registry import sites as registry
from ..registry.store import hold_out
from ..runs import memory
from .stage import ReadExport


@dataclass(frozen=True)
class PackagingRun:
    """When and how one run packages a round: its clock, its workers and the exports it sees.

    They travel together from the task (or a test) to every step of ``package_deliveries``:
    ``created_at`` stamps the packages and the ledger's rows, ``workers`` forks, ``read_export``
    and ``version`` name the round's exports (see ``package_deliveries``)."""

    created_at: datetime
    workers: int | None = None
    read_export: ReadExport | None = None
    version: str = ""


def package_deliveries(
    round_df: pd.DataFrame,
    meta: RoundMeta,
    plans: Sequence[Delivery],
    policy: Policy,
    out_dir: Path,
    password_for: Callable[[str], str],
    ledger: Ledger,
    run: PackagingRun,
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
    (a cleaned round's partial ones too, and the neighbouring rounds': ``linked_rounds``),
    read by ``read_export`` (withheld, and said why, where that cannot be rebuilt as
    delivered).

    Sites the registry does not know as they are (``registry_ledger.hold_out``) are left out
    of every table, site or area, before disclosure control: what ships is judged as shipped."""
    created_at, workers, version = run.created_at, run.workers, run.version
    ruleset = ruleset_for(policy, meta.country)
    review = hold_out(round_df, meta.round_id, ruleset, ledger, created_at) if any(
        p.status == "planned" for p in plans) else registry.Review()
    plans = review.held_back(plans, meta.round_id, meta.country)
    held = tables_held(ledger, policy, meta, plans, ruleset, run.read_export, round_df, version)
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
    # Every holder's tables hide the same cells, so that pooled packages show nothing one of
    # them was refused (``disclosure.shared_decisions``).
    job = replace(job, shared=shared_decisions(
        round_df, [(job.parts(group[0]), job.held_by(group[0])) for group in job.groups],
        ruleset))
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
                           slot_recipients(plan))
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
    """Per organisation about to receive the round, the tables its holder holds of the rounds
    linked to it (``linked_rounds``: their content hashes and ``disclosure.Delivered``), under
    any agreement and from any run: those of any export of this round, this one too (the
    agreement may have changed since; ``round_df`` is this one, at ``version``), of a cleaned
    round's partial one, and of the country's neighbouring rounds. Or why they cannot be known
    as delivered: then its packages are withheld."""
    organisations = {p.organisation_id: p for p in plans if p.status == "planned"}
    if not organisations:
        return {}
    rounds = _linked_deliveries(ledger, meta.round_id, meta.country)
    mine = {organisation: [(r, _contents_held(rows, policy, organisation)) for r, rows in rounds]
            for organisation in organisations}
    kept = ledger.kept_shown(c for held in mine.values() for _, contents in held
                             for c in contents)
    frames: dict[tuple[str, str], pd.DataFrame] = {}  # each export read once, if at all
    if round_df is not None:
        frames[(meta.round_id, version)] = round_df
    tables: dict[str, Delivered | str] = {}  # by content hash: rebuilt once, or why not

    def held_table(content: str) -> Delivered | str:
        if content not in tables:
            key = (kept[content].round_id, kept[content].version)
            try:
                if key not in frames:
                    if read_export is None:
                        raise NotAsDelivered("no survey database to read it from")
                    frames[key] = read_export(*key)
                tables[content] = delivered(kept[content], frames[key], ruleset, _rows_of)
            except (NotAsDelivered, source.RoundNotFound) as exc:
                tables[content] = str(exc)
        return tables[content]

    out: dict[str, tuple[tuple[str, ...], list] | str] = {}
    for organisation, plan in organisations.items():
        contents, held = [], []
        for round_id, theirs in mine[organisation]:
            if unknown := [c for c in theirs if c not in kept]:
                why = (f"{len(unknown)} table(s) delivered without a record of what they "
                       "showed (before this version kept them)")
            else:
                why = next((t for t in map(held_table, theirs) if isinstance(t, str)), "")
            if why:
                out[organisation] = (
                    f"withheld: {plan.organisation} holds tables of {round_id}, and these must "
                    f"be protected with what it was shown there, which cannot be known: {why}. "
                    "Review what it holds, then deliver by hand, or restore the round's export "
                    "as it was")
                break
            contents += theirs
            held += [tables[c] for c in theirs]
        else:
            if contents:
                out[organisation] = (tuple(contents), held)
    return out


#: How many round numbers either side of a round have their delivered tables linked to it
#: (``linked_rounds``). Joint protection grows about as the square of the tables held
#: (``bench/rounds.py``), so it stops at the neighbouring rounds: see decision 10.
ROUND_HORIZON = 1


def linked_rounds(ledger: Ledger, round_id: str, country: str) -> list[str]:
    """The rounds whose delivered tables a round's packages are judged with: itself (its
    exports), a cleaned round's partial version, and the country's other rounds delivered so
    far within ``ROUND_HORIZON`` of its number, either side (a late cleaned round follows the
    next partial one): sites and their values persist from round to round, and a state total
    of one minus the sites seen in another gives a hidden site back."""
    own = [round_id, *filter(None, [partial_of(round_id)])]
    return own + [r for r in ledger.delivered_rounds(country) if r not in own
                  and _distance(r, round_id) <= ROUND_HORIZON]


def _distance(one: str, other: str) -> int:
    """How many round numbers apart two round ids are (NGA-R004-partial is 4); 0 where one
    has no number (``ids.ROUND_ID`` is checked at every entry: then linked, to be safe)."""
    numbers = [ROUND_ID.fullmatch(r) for r in (one, other)]
    if not all(numbers):
        return 0
    first, second = (int(m.group(0).split("-")[1][1:]) for m in numbers)
    return abs(first - second)


def _linked_deliveries(ledger: Ledger, round_id: str, country: str
                       ) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Each linked round (``linked_rounds``) with its deliveries (``delivered_contents``)."""
    return [(r, ledger.delivered_contents(r)) for r in linked_rounds(ledger, round_id, country)]


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
    a round linked to it (``linked_rounds``: their tables are linked cell by cell, and through
    additive groups by columns these packages do not show)."""
    for _, rows in _linked_deliveries(ledger, round_id, plans[0].country) if plans else ():
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
    # organisation id -> (content hashes, tables) it holds of the rounds linked to this one
    held: dict[str, tuple[tuple[str, ...], list]] = field(default_factory=dict)
    version: str = ""  # the kept export the packages are made from
    review: registry.Review = registry.Review()  # the sites held out, left out of every table
    shared: Shared = Shared()  # the round's decisions every holder's tables share (pooling)

    def parts(self, plans: Sequence[Delivery]) -> list:
        """An organisation's tables as ``build_contents`` takes them: selection, rows."""
        return [(p.selection, self.review.covering(_rows_of(self.df, p.areas))) for p in plans]

    def held_by(self, plans: Sequence[Delivery]) -> list:
        """The tables an organisation holds of the rounds linked to this one."""
        return self.held.get(plans[0].organisation_id, ((), []))[1]


def alike(organisations: list[list[Delivery]],
          holding: Callable[[str], tuple] = lambda organisation: ()
          ) -> list[list[list[Delivery]]]:
    """Organisations (each its planned deliveries) grouped by the tables they receive from the
    round: the same selections, but for the agreement's id, over the same areas, in the same
    order, and holding the same tables of linked rounds (``holding``). Many agreements
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
        contents = build_contents(job.df, job.parts(first), job.ruleset, job.held_by(first),
                                  job.shared)
    deflated = [DeflatedCsv() if len(organisations) > 1 else None for _ in contents]

    def zipped(plan: Delivery, content, csv) -> dict:
        agreement = job.policy.agreements[plan.agreement_id]
        package = build_package(
            content, job.meta, plan.selection, job.ruleset, agreement, job.out_dir,
            job.passwords[agreement.password.variable],
            Issue(job.created_at, plan.warnings, plan.recipient, plan.organisation, csv),
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
