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
from s3_server import s3_server

from dissemination.staging import run_name

REPO = Path(__file__).resolve().parents[1]
PROBE_DAGS = Path(__file__).resolve().parent / "celery_dags"


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


@pytest.fixture(scope="module", params=["shared-folder", "s3"])
def deployment(request, tmp_path_factory):
    """A Celery deployment staging on one kind of shared store: (stack, what the store holds)."""
    home = tmp_path_factory.mktemp(f"celery-{request.param}")
    with contextlib.ExitStack() as stack_exit:
        if request.param == "s3":
            server = stack_exit.enter_context(s3_server())
            staging = server.env(prefix="runs")

            def stored(prefix: str) -> list[str]:
                return server.keys(f"runs/{prefix}")
        else:
            shared = home / "shared"
            staging = {"DISSEMINATION_STAGING_URL": shared.as_uri()}

            def stored(prefix: str) -> list[str]:
                return [str(p) for p in (shared / prefix).rglob("*")] if (
                    shared / prefix).exists() else []
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
