"""The run's steps as plain functions (no Airflow): plan, package, deliver, record."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from dissemination.classification import Urgency
from dissemination.delivery import AgreementRefused, Delivery, PasswordRotated, claim_key, deliver
from dissemination.devkit.local_sftp import LocalSftpServer
from dissemination.disclosure import NotAsDelivered
from dissemination.intake import staging
from dissemination.ledger.migrations import open_upgraded
from dissemination.runs import (
    PackagingRun,
    UnknownAgreement,
    deadline_states,
    package_deliveries,
    packaged_columns,
    packaging,
    plan_deliveries,
    recipients,
    rotate_password,
    rotations_due,
    round_columns,
    stage_round,
)

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
PASSWORD = "a-long-enough-test-password"


def test_staging_never_writes_secret_columns(policy, round_nga, tmp_path):

    meta, df = round_nga
    staged = stage_round(meta, df, policy, tmp_path / "r" / "round.arrow")
    on_disk = staging.read_staged(staged["path"])
    # the uncovered enumerator_id travels by position, never by its header
    assert staged["columns"] == [*df.columns[:-1], "column 23"] and staged["rows"] == len(df)
    assert not {"ki_name", "ki_phone", "enumerator_comments", "enumerator_id"} & set(on_disk)
    assert "unaccompanied_children" in on_disk
    raw = (tmp_path / "r" / "round.arrow").read_bytes()
    assert not any(phone.encode() in raw for phone in df["ki_phone"][:20])


def test_plan_covers_every_medium_agreement_and_survives_xcom(policy, round_nga):
    meta, df = round_nga
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2026, 11, 2))
    assert [(p.agreement_id, p.recipient) for p in plans] == [
        ("protection-cluster-nga", "primary"), ("unicef-nga", "primary"),
        ("unicef-nga", "field:Musa Ibrahim")]
    assert all(p.status == "planned" for p in plans)
    assert plans[1].fallback["name"] == policy.focal_points["unicef-nga"].secondary.name
    for plan in plans:
        assert Delivery.from_xcom(plan.to_xcom()) == plan
        assert len(plan.explanation) == df.shape[1]
        assert not any(v in " ".join(plan.explanation) for v in df["ki_phone"])


def test_expired_agreement_is_refused_and_its_delivery_fails_loudly(policy, round_nga):
    meta, df = round_nga
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2027, 6, 1))
    refused = {p.agreement_id: p for p in plans if p.status == "refused"}
    assert set(refused) == {"protection-cluster-nga"}
    assert "2026-06-01..2027-05-31" in refused["protection-cluster-nga"].reason
    with pytest.raises(AgreementRefused, match="protection-cluster-nga"):
        deliver(refused["protection-cluster-nga"], lambda conn: pytest.fail("no connection"),
                      policy, None, datetime(2027, 6, 1, tzinfo=UTC), "run")


def test_asking_for_an_agreement_that_does_not_cover_the_round(policy, round_nga):
    meta, df = round_nga
    with pytest.raises(UnknownAgreement, match="'who-nga'"):
        plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                              today=date(2026, 11, 2), only=["who-nga"])
    only = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                 today=date(2026, 11, 2), only=["unicef-nga"])
    assert {p.agreement_id for p in only} == {"unicef-nga"}


def _run_once(policy, meta, df, ledger, tmp_path, target_for, only=("unicef-nga",)):
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2026, 11, 2), only=only)
    packaged = package_deliveries(df, meta, plans, policy, tmp_path / "pk",
                                        lambda variable: PASSWORD, ledger, PackagingRun(NOW))
    return [deliver(d, target_for, policy, ledger, NOW, "run") for d in packaged]


def test_full_cycle_then_nothing_twice(policy, round_nga, server, tmp_path):
    meta, df = round_nga
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    first = _run_once(policy, meta, df, ledger, tmp_path, lambda conn: server.target())
    assert [d.status for d in first] == ["recorded", "recorded"]  # primary and the field FP
    assert [d.recipient for d in first] == ["primary", "field:Musa Ibrahim"]
    second = _run_once(policy, meta, df, ledger, tmp_path, lambda conn: server.target())
    assert [d.status for d in second] == ["already_delivered"] * 2
    assert [d.remote_path for d in second] == [d.remote_path for d in first]
    assert len(ledger.all()) == 2
    assert len(list(server.root.rglob("*.zip"))) == 2
    assert not list((tmp_path / "pk").glob("*.zip"))[2:]  # duplicates were discarded


def test_no_focal_point_and_no_hash_of_the_data_in_uploaded_names_or_notices(
        policy, round_nga, server, tmp_path):
    """Uploaded names and the notices carried the field focal point's name and 48 bits of the
    CSV's SHA-256; the partner's server and the e-mail's path hold neither now, only the zip's
    own hash (the notice's SHA-256 is the file's, as uploaded)."""
    from dissemination.delivery.notices import delivery_notice

    meta, df = round_nga
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    done = _run_once(policy, meta, df, ledger, tmp_path, lambda conn: server.target())
    assert [d.status for d in done] == ["recorded", "recorded"]
    people = policy.focal_points["unicef-nga"]
    names = {w.lower() for p in (people.primary, people.secondary, *people.field)
             for w in p.name.split()}
    notices = [delivery_notice(d, policy.dtm["NGA"].on_duty()) for d in done]
    uploaded = [str(p.relative_to(server.root)) for p in server.root.rglob("*")]
    said = [*uploaded, *(r.package_name for r in ledger.all()),
            *(f"{n.subject}\n{n.body}" for n in notices)]
    for text in said:
        assert not names & set(re.split(r"[^a-z]+", text.lower())), text
        assert not any(d.content_sha256[i:i + 8] in text for d in done for i in range(57)), text
    for d, notice in zip(done, notices, strict=True):
        assert (server.root / d.remote_path).name.endswith(f"_{d.package_sha256[:16]}.zip")
        assert d.remote_path in notice.body and d.package_sha256 in notice.body
    assert len({d.remote_path for d in done}) == 2  # the primary's and the field's differ


def test_a_dead_attempt_s_partial_goes_when_a_later_run_makes_the_zip_again(
        policy, round_nga, server, tmp_path):
    """A package's name is its zip's hash: a run that makes the zip again names it anew. The
    temporary file an attempt killed without a word left under the earlier name is found and
    removed all the same (the claim names it), as when names came from the data."""
    meta, df = round_nga
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2026, 11, 2), only=("unicef-nga",))

    def packaged(folder):
        return package_deliveries(df, meta, plans, policy, tmp_path / folder,
                                        lambda variable: PASSWORD, ledger, PackagingRun(NOW))[0]
    dead, later = packaged("a"), packaged("b")
    assert Path(dead.package_path).name != Path(later.package_path).name
    remote_dir = dead.destination.split(":", 1)[1]
    earlier = f"{remote_dir}/{Path(dead.package_path).name}"
    ledger.claim(claim_key(dead), "dead-run", dead.package_sha256, dead.destination,
                 earlier, NOW, timedelta(hours=1))
    left = server.root / remote_dir / f".{Path(earlier).name}.0123abcd.partial"
    left.write_bytes(Path(dead.package_path).read_bytes()[:1000])
    done = deliver(later, lambda conn: server.target(), policy, ledger,
                         NOW + timedelta(hours=2), "run-2")
    assert done.status == "recorded" and not left.exists()
    assert [p.name for p in (server.root / remote_dir).iterdir()] == [
        Path(later.package_path).name]


def test_a_package_made_before_a_rotation_is_not_uploaded(policy, round_nga, server, tmp_path):
    """The password rotated between package and deliver (a retried deliver, a run cleared
    days later): the partner would get a file the password they are told cannot open."""
    meta, df = round_nga
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2026, 11, 2), only=("unicef-nga",))
    packaged = package_deliveries(df, meta, plans, policy, tmp_path / "pk",
                                        lambda variable: PASSWORD, ledger, PackagingRun(NOW))
    rotated = "a-new-password-after-rotation"
    for delivery in packaged:
        with pytest.raises(PasswordRotated, match="package_password_unicef_nga.*changed "
                                                        "after .*Clear the run from `package`"):
            deliver(delivery, lambda conn: server.target(), policy, ledger, NOW, "run",
                          password_for=lambda variable: rotated)
    assert ledger.all() == [] and not list(server.root.rglob("*.zip"))
    done = [deliver(d, lambda conn: server.target(), policy, ledger, NOW, "run",
                          password_for=lambda variable: PASSWORD) for d in packaged]
    assert [d.status for d in done] == ["recorded", "recorded"]


def test_a_field_focal_point_receives_only_their_area(policy, round_nga, server, tmp_path):
    from dissemination.package.archive import open_package

    meta, df = round_nga
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    _, field = _run_once(policy, meta, df, ledger, tmp_path, lambda conn: server.target())
    person = policy.focal_points["unicef-nga"].field[0]
    _, data = open_package(server.root / field.remote_path, PASSWORD)
    assert set(data["admin2_pcode"]) == set(person.areas["admin2_pcode"])
    assert len(data) == df["admin2_pcode"].isin(person.areas["admin2_pcode"]).sum() > 0
    assert field.remote_path.startswith(person.destination.remote_dir)
    (row,) = [r for r in ledger.all() if r.recipient.startswith("field:")]
    assert row.focal_point_name == person.name and row.row_count == len(data)


def test_a_field_focal_point_s_areas_match_as_the_policy_check_reads_them(include, round_nga):
    """The load check compares areas in normal form, so `ng008001` and ` NG008013` pass it;
    matched exactly against the round's canonical values, they selected no row."""
    from dissemination.policy import load_policy

    path = include / "focal_points" / "unicef-nga.yaml"
    path.write_text(path.read_text().replace("[NG008001, NG008013]", "[ng008001, ' NG008013']"))
    policy = load_policy(include)
    _, df = round_nga
    (field,) = [r for r in recipients(policy.agreements["unicef-nga"],
                                            policy.focal_points["unicef-nga"])
                if r["recipient"].startswith("field:")]
    rows = packaging._rows_of(df, field["areas"])
    assert rows.sum() > 0
    assert rows.tolist() == df["admin2_pcode"].isin(["NG008001", "NG008013"]).tolist()


