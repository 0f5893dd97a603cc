"""The Celery executor with two workers, each as on its own machine (own Airflow home, own private
work folder, own name), staging on a shared store: a shared folder, then an S3-compatible server.

The real scheduler, dag-processor and api-server run on the machine's PostgreSQL (metastore and
Celery result backend, a fresh database per deployment) with the machine's Redis as broker. A run
whose tasks land on both workers reads on one worker what the other staged, and leaves nothing of
itself behind but the copies a worker that did not remove the stage still caches (dropped on that
worker's next download, or by the sweep).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from airflow_services import celery_stack, postgres_databases
from conftest import POLICY_DIR
from s3_server import s3_server

from dissemination.classification import Urgency
from dissemination.devkit.sandbox import Sandbox
from dissemination.devkit.synthetic import generate_round
from dissemination.intake.source import write_round
from dissemination.intake.staging import run_name
from dissemination.package.archive import open_package

# System tier: Celery workers (Redis, PostgreSQL, S3) run Airflow's tasks.
pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
PROBE_DAGS = Path(__file__).resolve().parents[1] / "support" / "celery_dags"
# airflow_local_settings: the cluster policy
ROUTING = Path(__file__).resolve().parents[1] / "support" / "routing"


def probe_env(home: Path, metastore: str, staging: dict[str, str]) -> dict[str, str]:
    """The smallest environment for the probe DAG (the real DAGs start from Sandbox.env())."""
    from cryptography.fernet import Fernet

    return {
        **os.environ,
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROBE_DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metastore,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "plugins"),
                                                    os.environ.get("PYTHONPATH")])),
        **staging,
    }


@contextlib.contextmanager
def shared_store(kind: str, home: Path):
    """(the staging environment, what the store holds under a prefix) for one kind of store."""
    if kind == "s3":
        with s3_server() as server:
            yield server.env(prefix="runs"), lambda prefix: server.keys(f"runs/{prefix}")
        return
    shared = home / "shared"

    def stored(prefix: str) -> list[str]:
        return [str(p) for p in (shared / prefix).rglob("*")] if (shared / prefix).exists() else []

    yield {"DISSEMINATION_STAGING_URL": shared.as_uri()}, stored


@pytest.fixture(params=["shared-folder", "s3"])
def deployment(request, tmp_path_factory):
    """A Celery deployment staging on one kind of shared store: (stack, what the store holds).
    One deployment at a time: they share the broker's Redis database, so a worker left running
    would take another deployment's tasks."""
    home = tmp_path_factory.mktemp(f"celery-{request.param}")
    with contextlib.ExitStack() as stack_exit:
        staging, stored = stack_exit.enter_context(shared_store(request.param, home))
        (metastore,) = stack_exit.enter_context(postgres_databases("celery", ("airflow",)))
        stack = stack_exit.enter_context(
            celery_stack(probe_env(home, metastore, staging), home))
        yield request.param, stack, stored


def test_a_run_spread_over_two_workers_stages_through_the_shared_store(deployment):
    kind, stack, stored = deployment
    run_id = stack.trigger("stage_probe")
    state = stack.wait(run_id)
    assert state == "success", stack.logs(run_id)

    hosts = stack.task_hosts(run_id)
    assert hosts[("put", -1)] == "a" and hosts[("remove", -1)] == "b"
    for worker in ("a", "b"):
        checks = {h for (task, _), h in hosts.items() if task == f"check_on_{worker}"}
        assert checks == {worker}  # four reads on each worker, one of them not the writer
    assert len(hosts) == 10

    name = run_name(run_id)
    assert stored(name) == []  # the run's stage is gone from the store
    a, b = stack.workers
    assert [f for f in b.files() if name in f] == []  # b removed the stage: nothing left
    # a staged the file (its scratch copy was consumed by put) and, from an object store, read
    # it back through its own cache, which only a's next download or the sweep drops.
    left = [f for f in a.files() if name in f]
    assert left == ([f"cache/{name}/probe.bin"] if kind == "s3" else [])


@pytest.mark.parametrize("kind", ["shared-folder", "s3"])
def test_the_urgent_dag_delivers_with_each_step_on_the_other_worker(kind, tmp_path_factory):
    """The real urgent DAG: pull on a, validate on b, plan on a, package on b, deliver on a,
    notify on b (a cluster policy routes them); every partner receives exactly one package."""
    home = tmp_path_factory.mktemp(f"celery-urgent-{kind}")
    with contextlib.ExitStack() as stack_exit:
        staging, stored = stack_exit.enter_context(shared_store(kind, home))
        metastore, ledger = stack_exit.enter_context(
            postgres_databases("celery_urgent", ("airflow", "ledger")))
        box = stack_exit.enter_context(Sandbox(home / "sandbox", POLICY_DIR,
                                               metadata_url=metastore, ledger_url=ledger))
        box.init(sites=40, seed=41)
        meta, df = generate_round(box.policy.rulesets["NGA"], 2, 60, seed=42)
        write_round(box.survey(), meta, df)
        env = {**box.env(), **staging,
               "PYTHONPATH": os.pathsep.join([str(ROUTING), box.env()["PYTHONPATH"]])}
        stack = stack_exit.enter_context(celery_stack(env, home))
        run_id = stack.trigger("urgent_dissemination", {
            "country": "NGA", "round_id": meta.round_id, "agreements": [],
            "justification": "two workers, one shared stage"})
        assert stack.wait(run_id) == "success", stack.logs(run_id)

        hosts = stack.task_hosts(run_id)
        by_task = {}
        for (task, _), host in hosts.items():
            by_task.setdefault(task, set()).add(host)
        assert by_task == {"resolve_request": {"a"}, "pull_rounds": {"a"},
                           "validate_rounds": {"b"}, "plan": {"a"}, "package": {"b"},
                           "deliver": {"a"}, "notify": {"b"}, "finish": {"a"}}
        records = [r for r in box.ledger().all() if r.round_id == meta.round_id]
        covering = box.policy.agreements_for("NGA", Urgency.MEDIUM)
        assert {r.agreement_id for r in records} == {a.id for a in covering}
        landed = [p for p in box.landed() if meta.round_id in p.name]
        assert sorted(p.name for p in landed) == sorted(r.remote_path.rsplit("/", 1)[-1]
                                                        for r in records)  # once each
        for record in records:
            agreement = box.policy.agreements[record.agreement_id]
            (package,) = [p for p in landed if p.name == record.remote_path.rsplit("/", 1)[-1]]
            manifest, _ = open_package(package, box.password(agreement.password.variable))
            assert manifest["round"]["id"] == meta.round_id
        assert stored(run_name(run_id)) == []  # finish removed the run's stage
        for worker in stack.workers:  # and no survey data stayed in a worker's scratch
            assert not [f for f in worker.files()
                        if run_name(run_id) in f and not f.startswith("cache/")]
