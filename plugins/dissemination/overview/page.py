"""Where dissemination stands, per country and agreement: what the Dissemination page shows.

Everything comes from the policy and the ledger (plus the audit's verdict), never from a round:
names, dates, counts, rules and reasons, no data value and no password. Pure: the caller passes
the clock, so the page, the tests and a CLI read the same figures.

Freshness uses HDX's terms (up to date / due / overdue / delinquent). The low tier is judged on
its monthly schedule with HDX's monthly thresholds: due 30 days after the last delivery, overdue
at 44, delinquent at 60. The medium tier is judged on its window: up to date when no partial
round seen in the last 30 days is owed, due while the oldest owed round is inside its window,
overdue once the window has passed, delinquent once twice the window has.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property

from ..classification import Urgency
from ..ledger.audit import Verified
from ..ledger.records import DeliveryFailure, DeliverySummary, OpenClaim, Rotation
from ..policy import Agreement, Policy
from ..registry.store import Held, held_for_page

#: HDX's monthly thresholds (days since the last update): due, overdue, delinquent.
MONTHLY_AGES = (30, 44, 60)
#: Partial rounds older than this no longer count as owed (they count as missed windows).
OWED_HORIZON = timedelta(days=30)
#: A risk assessment whose review falls within this many days is shown as coming.
REVIEW_NOTICE = timedelta(days=30)

FRESHNESS = ("up to date", "due", "overdue", "delinquent")


@dataclass(frozen=True)
class LastDelivery:
    """The newest delivery of one tier to one focal point."""
    delivery_id: int
    recipient: str  # primary | secondary | field:<name>
    focal_point: str
    round_id: str
    delivered_at: datetime
    run_id: str
    row_count: int
    package_name: str
    deadline_met: bool | None


@dataclass(frozen=True)
class TierStatus:
    urgency: str  # medium | low
    expectation: str  # "within 48 h of collection" | "monthly"
    freshness: str  # one of FRESHNESS
    detail: str
    last: tuple[LastDelivery, ...]  # one per focal point, newest first


@dataclass(frozen=True)
class Problem:
    """A delivery not done: awaiting retry (a retry may succeed), refused (it would fail alike),
    or held by a run whose claim has not ended."""
    state: str  # awaiting retry | refused | in progress
    round_id: str
    urgency: str
    focal_point: str
    run_id: str
    since: datetime
    reason: str


@dataclass(frozen=True)
class AgreementStatus:
    agreement_id: str
    organisation: str
    valid_until: date
    active: bool
    tiers: tuple[TierStatus, ...]
    windows_met: int
    windows_missed: int
    problems: tuple[Problem, ...]
    awaiting_call: tuple[Rotation, ...]  # rotated passwords not yet passed on by phone


@dataclass(frozen=True)
class CountryStatus:
    country: str
    risk_assessed_on: date
    review_due: date
    review: str  # ok | due soon | overdue
    agreements: tuple[AgreementStatus, ...]
    # Where the country's rules depart from rules/default.yaml on purpose, each with its reason.
    overrides: tuple[str, ...] = ()
    held_sites: tuple[Held, ...] = ()  # held out for review by the site registry: keys only
    held_count: int = 0  # all of them (the page lists the first ``PAGE_LISTS``)


@dataclass(frozen=True)
class AuditStatus:
    ok: bool
    line: str


@dataclass(frozen=True)
class Overview:
    generated_at: datetime
    countries: tuple[CountryStatus, ...]  # every country the reader may read, or the one asked
    audit: AuditStatus | None
    totals: dict[str, int] = field(default_factory=dict)
    all_countries: tuple[str, ...] = ()  # those the reader may read, for a page per country


@dataclass(frozen=True)
class LedgerView:
    """What the overview reads from the ledger, read once: of years of deliveries, only what
    the page shows (``Ledger`` has one method each), so its cost follows the agreements, not
    the history."""
    latest: list[tuple[int, DeliverySummary]]  # each recipient's newest, per agreement and tier
    windows: dict[tuple[str, str], tuple[int, int]]  # (agreement, country) -> (met, late)
    rounds_delivered: dict[tuple[str, str], bool]  # (agreement, round) -> window judged
    failures: list[DeliveryFailure]  # those not delivered since
    open_claims: list[OpenClaim]
    rotations: list[Rotation]  # each agreement's newest
    missed_alerts: list[tuple[str, datetime]]
    intake: list[tuple[str, str, str, datetime]]
    held: tuple[dict[str, int], list[Held]] = ({}, [])  # ``held_for_page``

    @classmethod
    def read(cls, ledger, now: datetime, policy: Policy | None = None,
             country: str | None = None) -> LedgerView:
        """Everything the page shows at ``now``, or what ``build_overview(..., only=country)``
        needs: the country's deliveries, and the failures and rotations of its agreements in
        ``policy``. Of single rounds, only those the page asks about: partial rounds owed
        (seen within ``OWED_HORIZON``) and rounds whose window was missed."""
        ids = None if country is None else [a.id for a in policy.agreements.values()
                                            if country in a.countries]
        intake, missed = ledger.intake(), ledger.alerts("missed")
        asked = {round_id for round_id, _, status, seen in intake
                 if status == "partial" and now - seen <= OWED_HORIZON}
        asked |= {subject.partition("/")[0] for subject, _ in missed}
        return cls(ledger.latest(country), ledger.windows(country),
                   ledger.rounds_delivered(asked), ledger.failures(ids, open_only=True),
                   ledger.open_claims(), ledger.rotations(ids, newest_only=True), missed, intake,
                   held_for_page(ledger.engine, country))

    # Each agreement's share, grouped once: the page walks a thousand agreements.

    @cached_property
    def latest_of(self) -> dict[tuple[str, str], list[tuple[int, DeliverySummary]]]:
        """(agreement id, country) -> its recipients' newest deliveries, in ledger order."""
        return _grouped(self.latest, lambda d: (d[1].agreement_id, d[1].country))

    @cached_property
    def failures_of(self) -> dict[str, list[DeliveryFailure]]:
        return _grouped(self.failures, lambda f: f.agreement_id)

    @cached_property
    def claims_of(self) -> dict[str, list[OpenClaim]]:
        return _grouped(self.open_claims, lambda c: c.agreement_id)

    @cached_property
    def rotations_of(self) -> dict[str, list[Rotation]]:
        return _grouped(self.rotations, lambda r: r.agreement_id)

    @cached_property
    def missed_of(self) -> dict[tuple[str, str], list[str]]:
        """(agreement id, country) -> rounds whose window DTM was alerted as missed (the
        alert's subject is ``<round id>/<agreement id>``, a round id starts with its country)."""
        pairs = [subject.partition("/")[::2] for subject, _ in self.missed_alerts]
        return {key: [r for r, _ in group] for key, group in _grouped(
            pairs, lambda p: (p[1], country_of_round(p[0]))).items()}

    @cached_property
    def partial_rounds_seen(self) -> dict[str, list[tuple[datetime, str]]]:
        """Country -> (first seen, round id) of each partial round the intake saw."""
        return {country: [(seen, round_id) for round_id, _, _, seen in rows]
                for country, rows in _grouped(
                    [r for r in self.intake if r[2] == "partial"], lambda r: r[1]).items()}