def test_a_rotated_password_is_passed_on_to_everyone_who_opens_the_packages(policy):
    """Only the primary was named: with the primary on leave, the secondary received packages
    locked with a password nobody told them, and field focal points were never told."""
    from dissemination.delivery.notices import rotation_notice

    agreement = policy.agreements["unicef-nga"]
    people = policy.focal_points["unicef-nga"]
    away = people.model_copy(update={"primary": people.primary.model_copy(
        update={"available": False})})
    body = rotation_notice(agreement, away, ("dtm@example.org",), "UNICEF").body
    for person in (people.primary, people.secondary, *people.field):
        assert f"- {person.name} ({person.title}, {person.mobile})" in body
    assert f"{people.primary.mobile}), unavailable now: when back" in body


def test_primary_unavailable_goes_to_the_secondary(policy, round_nga, server, tmp_path):
    meta, df = round_nga
    people = policy.focal_points["unicef-nga"]
    away = policy.model_copy(update={"focal_points": {**policy.focal_points, "unicef-nga":
        people.model_copy(update={"primary": people.primary.model_copy(
            update={"available": False})})}})
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    main, _ = _run_once(away, meta, df, ledger, tmp_path, lambda conn: server.target())
    assert main.recipient == "secondary" and main.recipient_name == people.secondary.name
    assert main.remote_path.startswith(people.secondary.destination.remote_dir)


