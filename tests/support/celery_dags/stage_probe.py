"""A probe of staging across workers: one worker stages a file, every worker reads it back,
another removes the run's stage. Task instances are pinned to workers with ``queue=`` (each test
worker listens on the queue of its own name), so the spread does not depend on timing."""

from __future__ import annotations

from airflow.sdk import dag, get_current_context, task

CHECKS_PER_WORKER = 4


def _stage():
    from dissemination_airflow.store import RunStage

    return RunStage(get_current_context()["run_id"])


@task(queue="a")
def put() -> str:
    import hashlib
    import os

    stage = _stage()
    built = stage.local_dir() / "probe.bin"
    built.write_bytes(os.urandom(256 * 1024))
    digest = hashlib.sha256(built.read_bytes()).hexdigest()
    stage.put(built, "probe.bin")
    stage.write_json("probe.json", {"sha256": digest})
    return digest


@task
def check(index: int, digest: str) -> None:
    import hashlib

    stage = _stage()
    assert stage.read_json("probe.json") == {"sha256": digest}
    assert hashlib.sha256(stage.fetch("probe.bin").read_bytes()).hexdigest() == digest, index


@task(queue="b")
def remove() -> None:
    _stage().remove()


@dag(schedule=None, catchup=False, tags=["test"])
def stage_probe():
    digest = put()
    checks = [check.override(task_id=f"check_on_{worker}", queue=worker)
              .partial(digest=digest).expand(index=list(range(CHECKS_PER_WORKER)))
              for worker in ("a", "b")]
    checks >> remove()


stage_probe()