def _grouped(items: Iterable, key) -> dict:
    groups: dict = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def countries_of(policy: Policy) -> list[str]:
    """Every country of the policy: its rule sets' and its agreements'."""
    return sorted(set(policy.rulesets) | {c for a in policy.agreements.values()
                                          for c in a.countries})


def country_of_round(round_id: str) -> str:
    """The ISO3 code a round id starts with (``ids.ROUND_ID``).

    Failures, claims and alerts name a round, not a country, and an agreement may cover
    several countries."""
    return round_id.split("-", 1)[0]


def build_overview(policy: Policy, view: LedgerView, now: datetime,
                   audit: Verified | None = None, only: str | None = None,
                   readable: Collection[str] | None = None) -> Overview:
    """What the page shows: each country the reader may read, or the one ``only``.

    ``readable`` None is every country; ``only`` is read with ``LedgerView.read(ledger, policy,
    only)``. Each agreement is under each of its countries, sorted by country then agreement id.
    Countries are rights, not only a filter: nothing of a country outside ``readable`` is shown,
    not even its name, and the totals are those of the countries shown. A reader of some
    countries gets the audit's verdict without its line, whose finding can name another
    country's round."""
    countries = countries_of(policy)
    every = readable is None or set(countries) <= set(readable)
    if not every:
        countries = [c for c in countries if c in readable]
    if only is not None and only not in countries:
        raise KeyError(f"no rule set or agreement names country {only!r}")
    result = []
    for country in countries if only is None else [only]:
        agreements = sorted((a for a in policy.agreements.values() if country in a.countries),
                            key=lambda a: a.id)
        statuses = tuple(_agreement_status(policy, a, country, view, now)
                         for a in agreements)
        ruleset = policy.rulesets.get(country)
        assessed = ruleset.risk_assessment if ruleset else None
        result.append(CountryStatus(
            country,
            assessed.date if assessed else None,
            assessed.review_due if assessed else None,
            _review_state(ruleset, now.date()) if assessed else "no rule set",
            statuses, ruleset.loosened if ruleset else (),
            tuple(h for h in view.held[1] if h.country == country),
            view.held[0].get(country, 0)))
    return Overview(now, tuple(result), _audit_status(audit, every), _totals(result),
                    tuple(countries))