def test_primary_failing_permanently_falls_back_to_the_secondary(policy, round_nga, server,
                                                                  tmp_path):
    """The primary's server shows another host key: nothing goes there, the secondary gets it."""
    meta, df = round_nga
    impostor = LocalSftpServer(tmp_path / "impostor")
    impostor._write_config()
    primary_conn = policy.agreements["unicef-nga"].destination.sftp_conn_id

    def target_for(conn_id):
        return server.target(impostor.host_key if conn_id == primary_conn else None)

    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    main, _ = _run_once(policy, meta, df, ledger, tmp_path, target_for)
    assert main.recipient == "secondary" and "presented host key" in main.reason
    primary_dir = server.root / policy.agreements["unicef-nga"].destination.remote_dir
    assert not list(primary_dir.iterdir())
    assert {r.recipient for r in ledger.all()} == {"secondary", "field:Musa Ibrahim"}


def test_no_available_focal_point_is_refused(policy, round_nga):
    meta, df = round_nga
    people = policy.focal_points["protection-cluster-nga"]
    off = {"available": False}
    gone = policy.model_copy(update={"focal_points": {**policy.focal_points,
        "protection-cluster-nga": people.model_copy(update={
            "primary": people.primary.model_copy(update=off),
            "secondary": people.secondary.model_copy(update=off)})}})
    (plan,) = plan_deliveries(gone, meta, list(df.columns), Urgency.MEDIUM,
                                    today=date(2026, 11, 2), only=["protection-cluster-nga"])
    assert plan.status == "refused" and "no available focal point" in plan.reason
    with pytest.raises(AgreementRefused):
        deliver(plan, lambda conn: pytest.fail("no connection"), gone, None, NOW, "run")


