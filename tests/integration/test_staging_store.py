"""Staging through Airflow's object storage: a local folder by default, an S3-compatible server
(moto, started here) shared by two "workers" that each have their own private work folder."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from s3_server import CONN_ID, s3_server

from dissemination.intake.staging import run_name
from dissemination_airflow import store
from dissemination_airflow.store import RunStage, StagedFileMissing

RUN = "manual__2026-11-22T10:00:00+00:00"


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


class Workers:
    """Two machines' private work folders over one shared store; ``use`` makes one current."""

    def __init__(self, tmp_path: Path, monkeypatch, store_env: dict[str, str]):
        self.dirs = {name: tmp_path / f"worker-{name}" for name in "ab"}
        self.monkeypatch = monkeypatch
        for key, value in store_env.items():
            monkeypatch.setenv(key, value)
        self.use("a")

    def use(self, name: str) -> Path:
        self.monkeypatch.setenv("DISSEMINATION_WORK_DIR", str(self.dirs[name]))
        return self.dirs[name]

    def files(self, name: str) -> list[str]:
        root = self.dirs[name]
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.integration)])
def workers(request, tmp_path, monkeypatch):
    if request.param == "file":  # a shared volume, the same path on both machines
        env = {"DISSEMINATION_STAGING_URL": (tmp_path / "shared").as_uri()}
    else:
        env = request.getfixturevalue("s3").env(prefix=f"runs-{tmp_path.name}")
    return Workers(tmp_path, monkeypatch, env)


def _file(tmp_path: Path, content: bytes, name: str = "round.parquet") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_by_default_staging_is_the_local_folder_it_always_was(tmp_path, monkeypatch):
    monkeypatch.delenv("DISSEMINATION_STAGING_URL", raising=False)
    monkeypatch.delenv("DISSEMINATION_STAGING_CONN_ID", raising=False)
    monkeypatch.setenv("DISSEMINATION_WORK_DIR", str(tmp_path / "work"))
    stage = RunStage(RUN)
    assert stage.put(_file(tmp_path, b"rows"), "round.parquet") == "round.parquet"
    folder = tmp_path / "work" / "runs" / run_name(RUN)
    assert stage.fetch("round.parquet") == folder / "round.parquet"  # no copy
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "round.parquet").stat().st_mode) == 0o600
    assert os.listdir(folder) == ["round.parquet"]  # no temporary file left


def test_a_local_stage_never_loads_the_providers_file_systems(tmp_path, monkeypatch):
    """Registering fsspec file systems imports every provider's (S3's boto among them): a third
    of a second of each task that stages, for a folder."""
    from airflow.sdk.io import fs

    monkeypatch.setenv("DISSEMINATION_STAGING_URL", (tmp_path / "shared").as_uri())
    monkeypatch.setenv("DISSEMINATION_WORK_DIR", str(tmp_path / "work"))
    fs._register_filesystems.cache_clear()
    stage = RunStage(RUN)
    stage.put(_file(tmp_path, b"rows"), "round.parquet")
    stage.write_json("rounds.json", {"count": 1})
    assert stage.read_json("rounds.json") == {"count": 1}
    assert stage.fetch("round.parquet").read_bytes() == b"rows"
    with pytest.raises(StagedFileMissing):
        stage.read_json("absent.json")
    stage.remove()
    assert fs._register_filesystems.cache_info().currsize == 0


def test_a_file_put_on_one_worker_is_read_on_another(workers, tmp_path):
    content = os.urandom(300_000)
    RunStage(RUN).put(_file(tmp_path, content), "round.parquet")
    RunStage(RUN).write_json("plan.json", {"deliveries": [1, 2]})
    workers.use("b")
    stage = RunStage(RUN)
    path = stage.fetch("round.parquet")
    assert path.read_bytes() == content
    assert stage.read_json("plan.json") == {"deliveries": [1, 2]}
    if not stage.local:  # a copy in worker b's own cache, reused while it matches the store
        assert path == workers.dirs["b"] / "cache" / run_name(RUN) / "round.parquet"
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        before = path.stat().st_ino
        assert stage.fetch("round.parquet").stat().st_ino == before
        path.write_bytes(b"truncated")  # a copy that no longer matches is fetched again
        assert stage.fetch("round.parquet").read_bytes() == content
        assert workers.files("b") == [f"cache/{run_name(RUN)}/round.parquet"]