def _audit_status(audit: Verified | None, every_country: bool) -> AuditStatus | None:
    if audit is None:
        return None
    if every_country:
        return AuditStatus(audit.ok, audit.line())
    return AuditStatus(audit.ok, "ledger verified: the hash chain holds" if audit.ok else
                       "ledger verify FAILED: DTM's data engineers have the finding")


def _agreement_status(policy: Policy, agreement: Agreement, country: str, view: LedgerView,
                      now: datetime) -> AgreementStatus:
    delivered = view.latest_of.get((agreement.id, country), [])
    tiers = []
    for urgency in (Urgency.MEDIUM, Urgency.LOW):
        tier = agreement.tiers.get(urgency)
        if tier is None:
            continue
        mine = [d for d in delivered if d[1].urgency == urgency.value]
        if urgency is Urgency.MEDIUM:
            freshness, detail = _window_freshness(agreement, country, view, now)
            expectation = f"within {tier.window_hours} h of collection"
        else:
            freshness, detail = _monthly_freshness(agreement, mine, now)
            expectation = tier.schedule
        tiers.append(TierStatus(urgency.value, expectation, freshness, detail, _last(mine)))
    met, late = view.windows.get((agreement.id, country), (0, 0))
    never = [r for r in view.missed_of.get((agreement.id, country), ())
             if not view.rounds_delivered.get((agreement.id, r))]  # no window judged
    return AgreementStatus(
        agreement.id, policy.organisation_name(agreement), agreement.valid_until,
        agreement.is_active(now.date()), tuple(tiers), met, late + len(never),
        _problems(agreement.id, country, view, now),
        tuple(r for r in view.rotations_of.get(agreement.id, [])[-1:] if r.called_at is None))


def _last(delivered: list[tuple[int, DeliverySummary]]) -> tuple[LastDelivery, ...]:
    newest: dict[str, tuple[int, DeliverySummary]] = {}
    for delivery_id, record in delivered:
        seen = newest.get(record.recipient)
        if seen is None or (record.delivered_at, delivery_id) > (seen[1].delivered_at, seen[0]):
            newest[record.recipient] = (delivery_id, record)
    return tuple(sorted(
        (LastDelivery(i, r.recipient, r.focal_point_name, r.round_id, r.delivered_at, r.run_id,
                      r.row_count, r.package_name, r.deadline_met)
         for i, r in newest.values()), key=lambda d: d.delivered_at, reverse=True))