def test_deadline_states(policy, tmp_path):
    from datetime import timedelta

    from dissemination.intake.source import RoundMeta
    from dissemination.ledger.records import DeliveryRecord

    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    now = NOW
    fresh = RoundMeta("NGA-R001-partial", "NGA", "partial", now - timedelta(hours=2))
    old = RoundMeta("NGA-R002-partial", "NGA", "partial", now - timedelta(hours=40))
    states = {(s.round_id, s.agreement_id): s.state
              for s in deadline_states(policy, [fresh, old], ledger, now)}
    assert states == {("NGA-R001-partial", "protection-cluster-nga"): "pending",
                      ("NGA-R001-partial", "unicef-nga"): "pending",
                      ("NGA-R002-partial", "protection-cluster-nga"): "pending",  # 72 h
                      ("NGA-R002-partial", "unicef-nga"): "at_risk"}  # 8 of 48 h left

    def delivered(meta, agreement_id, at):
        ledger.record(DeliveryRecord(
            agreement_id=agreement_id, organisation="x", recipient="primary",
            focal_point_name="x", focal_point_email="x@y.z", round_id=meta.round_id,
            country="NGA", urgency="medium", level="site", rules_version="1", columns="[]",
            row_count=1, content_sha256=meta.round_id + agreement_id, package_sha256="p",
            package_name="p", destination="d", remote_path="r", delivered_at=at))

    delivered(fresh, "unicef-nga", now)
    delivered(old, "unicef-nga", now + timedelta(hours=9))  # after the 48 h window
    later = now + timedelta(hours=40)
    states = {(s.round_id, s.agreement_id): s.state
              for s in deadline_states(policy, [fresh, old], ledger, later)}
    assert states[("NGA-R001-partial", "unicef-nga")] == "met"
    assert states[("NGA-R002-partial", "unicef-nga")] == "missed"
    assert states[("NGA-R002-partial", "protection-cluster-nga")] == "missed"  # never delivered


def test_rotations_are_due_on_the_plan(policy, tmp_path):
    from datetime import timedelta

    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    assert {a.id for a in rotations_due(policy, ledger, NOW)} == set(policy.agreements)
    stored = {}
    for agreement in rotations_due(policy, ledger, NOW):
        who = rotate_password(agreement, policy, ledger, NOW, stored.__setitem__)
        people = policy.focal_points[agreement.focal_points]
        assert who.startswith(people.primary.name)
        assert all(p.name in who for p in (people.secondary, *people.field))
    assert len(set(stored.values())) == len(policy.agreements)
    assert all(len(v) >= 16 for v in stored.values())
    assert rotations_due(policy, ledger, NOW + timedelta(days=59)) == []
    due = rotations_due(policy, ledger, NOW + timedelta(days=60))
    assert [a.id for a in due] == ["protection-cluster-nga"]  # rotate_every_days: 60


