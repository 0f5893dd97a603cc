"""The low-urgency path through real Airflow: a month of cleaned rounds, re-runs, stops."""

from __future__ import annotations

import re
import shutil
import sqlite3
from datetime import UTC, date, datetime, timedelta

import pytest
from conftest import POLICY_DIR

from dissemination.devkit.sandbox import Sandbox
from dissemination.devkit.synthetic import generate_round
from dissemination.intake.source import write_round
from dissemination.ledger.store import Ledger
from dissemination.package.archive import open_package

# System tier: `airflow dags test` runs the monthly DAG in a sandbox over sshd.
pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    home = tmp_path_factory.mktemp("monthly")
    shutil.copytree(POLICY_DIR, home / "include")  # one test makes a review overdue
    box = Sandbox(home, home / "include")
    with box:
        box.init(sites=120, seed=8)
        box.november = box.run_monthly("2026-12-01")  # shares November
        yield box


def _ledger(sandbox) -> Ledger:
    return sandbox.ledger()


def _states(sandbox) -> dict[str, set[str]]:
    with sqlite3.connect(sandbox.airflow_home / "airflow.db") as db:
        rows = db.execute(
            "select task_id, state from task_instance where run_id = (select run_id from dag_run "
            "where dag_id = 'monthly_dissemination' order by id desc limit 1)").fetchall()
    states: dict[str, set[str]] = {}
    for task_id, state in rows:
        states.setdefault(task_id, set()).add(state)
    return states


def test_the_month_of_cleaned_rounds_reaches_every_low_tier(sandbox):
    assert sandbox.november.returncode == 0, sandbox.november.stdout[-3000:]
    assert all(s == {"success"} for s in _states(sandbox).values()), _states(sandbox)
    rows = {(r.agreement_id, r.round_id): r for r in _ledger(sandbox).all()
            if r.recipient == "primary"}
    assert set(rows) == {("unicef-nga", "NGA-R001-cleaned"),
                         ("protection-cluster-nga", "NGA-R001-cleaned"),
                         ("unicef-ssd", "SSD-R001-cleaned")}
    field = [r for r in _ledger(sandbox).all() if r.recipient.startswith("field:")]
    assert [(r.agreement_id, r.round_id) for r in field] == [("unicef-nga", "NGA-R001-cleaned")]
    assert {r.urgency for r in rows.values()} == {"low"}
    assert rows[("protection-cluster-nga", "NGA-R001-cleaned")].level == "admin1"
    assert rows[("unicef-nga", "NGA-R001-cleaned")].level == "site"


def test_per_state_the_protection_sector_gets_safety_and_military(sandbox, tmp_path):
    row = next(r for r in _ledger(sandbox).all() if r.agreement_id == "protection-cluster-nga")
    password = sandbox.password("package_password_protection_cluster_nga")
    manifest, data = open_package(sandbox.sftp.root / row.remote_path, password)
    assert manifest["level"] == "admin1" and manifest["urgency"] == "low"
    assert "site_id" not in data.columns
    assert any(c.startswith("feeling_of_safety=") for c in data.columns)
    assert "armed_actors_military=yes" in data.columns
    assert data["admin1_pcode"].is_unique


def test_rerunning_the_month_delivers_nothing_twice(sandbox):
    before = sorted(p.name for p in sandbox.landed())
    rerun = sandbox.run_monthly("2026-12-01")
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "already_delivered" in rerun.stdout
    assert sorted(p.name for p in sandbox.landed()) == before
    assert len(_ledger(sandbox).all()) == 4  # three organisations and one field focal point


def test_invalid_rounds_and_overdue_reviews_stop_only_themselves(sandbox):
    survey = sandbox.survey()
    december = datetime(2026, 12, 10, tzinfo=UTC)
    nga, ssd = sandbox.policy.rulesets["NGA"], sandbox.policy.rulesets["SSD"]
    good = generate_round(nga, 2, 60, seed=1, status="cleaned", collected_at=december)
    holes_meta, holes = generate_round(nga, 3, 60, seed=2, status="cleaned",
                                       collected_at=december)
    holes["idp_households"] = holes["idp_households"].astype("float").mask(holes.index == 5)
    overdue = generate_round(ssd, 2, 60, seed=3, status="cleaned", collected_at=december)
    for meta, df in (good, (holes_meta, holes), overdue):
        write_round(survey, meta, df)

    # SSD's review falls due yesterday by the wall clock (not by the run's logical date).
    rules = sandbox.include / "rules" / "SSD.yaml"
    assessed = date.fromisoformat(re.search(r"date: (\S+)", rules.read_text()).group(1))
    due = datetime.now(UTC).date() - timedelta(days=1)
    rules.write_text(re.sub(r"review_every_days: \d+",
                            f"review_every_days: {(due - assessed).days}", rules.read_text()))
    result = sandbox.run_monthly("2027-01-01")  # December
    states = _states(sandbox)
    assert states["deliver"] == {"success"} and states["notify"] == {"success"}
    assert states["finish"] == {"failed"}
    assert "NGA-R003-cleaned" in result.stdout and "not_be_null on idp_households" in result.stdout
    docs = sorted((sandbox.work_dir / "data_docs" / "validations").rglob("*.html"))
    assert docs and any(f"Data Docs: {d}" in result.stdout for d in docs)
    assert "risk assessment for SSD" in result.stdout and f"due for review on {due}" in \
        result.stdout
    delivered = {r.round_id for r in _ledger(sandbox).all()}
    assert "NGA-R002-cleaned" in delivered
    assert not {"NGA-R003-cleaned", "SSD-R002-cleaned"} & delivered


def test_a_past_logical_date_does_not_revive_an_expired_agreement(sandbox):
    """The Protection Sector's agreement ended yesterday. An urgent run with a logical date
    from when it was valid (a backfill, a REST trigger, an old run cleared) must not deliver:
    validity is checked against the wall clock."""
    path = sandbox.include / "agreements" / "protection-cluster-nga.yaml"
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    path.write_text(re.sub(r"valid_until: \S+", f"valid_until: {yesterday}", path.read_text()))
    result = sandbox.airflow(
        "dags", "test", "urgent_dissemination", "2026-06-02", "-c",
        '{"country": "NGA", "agreements": ["protection-cluster-nga"], '
        '"justification": "a backfill of an old request"}', check=False)
    assert result.returncode != 0
    assert f"valid 2026-06-01..{yesterday}, not on {datetime.now(UTC).date()}" in result.stdout
    assert not [r for r in _ledger(sandbox).all()
                if r.agreement_id == "protection-cluster-nga" and r.urgency == "medium"]
