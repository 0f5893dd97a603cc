"""Real Airflow services for tests: fresh PostgreSQL databases, and a Celery deployment in
miniature (scheduler, dag-processor, api-server, workers with their own folders) driven as
functions. The services themselves (process groups, polling) are ``dissemination.devkit.services``,
shared with ``make ui``; ``wait_for`` here fails the test instead of raising.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from conftest import POSTGRES_URL

from dissemination.devkit import services
from dissemination.devkit.local_sftp import free_port
from dissemination.devkit.services import Service, airflow_path, api_ok, stop_all

TIMEOUT = 300  # seconds for any one scheduled outcome
SUPPORT = Path(__file__).resolve().parent


def wait_for(what: str, check, timeout: float = TIMEOUT, every: float = 2.0):
    """Poll ``check`` until it returns something truthy; fail the test naming ``what``."""
    try:
        return services.wait_for(what, check, timeout, every)
    except TimeoutError as exc:
        pytest.fail(str(exc))


@contextlib.contextmanager
def postgres_databases(prefix: str, kinds: tuple[str, ...]):
    """Fresh PostgreSQL databases (one per kind), their URLs; dropped afterwards."""
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    names = [f"{prefix}_{kind}_{uuid.uuid4().hex[:8]}" for kind in kinds]
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield [sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(False)
               for name in names]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- Celery ----------------------------------------------------------------------------------

#: The Redis database the Celery tests use as broker (flushed before and after).
REDIS_URL = os.environ.get("DISSEMINATION_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")


@dataclass
class Worker:
    """One ``airflow celery worker``, as on its own machine: its own Airflow home, work folder,
    log server port, name (the task instances' ``hostname``) and queue."""

    name: str
    home: Path
    service: Service | None = None

    @property
    def work_dir(self) -> Path:
        return self.home / "work"

    def files(self) -> list[str]:
        """Every file left in this worker's private work folder, relative to it."""
        root = self.work_dir
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@dataclass
class Stack:
    """Scheduler, dag-processor, api-server and Celery workers on one metastore and broker."""

    env: dict[str, str]
    home: Path
    port: int
    workers: list[Worker]
    services: list[Service] = field(default_factory=list)

    @property
    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}/api/v2", timeout=30)

    def metastore(self) -> sa.Engine:
        return sa.create_engine(self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Unpause ``dag_id`` once parsed, trigger it through the REST API, return the run id."""
        with self.api as api:
            self._wait(f"DAG {dag_id} to be parsed", lambda: api_ok(api, f"/dags/{dag_id}"))
            api.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
            response = api.post(f"/dags/{dag_id}/dagRuns",
                                json={"logical_date": None, "conf": conf or {}})
        assert response.status_code == 200, response.text
        return response.json()["dag_run_id"]

    def wait(self, run_id: str, timeout: float = TIMEOUT) -> str:
        """The run's final state, polled from the metastore."""
        engine = self.metastore()

        def state():
            with engine.connect() as conn:
                value = conn.execute(sa.text("SELECT state FROM dag_run WHERE run_id = :r"),
                                     {"r": run_id}).scalar()
            return value if value in ("success", "failed") else None

        try:
            return self._wait(f"run {run_id} to finish", state, timeout)
        finally:
            engine.dispose()

    def task_hosts(self, run_id: str) -> dict[tuple[str, int], str]:
        """Which worker ran each task instance of the run: (task id, map index) -> hostname."""
        return self._column(run_id, "hostname")

    def logs(self, run_id: str | None = None) -> str:
        """The services' log tails and, for ``run_id``, the logs of its failed task instances
        (kept in the Airflow home of the worker that ran them)."""
        parts = [s.tail() for s in self.services]
        if run_id is not None:
            failed = {(t, i) for (t, i), state in self._states(run_id).items() if state == "failed"}
            for worker in self.workers:
                for log in sorted((worker.home / "logs").rglob("*.log")):
                    task = next((p.split("=", 1)[1] for p in log.parts if p.startswith("task_id=")),
                                None)
                    index = next((int(p.split("=", 1)[1]) for p in log.parts
                                  if p.startswith("map_index=")), -1)
                    if (task, index) in failed and f"run_id={run_id}" in str(log):
                        parts.append(f"--- {worker.name}: {log.name} of {task}[{index}] ---\n"
                                     + log.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def _states(self, run_id: str) -> dict[tuple[str, int], str]:
        return self._column(run_id, "state")

    def _column(self, run_id: str, column: str) -> dict[tuple[str, int], str]:
        """One column of the run's task instances: (task id, map index) -> value."""
        assert column in ("hostname", "state")
        engine = self.metastore()
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text(
                    f"SELECT task_id, map_index, {column} FROM task_instance WHERE run_id = :r"),
                    {"r": run_id}).all()
        finally:
            engine.dispose()
        return {(task, index): value for task, index, value in rows}

    def _wait(self, what: str, check, timeout: float = TIMEOUT):
        """``wait_for`` that fails at once, with the logs, if a service died."""
        def alive_and(check=check):
            dead = [s for s in self.services if not s.running()]
            if dead:
                pytest.fail(f"while waiting for {what}, a service exited:\n"
                            + "\n".join(s.tail() for s in dead))
            return check()
        return wait_for(what, alive_and, timeout, every=1.0)

    def stop(self) -> None:
        stop_all(self.services)


def celery_env(env: dict[str, str], port: int) -> dict[str, str]:
    """What every component of the deployment shares: executor, broker, result backend, the
    execution API's address and the secrets that sign its tokens."""
    metastore = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    return {
        **env,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metastore}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": env.get("AIRFLOW__API_AUTH__JWT_SECRET")
        or secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": env.get("AIRFLOW__API__SECRET_KEY")
        or secrets.token_urlsafe(32),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "PATH": airflow_path(),
    }