def test_a_packaging_job_never_shows_its_passwords():
    """Forked packaging workers inherit the job: its repr (a traceback's locals, a debugger)
    printed every agreement's password."""
    job = packaging._Job(None, None, None, None, None, None, {"package_password_x": PASSWORD}, [])
    assert PASSWORD not in repr(job) and "package_password_x" not in repr(job)


def _versions_policy(include):
    """unicef-nga's medium tier per site with small counts suppressed; its low tier per state."""
    import yaml

    from dissemination.policy import load_policy

    path = include / "agreements" / "unicef-nga.yaml"
    agreement = yaml.safe_load(path.read_text())
    agreement["tiers"]["medium"]["indicators"] = ["round_id", "site_id", "admin1_pcode",
                                                  "admin2_pcode", "unaccompanied_children"]
    agreement["tiers"]["medium"].pop("exact_counts")
    agreement["tiers"]["low"] = {"schedule": "monthly", "aggregate_to": "admin1",
                                 "indicators": ["round_id", "admin1_pcode", "admin1_name",
                                                "unaccompanied_children"]}
    path.write_text(yaml.safe_dump(agreement))
    return load_policy(include)


def _counts(values):
    return pd.array(values, dtype="int64[pyarrow]")


def _six_sites(round_nga, children):
    """Six sites of one LGA (the field focal point's too), their children as given."""
    from dataclasses import replace

    meta, df = round_nga
    six = df[df["admin2_pcode"] == "NG008001"].head(6).reset_index(drop=True)
    assert len(six) == 6
    six["unaccompanied_children"] = _counts(children)
    return replace(meta, round_id="NGA-R001-partial", status="partial"), six


def _cleaned(meta, df, children=None):
    from dataclasses import replace

    df = df.assign(round_id="NGA-R001-cleaned")
    if children is not None:
        df["unaccompanied_children"] = _counts(children)
    return replace(meta, round_id="NGA-R001-cleaned", status="cleaned"), df


def _state_total(policy, meta, df, ledger, tmp_path, read_export):
    from dissemination.package.archive import open_package

    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.LOW,
                                  today=date(2026, 11, 2), only=("unicef-nga",))
    packaged = package_deliveries(df, meta, plans, policy, tmp_path / "pk-low",
                                        lambda variable: PASSWORD, ledger,
                                        PackagingRun(NOW, read_export=read_export))
    main = next(d for d in packaged if d.recipient == "primary")
    if main.status != "packaged":
        return main
    _, data = open_package(main.package_path, PASSWORD)
    return [None if pd.isna(v) else int(v) for v in data["unaccompanied_children"]]


