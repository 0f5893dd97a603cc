"""The pipeline under the real Airflow scheduler, dag-processor and api-server (standalone).

What `dags test` cannot show: that scheduling works. A partial round dropped as a file starts the
urgent path with no manual step; the monthly schedule runs the low path for last month; an
officer's request through the REST API (the trigger form's params) delivers an urgent dataset;
two runs of one round at once deliver it once; a task process killed with SIGKILL between its
upload and its ledger write is retried by the scheduler and records the delivery without
uploading it again.

Airflow's metastore and the ledger live on the machine's PostgreSQL here, as in production: with
a scheduler, api-server and parallel tasks all writing, SQLite's single writer lock makes the
api-server time out ("database is locked") under load, which is why Airflow itself does not
support SQLite beyond a single-process trial.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from airflow_services import Service, airflow_path, api_ok, wait_for
from airflow_services import postgres_databases as fresh_databases
from conftest import POLICY_DIR

from dissemination.devkit.local_sftp import free_port
from dissemination.devkit.sandbox import Sandbox
from dissemination.devkit.synthetic import generate_round
from dissemination.intake.source import write_round

# System tier: Airflow's scheduler and api-server, over PostgreSQL and sshd.
pytestmark = pytest.mark.system


class Standalone(Service):
    """``airflow standalone`` in its own process group, stopped as a whole."""

    def __init__(self, sandbox: Sandbox, port: int):
        self.sandbox, self.port = sandbox, port
        super().__init__(["standalone"], self.env(), sandbox.home / "standalone.log")

    def env(self) -> dict:
        return {
            **self.sandbox.env(),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL":
                f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "DISSEMINATION_INTAKE_SCHEDULE": "* * * * *",
            "DISSEMINATION_RETRY_DELAY_SECONDS": "3",
            "PATH": airflow_path(),
        }


@pytest.fixture(scope="module")
def postgres_databases():
    """Two fresh PostgreSQL databases (Airflow's metastore, the ledger), dropped afterwards."""
    with fresh_databases("test_scheduler", ("airflow", "ledger")) as urls:
        yield urls


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, postgres_databases):
    metadata_url, ledger_url = postgres_databases
    box = Sandbox(tmp_path_factory.mktemp("scheduler"), POLICY_DIR, metadata_url=metadata_url,
                  ledger_url=ledger_url)
    with box:
        box.init(sites=60, seed=21)
        # Last month's cleaned round, for the monthly schedule's first run: the month before
        # the wall clock's (a fixed date became "two months ago" when the calendar moved on).
        last_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0,
                                               microsecond=0) - timedelta(days=19)
        cleaned = generate_round(box.policy.rulesets["NGA"], 6, 50, seed=22, status="cleaned",
                                 collected_at=last_month)
        write_round(box.survey(), *cleaned)
        server = Standalone(box, free_port())
        server.start()
        try:
            api = httpx.Client(base_url=f"http://127.0.0.1:{server.port}/api/v2", timeout=30)
            wait_for("the api-server", lambda: api_ok(api, "/monitor/health"), timeout=180)
            dags = ("round_intake", "urgent_dissemination", "monthly_dissemination")
            wait_for("the DAGs to be parsed", lambda: all(api_ok(api, f"/dags/{d}") for d in dags))
            for dag_id in dags:
                api.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
            yield box, api
        finally:
            server.stop()
            print(server.tail(5000))


def _delivered(box: Sandbox, round_id: str) -> list:
    return [r for r in box.ledger().all()
            if r.round_id == round_id]


def test_a_dropped_partial_round_is_shared_without_a_manual_step(airflow):
    box, _ = airflow
    _, df = generate_round(box.policy.rulesets["NGA"], 12, 40, seed=12,
                           collected_at=datetime.now(UTC), collection_days=1)
    box.drop_dir.mkdir(exist_ok=True)
    df.drop(columns=["round_id"]).to_csv(box.drop_dir / "NGA-R012-partial.csv", index=False)
    rows = wait_for("the dropped round's deliveries",
                    lambda: len(_delivered(box, "NGA-R012-partial")) >= 3
                    and _delivered(box, "NGA-R012-partial"))
    assert {r.urgency for r in rows} == {"medium"} and all(r.deadline_met for r in rows)
    assert {r.agreement_id for r in rows} == {"unicef-nga", "protection-cluster-nga"}


def test_the_monthly_schedule_shares_last_months_cleaned_rounds(airflow):
    box, _ = airflow
    expected = {"unicef-nga", "protection-cluster-nga"}  # the NGA agreements with a low tier

    def monthly():  # (an urgent signal in the round may also send it at medium urgency)
        return [r for r in _delivered(box, "NGA-R006-cleaned") if r.urgency == "low"]

    rows = wait_for("the monthly run's deliveries",
                    lambda: expected <= {r.agreement_id for r in monthly()} and monthly())
    assert {r.level for r in rows if r.agreement_id == "protection-cluster-nga"} == {"admin1"}


