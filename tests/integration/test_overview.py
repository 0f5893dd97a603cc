"""The Dissemination page's figures, computed from a ledger the tests write (no Airflow)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dissemination.__main__ import main as cli
from dissemination.ledger.audit import verify
from dissemination.ledger.migrations import open_upgraded
from dissemination.ledger.records import DeliveryFailure, DeliveryRecord, slot_of
from dissemination.ledger.rows import insert_chained
from dissemination.ledger.tables import intake_log
from dissemination.overview.page import LedgerView, build_overview

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _record(round_id: str, at: datetime, **overrides) -> DeliveryRecord:
    values = dict(
        agreement_id="unicef-nga", organisation="UNICEF", organisation_id="unicef",
        recipient="primary", focal_point_name="Aisha Bello", focal_point_email="a@example.org",
        round_id=round_id, country="NGA", urgency="medium", level="site",
        rules_version="r1", columns='[{"name": "idp_count", "source": "idp_count", '
                                    '"classification": "Public", "rule": "NGA.idp_count"}]',
        row_count=40, content_sha256=round_id.ljust(64, "0")[:64], package_sha256="b" * 64,
        package_name=f"{round_id}.zip", destination="sftp_unicef_nga:in",
        remote_path=f"in/{round_id}.zip", delivered_at=at, run_id=f"manual__{round_id}",
        deadline=at + timedelta(hours=1), deadline_met=True)
    values.update(overrides)
    return DeliveryRecord(**values)


def _seen(engine, round_id: str, at: datetime, status: str = "partial") -> None:
    with engine.begin() as conn:
        insert_chained(conn, intake_log, dict(
            round_id=round_id, content_sha256=round_id.ljust(64, "c")[:64], country="NGA",
            status=status, exported_at=at, seen_at=at, version=1))


@pytest.fixture
def ledger(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    return open_upgraded(engine)


def _overview(policy, ledger, now=NOW):
    return build_overview(policy, LedgerView.read(ledger, now), now, verify(ledger.engine))


def _agreement(overview, country: str, agreement_id: str):
    (country_status,) = [c for c in overview.countries if c.country == country]
    (status,) = [a for a in country_status.agreements if a.agreement_id == agreement_id]
    return status


def _tier(status, urgency: str):
    (tier,) = [t for t in status.tiers if t.urgency == urgency]
    return tier


def test_last_delivery_per_tier_and_focal_point(policy, ledger):
    ledger.record(_record("NGA-R001-partial", NOW - timedelta(days=3)))
    ledger.record(_record("NGA-R002-partial", NOW - timedelta(days=1)))
    ledger.record(_record("NGA-R002-partial", NOW - timedelta(days=1), recipient="field:maiduguri",
                          focal_point_name="Musa Ibrahim"))
    ledger.record(_record("NGA-R001-cleaned", NOW - timedelta(days=10), urgency="low",
                          deadline=None, deadline_met=None))
    status = _agreement(_overview(policy, ledger), "NGA", "unicef-nga")
    medium = _tier(status, "medium")
    assert {(d.recipient, d.round_id) for d in medium.last} == {
        ("primary", "NGA-R002-partial"), ("field:maiduguri", "NGA-R002-partial")}
    assert [(d.round_id, d.focal_point) for d in _tier(status, "low").last] == [
        ("NGA-R001-cleaned", "Aisha Bello")]
    ids = {d.delivery_id for d in medium.last}
    assert all(ledger.numbered(i)[0][1].round_id == "NGA-R002-partial" for i in ids)


@pytest.mark.parametrize("age_days, state", [
    (0, "up to date"), (29, "up to date"), (30, "due"), (43, "due"), (44, "overdue"),
    (59, "overdue"), (60, "delinquent"), (200, "delinquent")])
def test_monthly_freshness_uses_hdx_monthly_thresholds(policy, ledger, age_days, state):
    ledger.record(_record("NGA-R001-cleaned", NOW - timedelta(days=age_days), urgency="low",
                          deadline=None, deadline_met=None))
    tier = _tier(_agreement(_overview(policy, ledger), "NGA", "unicef-nga"), "low")
    assert tier.freshness == state and f"({age_days} day(s) ago)" in tier.detail


def test_an_agreement_never_delivered_ages_from_its_start(policy, ledger):
    tier = _tier(_agreement(_overview(policy, ledger), "NGA", "unicef-nga"), "low")
    assert tier.freshness == "delinquent" and "never delivered" in tier.detail and not tier.last


@pytest.mark.parametrize("hours_ago, state", [
    (10, "due"), (47, "due"), (48, "overdue"), (95, "overdue"), (96, "delinquent")])
def test_urgent_freshness_against_the_window(policy, ledger, hours_ago, state):
    """unicef-nga's window is 48 h: a partial round owed for longer is overdue, for twice as
    long delinquent; one delivered owes nothing."""
    _seen(ledger.engine, "NGA-R005-partial", NOW - timedelta(hours=hours_ago))
    tier = _tier(_agreement(_overview(policy, ledger), "NGA", "unicef-nga"), "medium")
    assert (tier.freshness, tier.detail.split()[0]) == (state, "NGA-R005-partial")
    ledger.record(_record("NGA-R005-partial", NOW))
    assert _tier(_agreement(_overview(policy, ledger), "NGA", "unicef-nga"),
                 "medium").freshness == "up to date"


def test_windows_met_and_missed_count_rounds_late_or_never_delivered(policy, ledger):
    ledger.record(_record("NGA-R001-partial", NOW - timedelta(days=5)))
    ledger.record(_record("NGA-R001-partial", NOW - timedelta(days=5), recipient="field:x",
                          focal_point_name="X"))  # the same round: one window
    ledger.record(_record("NGA-R002-partial", NOW - timedelta(days=4), deadline_met=False))
    ledger.alert_once("missed", "NGA-R003-partial/unicef-nga", NOW)  # never delivered
    ledger.alert_once("missed", "NGA-R002-partial/unicef-nga", NOW)  # late: counted once
    ledger.alert_once("missed", "NGA-R009-partial/protection-cluster-nga", NOW)
    overview = _overview(policy, ledger)
    status = _agreement(overview, "NGA", "unicef-nga")
    assert (status.windows_met, status.windows_missed) == (1, 2)
    other = _agreement(overview, "NGA", "protection-cluster-nga")
    assert (other.windows_met, other.windows_missed) == (0, 1)
    assert overview.totals["windows_missed"] == 3


def test_failures_await_retry_or_are_refused_until_delivered(policy, ledger):
    failure = DeliveryFailure("unicef-nga", "NGA-R004-partial", "medium", "main", "Aisha Bello",
                              "manual__r4", NOW - timedelta(hours=3), False,
                              "UploadFailed: connection reset by 127.0.0.1:2222")
    ledger.record_failure(failure)
    ledger.record_failure(replace(failure, round_id="NGA-R003-partial", permanent=True,
                                  reason="AgreementRefused: not uploaded: expired"))
    problems = _agreement(_overview(policy, ledger), "NGA", "unicef-nga").problems
    assert {(p.state, p.round_id, p.reason.split(":")[0]) for p in problems} == {
        ("awaiting retry", "NGA-R004-partial", "UploadFailed"),
        ("refused", "NGA-R003-partial", "AgreementRefused")}
    ledger.record(_record("NGA-R004-partial", NOW - timedelta(hours=1)))  # the retry worked
    overview = _overview(policy, ledger)
    assert [p.round_id for p in _agreement(overview, "NGA", "unicef-nga").problems] == [
        "NGA-R003-partial"]
    assert (overview.totals["awaiting_retry"], overview.totals["refused"]) == (0, 1)


def test_an_open_claim_is_in_progress_then_awaits_retry_once_its_lease_ends(policy, ledger):
    from dissemination.ledger.records import ClaimKey

    key = ClaimKey("unicef-nga", "NGA-R006-partial", "medium", "main", "d" * 64)
    ledger.claim(key, "manual__r6", "e" * 64, "sftp_unicef_nga:in", "in/x.zip",
                 NOW - timedelta(hours=3), timedelta(hours=2))
    (problem,) = _agreement(_overview(policy, ledger), "NGA", "unicef-nga").problems
    assert problem.state == "awaiting retry" and "checks the server first" in problem.reason
    (held,) = _agreement(_overview(policy, ledger, NOW - timedelta(hours=2)), "NGA",
                         "unicef-nga").problems
    assert held.state == "in progress"


def test_a_rotated_password_awaits_the_phone_call_until_marked(policy, ledger, tmp_path):
    ledger.record_rotation("unicef-nga", "package_password_unicef_nga", NOW - timedelta(days=100),
                           "Aisha Bello (+234 800 000 0001)")
    ledger.record_rotation("unicef-nga", "package_password_unicef_nga", NOW,
                           "Aisha Bello (+234 800 000 0001)")
    (waiting,) = _agreement(_overview(policy, ledger), "NGA", "unicef-nga").awaiting_call
    assert waiting.rotated_at == NOW and waiting.notified_at is None
    url = ledger.engine.url.render_as_string(hide_password=False)
    assert cli(["ledger", "called", "--agreement", "unicef-nga", "--url", url]) == 0
    assert _agreement(_overview(policy, ledger), "NGA", "unicef-nga").awaiting_call == ()
    assert cli(["ledger", "called", "--agreement", "unicef-nga", "--url", url]) == 1
    assert verify(ledger.engine).ok  # called_at is not part of the chain


def test_risk_assessment_reviews_and_the_audit(policy, ledger):
    """tests/support/policy's NGA was assessed on 2026-10-15 every 180 days: due 2027-04-13."""
    review_due = policy.rulesets["NGA"].risk_assessment.review_due
    states = {when: next(c for c in _overview(policy, ledger, when).countries
                         if c.country == "NGA").review
              for when in (NOW, datetime.combine(review_due - timedelta(days=10),
                                                 datetime.min.time(), UTC),
                           datetime.combine(review_due + timedelta(days=1),
                                            datetime.min.time(), UTC))}
    assert list(states.values()) == ["ok", "due soon", "overdue"]
    ledger.record(_record("NGA-R001-partial", NOW))
    assert _overview(policy, ledger).audit.ok
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("UPDATE deliveries SET row_count = 1"))
    audit = _overview(policy, ledger).audit
    assert not audit.ok and "deliveries id=1" in audit.line