def test_a_cleaned_round_is_protected_with_the_partial_tables_its_recipient_holds(
        include, round_nga, server, tmp_path):
    """Per site (partial, medium path) one count of 2 is hidden; per state (cleaned, monthly,
    the same values) the state total minus the visible sites would give it back. Delivered
    through the real server, kept in the ledger, rebuilt and checked by its content hash."""
    from dissemination.ledger.tables import tables_shown

    policy = _versions_policy(include)
    meta, df = _six_sites(round_nga, [2, 9, 8, 7, 6, 5])
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2026, 11, 2), only=("unicef-nga",))
    packaged = package_deliveries(df, meta, plans, policy, tmp_path / "pk",
                                        lambda variable: PASSWORD, ledger, PackagingRun(NOW))
    done = [deliver(d, lambda conn: server.target(), policy, ledger, NOW, "run")
            for d in packaged]
    assert [d.status for d in done] == ["recorded", "recorded"]  # the primary and field FP
    rows, kept = ledger.shown_of("NGA-R001-partial")
    assert {r[:2] for r in rows} == {("unicef", "unicef-nga")} and len(rows) == 2
    (shown,) = kept.values()  # the two packages show the same table, kept once
    assert shown.blanks["unaccompanied_children"].tolist() == [True] + [False] * 5

    cleaned, now = _cleaned(meta, df)
    alone = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'alone.db'}"))
    # The package task reads the cleaned round whole for an organisation holding its partial
    # version (linked by any column), and only what it ships for one holding nothing.
    low = plan_deliveries(policy, cleaned, list(now.columns), Urgency.LOW,
                                today=date(2026, 11, 2), only=("unicef-nga",))
    assert round_columns(cleaned.round_id, low, list(now.columns), ledger, policy) \
        == list(now.columns)
    shipped = round_columns(cleaned.round_id, low, list(now.columns), alone, policy)
    assert shipped == packaged_columns(low, list(now.columns))
    assert "unaccompanied_children" in shipped and set(shipped) < set(now.columns)
    assert _state_total(policy, cleaned, now, alone, tmp_path, None) == [37]  # the gap
    assert _state_total(policy, cleaned, now, ledger, tmp_path, lambda rid, version: df) == [None]

    # Cleaning corrected the hidden site (2 -> 3): the difference tells the 3; still hidden.
    cleaned, corrected = _cleaned(meta, df, [3, 9, 8, 7, 6, 5])
    total = _state_total(policy, cleaned, corrected, ledger, tmp_path, lambda rid, version: df)
    assert total == [None]

    # The partial round exported again since (another value): not the table delivered.
    changed = df.assign(unaccompanied_children=_counts([2, 9, 8, 7, 6, 4]))
    refused = _state_total(policy, cleaned, now, ledger, tmp_path, lambda rid, version: changed)
    assert refused.status == "refused"
    assert "withheld: UNICEF holds tables of NGA-R001-partial" in refused.reason
    assert "not the table delivered" in refused.reason

    # Delivered before what packages show was kept: cannot be judged, withheld.
    with ledger.engine.begin() as conn:
        conn.execute(tables_shown.delete())
    refused = _state_total(policy, cleaned, now, ledger, tmp_path, lambda rid, version: df)
    assert refused.status == "refused" and "without a record of what they showed" in \
        refused.reason


def _tier_policy(include, tier: str, per_state: bool):
    """unicef-nga's ``tier`` per site or per state (small counts suppressed), received by its
    primary alone."""
    import yaml

    from dissemination.policy import load_policy

    path = include / "agreements" / "unicef-nga.yaml"
    agreement = yaml.safe_load(path.read_text())
    agreement["tiers"][tier] = {
        **{k: v for k, v in agreement["tiers"][tier].items() if k != "exact_counts"},
        **({"aggregate_to": "admin1", "indicators": ["round_id", "admin1_pcode", "admin1_name",
                                                     "unaccompanied_children"]} if per_state else
           {"indicators": ["round_id", "site_id", "admin1_pcode", "unaccompanied_children"]})}
    path.write_text(yaml.safe_dump(agreement))
    people = include / "focal_points" / "unicef-nga.yaml"
    focal = yaml.safe_load(people.read_text())
    focal.pop("field", None)
    people.write_text(yaml.safe_dump(focal))
    return load_policy(include)


def _children(policy, meta, df, ledger, folder, exports, version, server=None):
    """unicef-nga's package of ``meta``'s export ``version`` (delivered through ``server`` if
    given): children per site or state, or the delivery if not packaged."""
    from dissemination.package.archive import open_package

    urgency = Urgency.MEDIUM if meta.status == "partial" else Urgency.LOW
    plans = plan_deliveries(policy, meta, list(df.columns), urgency,
                                  today=date(2026, 11, 2), only=("unicef-nga",))
    (package,) = package_deliveries(
        df, meta, plans, policy, folder, lambda variable: PASSWORD, ledger,
        PackagingRun(NOW, read_export=lambda rid, v: exports[v], version=version))
    if package.status != "packaged":
        return package
    if server is not None:
        done = deliver(package, lambda conn: server.target(), policy, ledger, NOW, "run")
        assert done.status == "recorded"
    _, data = open_package(package.package_path, PASSWORD)
    key = "admin1_pcode" if "site_id" not in data else "site_id"
    return {k: None if pd.isna(v) else int(v)
            for k, v in zip(data[key], data["unaccompanied_children"], strict=True)}


