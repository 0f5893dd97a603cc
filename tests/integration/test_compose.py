"""docker-compose.yaml: the Celery stack, checked as written (PyYAML) and as Compose reads it.

There is no Docker engine in CI, but `docker-compose config` (Debian's 1.29) validates the file
against the Compose schema and resolves anchors and variables without one; the structural rules
are asserted on both readings so neither a YAML slip nor a Compose quirk passes unseen.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
AIRFLOW = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
           "airflow-triggerer", "airflow-worker"}
LONG_RUNNING = AIRFLOW - {"airflow-init"}
#: What a single service may add to the shared environment, and why: Celery's warm shutdown;
#: the image's entrypoint migrating the metastore.
OWN_ENV = {"airflow-worker": {"DUMB_INIT_SETSID"}, "airflow-init": {"_AIRFLOW_DB_MIGRATE"}}
STAGING = "/opt/airflow/staging"
REQUIRED = {"AIRFLOW_FERNET_KEY": "fernet-from-env", "AIRFLOW_JWT_SECRET": "jwt-from-env"}
#: The one documented development default for a password (the official file's airflow/airflow).
DEV_PASSWORD = "${POSTGRES_PASSWORD:-airflow}"


def compose_config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`docker-compose config` with only ``env`` (no developer .env or shell variables)."""
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is missing: apt-get install docker-compose (.ci/run does)"
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return subprocess.run(
        [exe, "--env-file", str(empty), "--file", str(COMPOSE), "config"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
        cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    done = compose_config(tmp_path_factory.mktemp("compose"),
                          {**REQUIRED, "POSTGRES_PASSWORD": "pg-from-env"})
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def written() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(params=["written", pytest.param("rendered", marks=pytest.mark.integration)])
def stack(request) -> dict:
    """The file as PyYAML reads it, then as `docker-compose config` renders it."""
    return request.getfixturevalue(request.param)


def env(service: dict) -> dict[str, str]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment: use the mapping form"
    return {k: "" if v is None else str(v) for k, v in environment.items()}


def default(value: str) -> str:
    """``${VAR:-default}`` as Compose renders it with VAR unset (the file as written)."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return match.group(1) if match else value


def mounts(service: dict) -> dict[str, tuple[str | None, bool]]:
    """target -> (source or None for an anonymous volume, read-only)."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target, ro = volume.get("source"), volume["target"], volume.get("read_only")
        else:
            parts = volume.split(":")
            source, target = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
            ro = len(parts) > 2 and "ro" in parts[2].split(",")
        found[target] = (source, bool(ro))
    return found


def shared(stack: dict, source: str | None) -> bool:
    """A named volume or a host folder: the same data in every container that mounts it."""
    return source is not None and (source in (stack.get("volumes") or {}) or "/" in source)


def test_services(stack):
    assert set(stack["services"]) == AIRFLOW | {"postgres", "redis"}


@pytest.mark.integration
def test_required_secrets_fail_closed(tmp_path):
    for missing in REQUIRED:
        done = compose_config(tmp_path, {k: v for k, v in REQUIRED.items() if k != missing})
        assert done.returncode != 0 and missing in done.stderr, (missing, done.stderr)


def test_airflow_services_share_image_and_environment(stack):
    services = stack["services"]
    reference = services["airflow-scheduler"]
    shared_env = env(reference)
    assert shared_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for name in AIRFLOW:
        service = services[name]
        assert service["image"] == reference["image"] and service["build"] == reference["build"]
        assert mounts(service) == mounts(reference), name
        own = set(env(service)) - set(shared_env)
        assert own == OWN_ENV.get(name, set()), name
        assert {k: env(service)[k] for k in shared_env} == shared_env, name


def test_celery_broker_redis_result_backend_postgres(stack):
    shared_env = env(stack["services"]["airflow-scheduler"])
    assert re.fullmatch(r"redis://[^@]*@?redis:6379/\d+", shared_env["AIRFLOW__CELERY__BROKER_URL"])
    assert re.fullmatch(r"db\+postgresql://[^@]+@postgres/\w+",
                        shared_env["AIRFLOW__CELERY__RESULT_BACKEND"])
    assert shared_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert shared_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
        "http://airflow-apiserver:8080/execution/")
    assert "AIRFLOW__API_AUTH__JWT_SECRET" in shared_env
    assert stack["services"]["redis"]["image"].startswith("redis:")
    assert stack["services"]["postgres"]["image"].startswith("postgres:")


def test_worker_can_be_scaled(stack):
    worker = stack["services"]["airflow-worker"]
    command = worker["command"]
    assert (command if isinstance(command, str) else " ".join(command)) == "celery worker"
    assert not {"container_name", "hostname", "ports"} & set(worker), (
        "a fixed name, hostname or host port stops `--scale airflow-worker=N`")
    assert not any("container_name" in s for s in stack["services"].values())


def test_health_and_start_order(stack):
    services = stack["services"]
    for name in ("postgres", "redis", *LONG_RUNNING):
        assert services[name]["healthcheck"]["test"], name
    for name in AIRFLOW:
        conditions = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert conditions["postgres"] == conditions["redis"] == "service_healthy", name
        if name != "airflow-init":
            assert conditions["airflow-init"] == "service_completed_successfully", name
    worker_deps = services["airflow-worker"]["depends_on"]
    assert worker_deps["airflow-apiserver"]["condition"] == "service_healthy"
    assert env(services["airflow-init"])["_AIRFLOW_DB_MIGRATE"] == "true"


def test_project_code_and_policy_mounted_read_only(stack):
    scheduler = stack["services"]["airflow-scheduler"]
    found = mounts(scheduler)
    for folder in ("dags", "plugins", "include"):
        source, read_only = found[f"/opt/airflow/{folder}"]
        assert Path(source).name == folder and read_only, folder
    shared_env = env(scheduler)
    assert shared_env["PYTHONPATH"] == "/opt/airflow/plugins"
    assert shared_env["DISSEMINATION_INCLUDE_DIR"] == "/opt/airflow/include"
    assert shared_env["AIRFLOW_CONN_DISSEMINATION_LEDGER"].startswith("postgresql://")


def test_staging_shared_and_work_dir_private(stack):
    services = stack["services"]
    sources = set()
    for name in ("airflow-worker", "airflow-scheduler", "airflow-apiserver"):
        shared_env, found = env(services[name]), mounts(services[name])
        assert default(shared_env["DISSEMINATION_STAGING_URL"]) == f"file://{STAGING}", name
        source, read_only = found[STAGING]
        assert source in stack["volumes"] and not read_only, name
        sources.add(source)
        work = shared_env["DISSEMINATION_WORK_DIR"]
        assert not work.startswith(STAGING), name
        for target, (source_, _) in found.items():
            inside = work == target or work.startswith(target.rstrip("/") + "/")
            assert not (inside and shared(stack, source_)), (
                f"{name}: DISSEMINATION_WORK_DIR={work} is on the shared mount {source_}")
        drop_source, _ = found[shared_env["DISSEMINATION_DROP_DIR"]]
        assert shared(stack, drop_source), "the intake may run on any worker"
    assert len(sources) == 1


def test_no_secret_literal():
    text = COMPOSE.read_text()
    written = yaml.safe_load(text)
    for name, service in written["services"].items():
        for key, value in env(service).items():
            if re.search(r"KEY|SECRET|PASSWORD|TOKEN", key) and not key.endswith("_CONN_ID"):
                assert value == DEV_PASSWORD or re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), (
                    f"{name}: {key} must come from a required variable")
    for password in re.findall(r"://[^:/@\s]*:([^@\s]*)@", text):
        assert password in ("", DEV_PASSWORD), "a password written into a URL"
    assert not re.search(r"[A-Za-z0-9_-]{43}=", text), "something shaped like a Fernet key"