def start_celery_stack(env: dict[str, str], home: Path,
                       workers: tuple[str, ...] = ("a", "b")) -> Stack:
    """Migrate the metastore in ``env`` (PostgreSQL), flush the broker's Redis database, start
    the scheduler, dag-processor, api-server and one Celery worker per name. A worker listens on
    the ``default`` queue and on the queue of its own name (tasks pinned with ``queue=``), runs two
    tasks at once, and reports its name as the task instances' hostname."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    port = free_port()
    shared = celery_env(env, port)
    stack = Stack(shared, home, port, [Worker(n, home / f"worker-{n}") for n in workers])
    migrate = subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
                             env=shared, text=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert migrate.returncode == 0, migrate.stdout[-3000:]
    stack.services = [Service([command], shared, home / f"{command}.log")
                      for command in ("api-server", "scheduler", "dag-processor")]
    for worker in stack.workers:
        worker.work_dir.mkdir(parents=True, exist_ok=True)
        worker.service = Service(
            ["celery", "worker", "--celery-hostname", f"{worker.name}@%h", "--queues",
             f"default,{worker.name}", "--concurrency", "2", "--without-mingle",
             "--without-gossip"],
            {**shared, "AIRFLOW_HOME": str(worker.home),
             "DISSEMINATION_WORK_DIR": str(worker.work_dir),
             "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
             "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_names.hostname",
             "DISSEMINATION_TEST_WORKER_NAME": worker.name,
             "PYTHONPATH": os.pathsep.join(filter(None, [str(SUPPORT / "helpers"),
                                                       shared.get("PYTHONPATH")]))},
            worker.home / "worker.log")
        stack.services.append(worker.service)
    try:
        for service in stack.services:
            service.start()
        with stack.api as api:
            stack._wait("the api-server", lambda: api_ok(api, "/monitor/health"), timeout=180)
        for worker in stack.workers:
            stack._wait(f"worker {worker.name}", lambda w=worker: " ready." in w.service.tail())
    except BaseException:
        stack.stop()
        raise
    return stack


@contextlib.contextmanager
def celery_stack(env: dict[str, str], home: Path, workers: tuple[str, ...] = ("a", "b")):
    """``start_celery_stack`` that stops everything (and flushes the broker) on exit; prints the
    services' logs if the block failed."""
    import redis

    stack = start_celery_stack(env, home, workers)
    try:
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()
        redis.Redis.from_url(REDIS_URL).flushdb()