def test_the_page_reads_each_recipients_newest_delivery_without_its_manifest_explanation(
        policy, ledger):
    """Years of history: the page reads each recipient's newest delivery per agreement and
    tier (two at the same instant: both), and of it what it shows, not its ``columns``."""
    ledger.record(_record("NGA-R001-partial", NOW - timedelta(hours=3)))
    ledger.record(_record("NGA-R002-partial", NOW - timedelta(hours=2)))
    ledger.record(_record("NGA-R002-partial", NOW - timedelta(hours=2), deadline_met=None,
                          recipient="field:Musa Ibrahim"))
    ledger.record(_record("NGA-R003-partial", NOW - timedelta(hours=2), deadline_met=None,
                          recipient="field:Musa Ibrahim"))
    ledger.record(_record("NGA-R001-cleaned", NOW - timedelta(days=3), urgency="low"))
    latest, records = ledger.latest(), dict(ledger.numbered())
    assert [i for i, _ in latest] == [2, 3, 4, 5]
    for delivery_id, summary in latest:
        assert not hasattr(summary, "columns")
        whole = records[delivery_id]
        assert {f: getattr(whole, f) for f in vars(summary)} == vars(summary)
        assert summary.delivered_at.tzinfo is not None
    assert [i for i, _ in ledger.latest("SSD")] == []


