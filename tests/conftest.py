"""Shared fixtures: the tests' own policy and a copy to break, an OpenSSH SFTP server, a round."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
#: The tests' own policy (rules, agreements, focal points): the shipped include/ may change freely.
POLICY_DIR = Path(__file__).resolve().parent / "support" / "policy"
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# Every LocalSftpServer the tests start (fixtures, tests, sandboxes) is a real OpenSSH sshd, what
# partners run: without one they fail naming it, never quietly use the pure-Python server.
# test_local_sftp.py asks for that one by name.
os.environ["DISSEMINATION_SFTP_ENGINE"] = "openssh"

# CI explores the same examples every run (a red CI must be reproducible); locally, new ones.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
# HYPOTHESIS_PROFILE=deep: new examples, and many more of them in the auditor (test_auditor.py).
settings.register_profile("deep", deadline=None, print_blob=True)
# HYPOTHESIS_PROFILE=fast (`make test-fast`): each property runs a quarter of the examples its
# own settings ask for (at least 10), so the quick gate stays quick; `make test` runs them all.
settings.register_profile("fast", derandomize=bool(os.environ.get("CI")), deadline=None,
                          print_blob=True)
FAST = os.environ.get("HYPOTHESIS_PROFILE") == "fast"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def include(tmp_path: Path) -> Path:
    """A private copy of the tests' policy that a test may edit."""
    target = tmp_path / "include"
    shutil.copytree(POLICY_DIR, target)
    return target


@pytest.fixture(scope="session")
def policy():
    from dissemination.policy import load_policy

    return load_policy(POLICY_DIR)


@pytest.fixture(scope="session")
def round_nga(policy):
    from dissemination.devkit.synthetic import generate_round

    return generate_round(policy.rulesets["NGA"], 1, 200, seed=11)


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory):
    """A real OpenSSH sshd on loopback with its own config, host key and port."""
    from dissemination.devkit.local_sftp import LocalSftpServer

    with LocalSftpServer(tmp_path_factory.mktemp("sftp")) as server:
        yield server


@pytest.fixture
def server(tmp_path, policy):
    """A fresh OpenSSH sshd on loopback for one test, with every destination folder the tests'
    policy names (agreements' and focal points')."""
    from dissemination.devkit.local_sftp import LocalSftpServer

    with LocalSftpServer(tmp_path / "sftp") as server:
        for dest in _destinations(policy):
            (server.root / dest).mkdir(parents=True, exist_ok=True)
        yield server


def _destinations(policy):
    dirs = {a.destination.remote_dir for a in policy.agreements.values()}
    for people in policy.focal_points.values():
        for person in (people.primary, people.secondary, *people.field):
            if person.destination:
                dirs.add(person.destination.remote_dir)
    return dirs


POSTGRES_URL = os.environ.get(
    "DISSEMINATION_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


#: Fixtures that reach a service or tool, by the tier they put a test in: every test using one
#: (directly or through another fixture) is marked here, so a new test is tiered by what it uses
#: and `make test-fast` needs none of them. A parametrized fixture marks its own service param.
TIER_FIXTURES = {
    "sftp_server": "integration",  # OpenSSH's sshd
    "server": "integration",  # OpenSSH's sshd
    "pg_schema": "integration",  # PostgreSQL (test_exactly_once.py)
    "rendered": "integration",  # docker-compose (test_compose.py)
    "s3": "integration",  # moto's S3 server (test_staging_store.py)
}


def pytest_collection_modifyitems(items):
    """Mark each test using a fixture of TIER_FIXTURES with that fixture's tier; under the fast
    profile, give each property a quarter of its examples."""
    for item in items:
        if FAST:
            _fewer_examples(getattr(item, "obj", None))
        for tier in {TIER_FIXTURES[f] for f in getattr(item, "fixturenames", ())
                     if f in TIER_FIXTURES}:
            item.add_marker(getattr(pytest.mark, tier))


def _fewer_examples(test) -> None:
    """A quarter of a property's examples: its settings as @given reads them at each call (the
    attribute is Hypothesis' own, pinned in constraints.txt); once per function, whatever its
    parameters."""
    test = getattr(test, "__func__", test)
    current = getattr(test, "_hypothesis_internal_use_settings", None)
    if current is None or getattr(test, "_fast_examples", False):
        return
    test._hypothesis_internal_use_settings = settings(
        current, max_examples=max(10, current.max_examples // 4))
    test._fast_examples = True


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def sql_engine(request, tmp_path):
    """The embedded default (SQLite) and the production database (the machine's PostgreSQL)."""
    if request.param == "sqlite":
        yield sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
        return
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    schema = f"test_dissemination_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = sa.create_engine(POSTGRES_URL,
                              connect_args={"options": f"-c search_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