@pytest.mark.parametrize("status", ["partial", "cleaned"])
def test_a_round_exported_again_is_protected_with_the_export_delivered_before(
        status, include, round_nga, server, tmp_path):
    """The first export goes out per site, a count of 2 hidden. The agreement is then revised
    to per state, and the round exported again (a partial round corrected in the urgent
    window, a cleaned one republished; a site of another state added): the state total minus
    the sites seen gives the 2 back. Judged with the first export as kept (its version, as the
    package task keeps it), the total is hidden; with nothing held, shown."""
    from dissemination.ledger.tables import tables_shown

    meta, six = _six_sites(round_nga, [2, 9, 8, 7, 6, 5])
    if status == "cleaned":
        meta, six = _cleaned(meta, six)
    tier = "medium" if status == "partial" else "low"
    state = six["admin1_pcode"][0]
    other = round_nga[1][round_nga[1]["admin1_pcode"] != state].head(1)
    seven = pd.concat([six, other.assign(round_id=meta.round_id)], ignore_index=True)
    seven["unaccompanied_children"] = _counts([2, 9, 8, 7, 6, 5, 40])
    v1, v2, v3 = "1" * 64, "2" * 64, "3" * 64
    exports = {v1: six, v2: seven}
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    first = _children(_tier_policy(include, tier, per_state=False), meta, six, ledger,
                      tmp_path / "p1", exports, v1, server)
    assert list(first.values()) == [None, 9, 8, 7, 6, 5]
    (kept,) = ledger.shown_of(meta.round_id)[1].values()
    assert kept.version == v1

    policy = _tier_policy(include, tier, per_state=True)
    alone = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'alone.db'}"))
    assert _children(policy, meta, seven, alone, tmp_path / "p0", exports, v2)[state] == 37
    urgency = Urgency.MEDIUM if status == "partial" else Urgency.LOW
    plans = plan_deliveries(policy, meta, list(seven.columns), urgency,
                                  today=date(2026, 11, 2), only=("unicef-nga",))
    assert round_columns(meta.round_id, plans, list(seven.columns), ledger, policy) \
        == list(seven.columns)  # read whole: the exports are linked by site
    assert _children(policy, meta, seven, ledger, tmp_path / "p2", exports, v2)[state] is None

    # The first export's kept copy is gone (removed from the store): withheld, saying why.
    def gone(rid, version):
        raise NotAsDelivered(f"{rid}: the export its tables were made from cannot be read")

    (refused,) = package_deliveries(seven, meta, plans, policy, tmp_path / "p3",
                                          lambda variable: PASSWORD, ledger,
                                          PackagingRun(NOW, read_export=gone, version=v3))
    assert refused.status == "refused"
    assert f"withheld: UNICEF holds tables of {meta.round_id}" in refused.reason
    assert "cannot be read" in refused.reason

    # Kept before exports were (no version): rebuilt from the survey database's export. The
    # first, still there: rebuilt, and judged with; the second: not as delivered, withheld.
    with ledger.engine.begin() as conn:
        conn.execute(tables_shown.update().values(
            shown=kept.to_json().replace(f', "version": "{v1}"', "")))
    assert {k.version for k in ledger.shown_of(meta.round_id)[1].values()} == {""}
    exports[""] = six
    assert _children(policy, meta, six, ledger, tmp_path / "p4", exports, "")[state] is None
    exports[""] = seven
    refused = _children(policy, meta, seven, ledger, tmp_path / "p5", exports, v2)
    assert refused.status == "refused" and "does not rebuild" in refused.reason