def _monthly_freshness(agreement: Agreement, delivered, now: datetime) -> tuple[str, str]:
    if delivered:
        since = max(r.delivered_at for _, r in delivered)
        what = f"last delivered {since:%Y-%m-%d}"
    else:
        since = datetime.combine(agreement.valid_from, datetime.min.time(), now.tzinfo)
        what = f"never delivered; agreement valid since {agreement.valid_from}"
    age = (now - since).days
    state = FRESHNESS[sum(age >= limit for limit in MONTHLY_AGES)]
    return state, f"{what} ({age} day(s) ago)"


def _window_freshness(agreement: Agreement, country: str, view: LedgerView,
                      now: datetime) -> tuple[str, str]:
    window = timedelta(hours=agreement.tiers.medium.window_hours)
    owed = [(seen, round_id) for seen, round_id in view.partial_rounds_seen.get(country, ())
            if (agreement.id, round_id) not in view.rounds_delivered
            and now - seen <= OWED_HORIZON
            and seen.date() >= agreement.valid_from]
    if not owed:
        return "up to date", "no partial round owed"
    seen, round_id = min(owed)
    age = now - seen
    state = "due" if age < window else "overdue" if age < 2 * window else "delinquent"
    return state, f"{round_id} owed since {seen:%Y-%m-%d %H:%M} UTC ({_hours(age)} h)"


def _problems(agreement_id: str, country: str, view: LedgerView,
              now: datetime) -> tuple[Problem, ...]:
    """The newest failure of each delivery slot not delivered since, and every open claim.

    Of ``country``'s rounds only: an agreement covering two countries shows each its own."""
    newest: dict[tuple, DeliveryFailure] = {}
    for f in view.failures_of.get(agreement_id, ()):  # in id order: a tie goes to the later
        if country_of_round(f.round_id) != country:
            continue
        seen = newest.get(key := (f.round_id, f.urgency, f.slot))
        if seen is None or f.failed_at >= seen.failed_at:
            newest[key] = f
    problems = [
        Problem("refused" if f.permanent else "awaiting retry", f.round_id, f.urgency,
                f.focal_point_name, f.run_id, f.failed_at, f.reason)
        for f in newest.values()]
    for claim in view.claims_of.get(agreement_id, ()):
        if country_of_round(claim.round_id) != country:
            continue
        stale = claim.lease_until < now
        problems.append(Problem(
            "awaiting retry" if stale else "in progress", claim.round_id, claim.urgency,
            _slot_name(claim.slot), claim.run_id, claim.claimed_at,
            "its attempt stopped before confirming; the next attempt checks the server "
            "first" if stale else f"being delivered (claim held until "
                                  f"{claim.lease_until:%Y-%m-%d %H:%M} UTC)"))
    return tuple(sorted(problems, key=lambda p: p.since, reverse=True))


def _slot_name(slot: str) -> str:
    return "primary or secondary" if slot == "main" else slot


def _review_state(ruleset, today: date) -> str:
    if ruleset.review_overdue(today):  # (also dated after today: the low path stops)
        return "overdue"
    return "due soon" if ruleset.risk_assessment.review_due - today <= REVIEW_NOTICE else "ok"


def _hours(age: timedelta) -> int:
    return int(age.total_seconds() // 3600)


def _totals(countries: list[CountryStatus]) -> dict[str, int]:
    agreements = [a for c in countries for a in c.agreements]
    totals = {state: 0 for state in FRESHNESS}
    for a in agreements:
        for tier in a.tiers:
            totals[tier.freshness] += 1
    totals.update(
        windows_met=sum(a.windows_met for a in agreements),
        windows_missed=sum(a.windows_missed for a in agreements),
        awaiting_retry=sum(p.state == "awaiting retry" for a in agreements for p in a.problems),
        refused=sum(p.state == "refused" for a in agreements for p in a.problems),
        awaiting_call=len({r.id for a in agreements for r in a.awaiting_call}),
        reviews_due=sum(c.review != "ok" for c in countries),
        sites_held=sum(c.held_count for c in countries),
    )
    return totals