def test_an_officer_triggers_an_urgent_dataset_through_the_rest_api(airflow):
    box, api = airflow
    meta, df = generate_round(box.policy.rulesets["SSD"], 13, 30, seed=13,
                              collected_at=datetime.now(UTC), collection_days=1)
    write_round(box.survey(), meta, df)
    response = api.post("/dags/urgent_dissemination/dagRuns", json={
        "logical_date": None,
        "conf": {"country": "SSD", "round_id": meta.round_id, "agreements": ["unicef-ssd"],
                 "justification": "12 unaccompanied children reported at Rubkona"}})
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    state = wait_for("the urgent run to finish", lambda: api.get(
        f"/dags/urgent_dissemination/dagRuns/{run_id}").json()["state"] in ("success", "failed")
        and api.get(f"/dags/urgent_dissemination/dagRuns/{run_id}").json()["state"])
    assert state == "success"
    (row,) = _delivered(box, meta.round_id)
    assert row.agreement_id == "unicef-ssd" and row.run_id == run_id

    bad = api.post("/dags/urgent_dissemination/dagRuns", json={
        "logical_date": None, "conf": {"country": "SSD", "justification": "too short"}})
    assert bad.status_code == 400 and "justification" in bad.text  # the form's rules hold


def _trigger(api: httpx.Client, conf: dict) -> str:
    response = api.post("/dags/urgent_dissemination/dagRuns",
                        json={"logical_date": None, "conf": conf})
    assert response.status_code == 200, response.text
    return response.json()["dag_run_id"]


def _finished(api: httpx.Client, run_id: str) -> str:
    def state():
        value = api.get(f"/dags/urgent_dissemination/dagRuns/{run_id}").json()["state"]
        return value if value in ("success", "failed") else None
    return wait_for(f"run {run_id} to finish", state)


def _notices(box: Sandbox, round_id: str) -> list[Path]:
    return [m for m in box.smtp.maildir.glob("*.eml")
            if "data for" in m.read_text() and round_id in m.read_text()]


def _landed(box: Sandbox, round_id: str) -> list[Path]:
    return [p for p in box.sftp.root.rglob("*") if p.is_file() and round_id in p.name]


def _ssd_round(box: Sandbox, number: int):
    meta, df = generate_round(box.policy.rulesets["SSD"], number, 30, seed=number,
                              collected_at=datetime.now(UTC), collection_days=1)
    write_round(box.survey(), meta, df)
    return meta


def test_two_runs_of_the_same_round_at_once_deliver_it_once(airflow):
    box, api = airflow
    meta = _ssd_round(box, 15)
    conf = {"country": "SSD", "round_id": meta.round_id, "agreements": ["unicef-ssd"],
            "justification": "the same request, sent twice by two officers"}
    runs = [_trigger(api, conf), _trigger(api, conf)]
    assert [_finished(api, run) for run in runs] == ["success", "success"]
    (row,) = _delivered(box, meta.round_id)
    assert row.run_id in runs
    (landed,) = _landed(box, meta.round_id)  # no second file, no temp file
    assert hashlib.sha256(landed.read_bytes()).hexdigest() == row.package_sha256
    assert len(_notices(box, meta.round_id)) == 1


def test_a_task_killed_between_upload_and_ledger_write_is_recorded_once(airflow):
    """The ledger write is held by a lock the test owns (a trigger on the ledger's PostgreSQL);
    once the package is on the server, the task process is killed with SIGKILL. The scheduler
    retries the task, which finds the package whole on the server and records it."""
    import psutil

    box, api = airflow
    meta = _ssd_round(box, 16)
    ledger = sa.create_engine(box.ledger_url, isolation_level="AUTOCOMMIT")
    with ledger.connect() as conn:
        conn.execute(sa.text(f"""
            CREATE FUNCTION hold_16() RETURNS trigger AS $$
            BEGIN IF NEW.round_id = '{meta.round_id}' THEN PERFORM pg_advisory_xact_lock(4243);
            END IF; RETURN NEW; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER hold_16 BEFORE INSERT ON deliveries
            FOR EACH ROW EXECUTE FUNCTION hold_16();"""))
    holder = ledger.connect()
    holder.execute(sa.text("SELECT pg_advisory_lock(4243)"))
    try:
        run = _trigger(api, {"country": "SSD", "round_id": meta.round_id,
                             "agreements": ["unicef-ssd"],
                             "justification": "armed actors reported near the site"})
        port = wait_for("the ledger write to wait on the lock", lambda: holder.execute(sa.text(
            "SELECT client_port FROM pg_stat_activity WHERE wait_event = 'advisory' "
            "AND query LIKE 'INSERT INTO deliveries%'")).scalar(), every=0.2)
        (landed,) = _landed(box, meta.round_id)  # uploaded and verified, not recorded
        before = landed.stat()
        (task,) = {c.pid for c in psutil.net_connections("tcp")
                   if c.laddr and c.laddr.port == port and c.pid}
        psutil.Process(task).kill()
    finally:
        holder.execute(sa.text("SELECT pg_advisory_unlock(4243)"))
        holder.close()
    assert _finished(api, run) == "success"
    with ledger.connect() as conn:
        conn.execute(sa.text("DROP TRIGGER hold_16 ON deliveries"))
    ledger.dispose()
    (row,) = _delivered(box, meta.round_id)
    (after,) = _landed(box, meta.round_id)
    assert after.stat().st_ino == before.st_ino  # not uploaded again
    assert row.package_sha256 == hashlib.sha256(after.read_bytes()).hexdigest()
    tries = api.get(f"/dags/urgent_dissemination/dagRuns/{run}/taskInstances/deliver/0").json()
    assert tries["try_number"] == 2
    assert len(_notices(box, meta.round_id)) == 1