def test_a_country_alone_reads_its_deliveries_and_shows_what_the_whole_page_shows(policy,
                                                                                   ledger):
    """A page per country (a coordinator's, and a twentieth of the ledger at a thousand
    agreements): the same section as on the whole page, its own totals, every country named."""
    ledger.record(_record("NGA-R001-partial", NOW - timedelta(hours=3)))
    ledger.record(_record("NGA-R001-cleaned", NOW - timedelta(days=40), urgency="low",
                          deadline=None, deadline_met=None))
    ledger.record(_record("SSD-R001-partial", NOW - timedelta(hours=2), country="SSD",
                          agreement_id="unicef-ssd", deadline_met=False))
    ledger.record_failure(DeliveryFailure(
        "unicef-ssd", "SSD-R002-partial", "medium", "main", "Deng Garang", "manual__x",
        NOW - timedelta(hours=1), False, "UploadFailed: retrying is safe"))
    whole = _overview(policy, ledger)
    assert whole.all_countries == tuple(c.country for c in whole.countries)
    for country in whole.all_countries:
        view = LedgerView.read(ledger, NOW, policy, country)
        assert {d.country for _, d in view.latest} <= {country}
        assert {f.agreement_id for f in view.failures} <= {
            a.id for a in policy.agreements.values() if country in a.countries}
        alone = build_overview(policy, view, NOW, verify(ledger.engine), only=country)
        (section,) = [c for c in whole.countries if c.country == country]
        assert alone.countries == (section,)
        assert alone.all_countries == whole.all_countries and alone.audit == whole.audit
        assert alone.totals == build_overview(policy, LedgerView.read(ledger, NOW), NOW,
                                              only=country).totals
    assert sum(build_overview(policy, LedgerView.read(ledger, NOW, policy, c), NOW, only=c)
               .totals["windows_missed"] for c in whole.all_countries) \
        == whole.totals["windows_missed"] == 1
    with pytest.raises(KeyError, match="'XYZ'"):
        build_overview(policy, LedgerView.read(ledger, NOW), NOW, only="XYZ")