@pytest.mark.integration
def test_rendered_secrets_come_from_the_environment(rendered, tmp_path):
    """One variable feeds every copy: no service keeps a stale or literal credential."""
    for service in rendered["services"].values():
        rendered_env = env(service)
        for var, key in (("AIRFLOW_FERNET_KEY", "AIRFLOW__CORE__FERNET_KEY"),
                         ("AIRFLOW_JWT_SECRET", "AIRFLOW__API_AUTH__JWT_SECRET")):
            assert rendered_env.get(key, REQUIRED[var]) == REQUIRED[var]
        for value in rendered_env.values():
            for password in re.findall(r"://[^:/@\s]*:([^@\s]*)@", value):
                assert password in ("", "pg-from-env")
    assert rendered["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-from-env"
    done = compose_config(tmp_path, REQUIRED)  # no POSTGRES_PASSWORD: the documented default
    assert done.returncode == 0, done.stderr
    scheduler = env(yaml.safe_load(done.stdout)["services"]["airflow-scheduler"])
    assert "//airflow:airflow@postgres/" in scheduler["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def test_image_installs_the_celery_executor():
    """The Dockerfile installs the pinned requirements, which carry the Celery provider (whose
    module the worker's healthcheck pings) and the Redis client."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"pip install .*-r \S*requirements\.txt -c \S*constraints\.txt", dockerfile)
    pins = {}
    for name in ("requirements.txt", "constraints.txt"):
        for line in (REPO / name).read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                package, version = line.split("#")[0].strip().split("==")
                pins.setdefault(name, {})[package.lower().replace("_", "-")] = version
    assert "apache-airflow-providers-celery" in pins["requirements.txt"]
    for package in ("apache-airflow-providers-celery", "celery", "kombu", "redis"):
        assert pins["constraints.txt"][package] == importlib.metadata.version(package), package
    files = importlib.metadata.files("apache-airflow-providers-celery")
    assert any(str(f) == "airflow/providers/celery/executors/celery_executor.py" for f in files)
