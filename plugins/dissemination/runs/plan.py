"""Plan a round's deliveries: classify it once, select per agreement and focal point."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta

from ..classification import Urgency
from ..classify.sensitivity import (
    classify_round,
    select_for_agreement,
)
from ..delivery.allowed import ReviewOverdue, refusal, review_overdue_message
from ..delivery.planned import Delivery
from ..disclosure.explanation import explain, explanation_lines
from ..errors import PermanentError
from ..intake import headers
from ..intake.source import RoundMeta
from ..ledger.holdings import DisclosureState, Held
from ..policy import Policy
from ..policy.lookup import ruleset_for


class UnknownAgreement(PermanentError, ValueError):
    pass


@dataclass(frozen=True)
class Findings:
    """What staging and validation found in a round that planning carries on.

    Both come from the staged round (``stage_round``'s output) and travel together to
    ``plan_deliveries``: ``active``, the relational rules the round triggers (None: judged per
    agreement from the columns alone), and ``warnings``, its validation warnings."""

    active: Sequence[str] | None = None
    warnings: Sequence[str] = ()


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


def plan_deliveries(
    policy: Policy,
    meta: RoundMeta,
    columns: Sequence[str],
    urgency: Urgency,
    today: date,
    only: Sequence[str] = (),
    *,
    found: Findings = Findings(),
    state: DisclosureState | None = None,
) -> list[Delivery]:
    """Classify the round's columns once, then select what each covering agreement receives.

    ``today``: the wall clock's date (never a run's logical date: a backfill or an old run
    cleared today must not deliver under an agreement that has since expired).
    ``found``: relational rules the round triggers and its warnings (``Findings``);
    ``state``: what each organisation holds (the ledger plus this run's earlier plans); every
    planned delivery is added to it, so the next agreement of the same organisation sees it.
    """
    ruleset = ruleset_for(policy, meta.country)
    active = found.active
    warnings = (*found.warnings, *headers.not_found(columns, ruleset))
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