# --- the page's reads against the whole history ----------------------------------------------

AGREEMENTS = ("unicef-nga", "protection-cluster-nga")
_delivery = st.tuples(st.sampled_from(AGREEMENTS), st.integers(1, 4),
                      st.sampled_from(["medium", "low"]),
                      st.sampled_from(["primary", "secondary", "field:Musa Ibrahim"]),
                      st.integers(0, 60), st.sampled_from([True, False, None]))
_failure = st.tuples(st.sampled_from(AGREEMENTS), st.integers(1, 4),
                     st.sampled_from(["medium", "low"]),
                     st.sampled_from(["main", "field:Musa Ibrahim"]), st.integers(0, 60),
                     st.booleans())
_history = st.fixed_dictionaries({
    "deliveries": st.lists(_delivery, max_size=14),
    "failures": st.lists(_failure, max_size=5),
    "missed": st.sets(st.tuples(st.sampled_from(AGREEMENTS), st.integers(1, 4)), max_size=4),
    "seen": st.dictionaries(st.integers(1, 4), st.integers(0, 24 * 40), max_size=4),
})


def _round(n: int, urgency: str) -> str:
    return f"NGA-R{n:03d}-{'partial' if urgency == 'medium' else 'cleaned'}"


def _write(ledger, history) -> None:
    for i, (agreement, n, urgency, recipient, hours, met) in enumerate(history["deliveries"]):
        ledger.record(_record(_round(n, urgency), NOW - timedelta(hours=hours),
                              agreement_id=agreement, urgency=urgency, recipient=recipient,
                              content_sha256=f"{i:064d}", deadline_met=met))
    for agreement, n, urgency, slot, hours, permanent in history["failures"]:
        ledger.record_failure(DeliveryFailure(agreement, _round(n, urgency), urgency, slot,
                                              "A. Focal", "run", NOW - timedelta(hours=hours),
                                              permanent, "UploadFailed"))
    for agreement, n in history["missed"]:
        ledger.alert_once("missed", f"{_round(n, 'medium')}/{agreement}", NOW)
    for n, hours in history["seen"].items():
        _seen(ledger.engine, _round(n, "medium"), NOW - timedelta(hours=hours))


def _expected(records, failures, missed, agreement: str) -> dict:
    """The page's figures for one agreement, worked out from every delivery in the ledger."""
    mine = [(i, r) for i, r in records if r.agreement_id == agreement]
    medium = [r for _, r in mine if r.urgency == "medium"]
    met = {r.round_id for r in medium if r.deadline_met}
    late = {r.round_id for r in medium if r.deadline_met is False} - met
    never = {s.partition("/")[0] for s in missed if s.endswith(f"/{agreement}")} - met - late
    last = {}
    for urgency in ("medium", "low"):
        newest = {}
        for i, r in mine:
            if r.urgency == urgency and (r.recipient not in newest or (
                    r.delivered_at, i) > newest[r.recipient]):
                newest[r.recipient] = (r.delivered_at, i)
        last[urgency] = sorted(i for _, i in newest.values())
    newest_failure = {}
    for f in failures:  # in id order
        key = (f.round_id, f.urgency, f.slot)
        if f.agreement_id == agreement and (
                key not in newest_failure or f.failed_at >= newest_failure[key].failed_at):
            newest_failure[key] = f
    done = {key for _, r in mine for key, f in newest_failure.items()
            if (r.round_id, r.urgency, slot_of(r.recipient)) == key
            and r.delivered_at >= f.failed_at}
    return {"windows": (len(met), len(late) + len(never)), "last": last,
            "problems": sorted((f.round_id, f.urgency, f.permanent)
                               for key, f in newest_failure.items() if key not in done),
            "delivered": {r.round_id for r in medium}}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=_history)