def test_a_staged_file_is_replaced_whole(workers, tmp_path):
    stage = RunStage(RUN)
    stage.put(_file(tmp_path, b"first"), "p.zip")
    stage.put(_file(tmp_path, b"second, longer"), "p.zip")
    workers.use("b")
    assert RunStage(RUN).fetch("p.zip").read_bytes() == b"second, longer"
    RunStage(RUN).write_json("plan.json", {"v": 1})
    RunStage(RUN).write_json("plan.json", {"v": 2})
    assert RunStage(RUN).read_json("plan.json") == {"v": 2}


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x..y", "/abs", "a\\b"])
def test_a_staged_name_is_a_plain_file_name(workers, tmp_path, name):
    with pytest.raises(ValueError, match="plain file name"):
        RunStage(RUN).put(_file(tmp_path, b"x"), name)


def test_a_missing_staged_file_names_the_run_the_file_and_the_store(workers):
    with pytest.raises(StagedFileMissing) as failure:
        RunStage(RUN).fetch("round.parquet")
    with pytest.raises(StagedFileMissing):
        RunStage(RUN).read_json("plan.json")
    message = str(failure.value)
    assert RUN in message and "'round.parquet'" in message and run_name(RUN) in message
    for secret in {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_")}.values():
        assert secret not in message
    assert CONN_ID not in message  # nor the connection's id


def test_credentials_in_a_url_never_reach_a_message():
    assert store.public_url("s3://key:secret@bucket/runs") == "s3://bucket/runs"
    assert store.public_url("s3://bucket/runs") == "s3://bucket/runs"


def test_remove_leaves_nothing_of_the_run_here_and_a_worker_drops_its_copies_later(workers,
                                                                                   tmp_path):
    stage = RunStage(RUN)
    (stage.local_dir() / "building.csv").write_text("rows")
    stage.put(_file(tmp_path, b"zip"), "p.zip")
    workers.use("b")
    RunStage(RUN).fetch("p.zip")
    workers.use("a")
    RunStage(RUN).remove()
    assert not [f for f in workers.files("a") if run_name(RUN) in f]
    workers.use("b")
    with pytest.raises(StagedFileMissing):
        RunStage(RUN).fetch("p.zip")
    # Worker b's cached copy of the removed run goes on its next download of another run.
    workers.use("a")
    RunStage("another run").put(_file(tmp_path, b"next"), "next.zip")
    workers.use("b")
    RunStage("another run").fetch("next.zip")
    assert not [f for f in workers.files("b") if run_name(RUN) in f]


def test_sweep_removes_runs_untouched_for_longer_than_the_retention(workers, tmp_path):
    RunStage(RUN).put(_file(tmp_path, b"old"), "p.zip")
    now = datetime.now(UTC)
    assert store.sweep(timedelta(hours=1), now) == []
    assert RunStage(RUN).fetch("p.zip").read_bytes() == b"old"
    assert store.sweep(timedelta(hours=1), now + timedelta(hours=2)) == [run_name(RUN)]
    with pytest.raises(StagedFileMissing):
        RunStage(RUN).fetch("p.zip")


@pytest.mark.integration
def test_an_s3_store_keeps_the_run_under_one_prefix(s3, tmp_path, monkeypatch):
    for key, value in s3.env(prefix="layout").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DISSEMINATION_WORK_DIR", str(tmp_path / "work"))
    stage = RunStage(RUN)
    stage.put(_file(tmp_path, b"x" * 10), "p.zip")
    stage.write_json("plan.json", [])
    assert sorted(s3.keys("layout/")) == [f"layout/{run_name(RUN)}/p.zip",
                                          f"layout/{run_name(RUN)}/plan.json"]
    stage.remove()
    assert s3.keys("layout/") == []


def test_a_file_built_in_the_scratch_folder_is_consumed_by_put(workers, tmp_path):
    stage = RunStage(RUN)
    built = stage.local_dir() / "p.zip"
    built.write_bytes(b"package")
    elsewhere = _file(tmp_path, b"kept")
    stage.put(built, "p.zip")
    stage.put(elsewhere, "kept.zip")
    assert not built.exists() and elsewhere.read_bytes() == b"kept"
    assert stage.fetch("p.zip").read_bytes() == b"package"
    assert not [f for f in workers.files("a") if f.startswith("scratch/")]


def test_an_export_kept_on_one_worker_is_read_on_another_and_outlives_every_run(workers,
                                                                                tmp_path):
    """A partial export is kept under ``exports/`` by its SHA-256 (once, however often kept),
    read back on any worker and checked against it; sweeping runs never removes it."""
    import hashlib

    content = os.urandom(200_000)
    staged = _file(tmp_path, content, "NGA-R001-partial.arrow")
    kept = store.KeptExports()
    version = kept.keep(staged, "NGA-R001-partial")
    assert version == hashlib.sha256(content).hexdigest()
    assert kept.keep(staged, "NGA-R001-partial") == version and staged.read_bytes() == content
    RunStage(RUN).put(_file(tmp_path, b"zip"), "p.zip")
    assert store.sweep(timedelta(hours=1), datetime.now(UTC) + timedelta(days=400)) \
        == [run_name(RUN)]
    workers.use("b")
    assert store.KeptExports().read("NGA-R001-partial", version).read_bytes() == content
    with pytest.raises(StagedFileMissing, match="NGA-R001-partial.*removed from the store"):
        store.KeptExports().read("NGA-R001-partial", "0" * 64)
    with pytest.raises(ValueError, match="not a version"):
        store.KeptExports().read("NGA-R001-partial", "../../etc")


def test_a_kept_export_changed_since_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DISSEMINATION_STAGING_URL", (tmp_path / "shared").as_uri())
    monkeypatch.setenv("DISSEMINATION_WORK_DIR", str(tmp_path / "work"))
    kept = store.KeptExports()
    version = kept.keep(_file(tmp_path, b"the first export"), "NGA-R001-partial")
    path = kept.read("NGA-R001-partial", version)
    path.write_bytes(b"the first export, edited")
    with pytest.raises(store.ExportChanged, match="no longer hash to its version"):
        kept.read("NGA-R001-partial", version)


def test_a_published_ledger_head_is_written_once_and_the_newest_read_anywhere(workers):
    """The audit's heads under ``ledger-heads/``: the same head again is left as it is, another
    hash for a published sequence number is refused, never overwritten; any worker reads the
    newest; sweeping runs never removes them."""
    from dissemination.ledger.chain import Head

    heads = store.PublishedHeads()
    assert heads.newest() is None
    first = Head(6, "a" * 64, 1, "2026-11-02T00:00:00+00:00")
    name = heads.publish(first)
    assert heads.publish(Head(6, "a" * 64, 1, "2026-11-03T00:00:00+00:00")) == name  # a retry
    with pytest.raises(store.HeadRewritten, match="never overwritten"):
        heads.publish(Head(6, "b" * 64, 1, "later"))
    heads.publish(Head(12, "c" * 64, 1, "later"))
    assert store.sweep(timedelta(hours=1), datetime.now(UTC) + timedelta(days=400)) == []
    workers.use("b")
    assert store.PublishedHeads().newest() == Head(12, "c" * 64, 1, "later")
    assert Head.parse(store.PublishedHeads()._read(name), "x") == first