def test_the_page_reads_what_the_whole_history_says(policy, sql_engine, history):
    """On SQLite and PostgreSQL, over random histories (rounds delivered late, on time,
    without a window, to several recipients at the same instant; failures followed or not;
    windows missed; rounds seen): each recipient's newest delivery, the windows met and
    missed, the failures still open and the rounds owed are what every delivery of the
    ledger, read whole, says."""
    ledger = open_upgraded(sql_engine)
    with sql_engine.begin() as conn:  # each example starts from an empty ledger
        for table in ("deliveries", "delivery_failures", "alerts", "intake", "audit_chain"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    _write(ledger, history)
    overview = build_overview(policy, LedgerView.read(ledger, NOW), NOW)
    records, failures = ledger.numbered(), ledger.failures()
    missed = [s for s, _ in ledger.alerts("missed")]
    for agreement in AGREEMENTS:
        status = _agreement(overview, "NGA", agreement)
        expected = _expected(records, failures, missed, agreement)
        assert (status.windows_met, status.windows_missed) == expected["windows"]
        for tier in status.tiers:
            assert sorted(d.delivery_id for d in tier.last) == expected["last"][tier.urgency]
        assert sorted((p.round_id, p.urgency, p.state == "refused")
                      for p in status.problems) == expected["problems"]
        owed = {_round(n, "medium") for n, hours in history["seen"].items()
                if hours <= 24 * 30} - expected["delivered"]
        medium = _tier(status, "medium")
        assert (medium.freshness == "up to date") == (not owed), medium.detail


def test_a_reader_of_some_countries_sees_nothing_of_the_others(include, ledger):
    """Of an agreement covering NGA and SSD, NGA's reader sees NGA's failures only.

    Countries are rights: no other country's name either, and the audit's verdict without its
    line (a finding can name another country's round)."""
    from dissemination.policy import load_policy

    shared = "unicef-ssd"
    agreement = include / "agreements" / f"{shared}.yaml"
    agreement.write_text(agreement.read_text().replace("countries: [SSD]", "countries: [NGA, SSD]")
                         .replace(", enumerator_comments]", "]"))  # Secret in NGA
    policy = load_policy(include)
    failure = DeliveryFailure(shared, "NGA-R003-partial", "medium", "main", "Achol Deng",
                              "manual__r3", NOW - timedelta(hours=2), True, "AgreementRefused: x")
    ledger.record_failure(failure)
    ledger.record_failure(replace(failure, round_id="SSD-R002-partial", reason="UploadFailed: y"))
    whole = _overview(policy, ledger)
    nga = build_overview(policy, LedgerView.read(ledger, NOW, policy, "NGA"), NOW,
                         verify(ledger.engine), readable=["NGA"])
    assert [p.round_id for p in _agreement(whole, "SSD", shared).problems] == [
        "SSD-R002-partial"]
    assert [c.country for c in nga.countries] == list(nga.all_countries) == ["NGA"]
    assert _agreement(nga, "NGA", shared) == _agreement(whole, "NGA", shared)
    assert [p.round_id for p in _agreement(nga, "NGA", shared).problems] == [
        "NGA-R003-partial"]
    assert nga.totals["refused"] == 1 and whole.totals["refused"] == 2
    assert "SSD" not in repr(nga) and "UploadFailed" not in repr(nga)
    assert nga.audit.ok and nga.audit.line != whole.audit.line == verify(ledger.engine).line()
    every = build_overview(policy, LedgerView.read(ledger, NOW), NOW, verify(ledger.engine),
                           readable=whole.all_countries)
    assert every == replace(whole, generated_at=every.generated_at)


def test_each_country_lists_where_its_rules_depart_from_the_default_with_reasons(include,
                                                                                  ledger):
    from dissemination.policy import load_policy

    path = include / "rules" / "NGA.yaml"
    path.write_text(path.read_text() + "\ndrops_default:\n  urgent_signals: "
                    "{unaccompanied_children_jump: Sites are re-registered each round here}\n")
    countries = {c.country: c for c in _overview(load_policy(include), ledger).countries}
    assert [line.split(":")[1].strip() for line in countries["NGA"].overrides] == [
        "primary_need", "drops urgent_signals.unaccompanied_children_jump of the default (Sites "
        "are re-registered each round here)"]
    assert countries["BFA"].overrides == ()
