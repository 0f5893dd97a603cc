"""Packages streamed (the CSV never whole in memory) and built by forked workers: the same bytes
of data as the serial, in-memory way, and the same errors."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
import sqlalchemy as sa

from dissemination import runs
from dissemination.classification import Urgency
from dissemination.classify.sensitivity import classify_round, select_for_agreement
from dissemination.disclosure import build_content
from dissemination.ledger.migrations import open_upgraded
from dissemination.package import archive as package
from dissemination.package.archive import Issue, WeakPassword, build_package, open_package
from dissemination.runs import (
    PackagingRun,
    new_password,
    package_deliveries,
    package_workers,
    packaged_columns,
    plan_deliveries,
)

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
PASSWORD = "a-long-enough-test-password"


def old_csv_bytes(df: pd.DataFrame) -> bytes:
    """The serialisation packages had before streaming: the whole table at once."""
    buf = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


def nasty_frame(rows: int = 50) -> pd.DataFrame:
    """Quotes, accents, missing values only in the first batch, every kind a table may hold."""
    df = pd.DataFrame({
        "count": pd.array([None] * (rows // 2) + list(range(rows - rows // 2)),
                          dtype="int64[pyarrow]"),
        "text": pd.array([None] * (rows // 2) + ['say "hi", é'] * (rows - rows // 2),
                         dtype="string[pyarrow]"),
        "ratio": np.linspace(-1e-300, 1e300, rows),
        "flag": [True, False] * (rows // 2),
        "when": pd.to_datetime(["2026-11-02 10:00:00.123456789"] * rows, utc=True),
        "label": pd.Categorical(["a fairly long category label"] * rows),
    })
    df["object"] = pd.Series([None] * (rows - 1) + ["only at the end"], dtype=object)
    return df


def seven(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("7z")
    assert exe, "7z (p7zip-full) is required: partners open packages with it"
    return subprocess.run([exe, *args], capture_output=True, check=True)


def test_streamed_csv_is_the_old_serialisation(monkeypatch):
    monkeypatch.setattr(package, "CSV_BATCH_ROWS", 7)  # many batches, the first all missing
    for df in (nasty_frame(), nasty_frame().iloc[:0]):
        out = io.BytesIO()
        package.write_csv(df, out)
        assert out.getvalue() == old_csv_bytes(df)


def test_size_bound_holds_for_every_kind_of_cell():
    df = nasty_frame()
    assert package._csv_size_bound(df) >= len(old_csv_bytes(df))


@pytest.fixture
def unicef(policy, round_nga):
    meta, df = round_nga
    ruleset, agreement = policy.rulesets["NGA"], policy.agreements["unicef-nga"]
    selection = select_for_agreement(classify_round(df.columns, ruleset), ruleset, agreement,
                                     Urgency.MEDIUM)
    return meta, selection, ruleset, agreement, build_content(df, selection, ruleset)


@pytest.mark.integration
@pytest.mark.parametrize("zip64", [False, True])
def test_7zip_reads_the_streamed_package_and_its_csv_is_the_old_one(unicef, tmp_path, monkeypatch,
                                                                    zip64):
    """Data first, manifest (with the data's hash) second; ZIP64 when the CSV could be large."""
    meta, selection, ruleset, agreement, content = unicef
    monkeypatch.setattr(package, "CSV_BATCH_ROWS", 16)
    if zip64:  # a round too large for plain zip headers, scaled down
        import pyzipper.zipfile

        for module in (package, pyzipper.zipfile):
            monkeypatch.setattr(module, "ZIP64_LIMIT", 1000)
    built = build_package(content, meta, selection, ruleset, agreement, tmp_path / "pk", PASSWORD,
                          Issue(NOW))
    seven("t", f"-p{PASSWORD}", str(built.path))
    listing = seven("l", "-slt", f"-p{PASSWORD}", str(built.path)).stdout.decode()
    assert [line.split(" = ")[1] for line in listing.splitlines()
            if line.startswith("Path = ") and not line.endswith(".zip")] \
        == ["data.csv", "manifest.json"]
    seven("x", f"-p{PASSWORD}", f"-o{tmp_path / 'x'}", str(built.path))
    data = (tmp_path / "x" / "data.csv").read_bytes()
    assert data == old_csv_bytes(content.frame)
    assert hashlib.sha256(data).hexdigest() == built.content_sha256 \
        == built.manifest["data_sha256"] == open_package(built.path, PASSWORD)[0]["data_sha256"]
    assert [p.name for p in (tmp_path / "pk").iterdir()] == [built.name]  # no temporary left
    assert built.path.stat().st_mode & 0o777 == 0o600


def _plans(policy, round_nga):
    meta, df = round_nga
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2026, 11, 2))
    assert len({p.organisation_id for p in plans}) == 2  # two workers have work
    return plans


def _package(policy, round_nga, tmp_path, workers, password_for=lambda variable: PASSWORD):
    meta, df = round_nga
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    return package_deliveries(df, meta, _plans(policy, round_nga), policy,
                                    tmp_path / f"pk{workers}", password_for, ledger,
                                    PackagingRun(NOW, workers=workers))


def test_forked_workers_build_the_same_packages_in_the_same_order(policy, round_nga, tmp_path):
    serial = _package(policy, round_nga, tmp_path, workers=1)
    parallel = _package(policy, round_nga, tmp_path, workers=2)
    assert [d.status for d in parallel] == ["packaged"] * 3
    comparable = ("agreement_id", "recipient", "content_sha256", "row_count", "columns",
                  "explanation")
    assert [[getattr(d, k) for k in comparable] for d in parallel] \
        == [[getattr(d, k) for k in comparable] for d in serial]
    for d in parallel:
        manifest, _ = open_package(d.package_path, PASSWORD)
        assert manifest["data_sha256"] == d.content_sha256


def test_an_error_in_a_worker_is_raised_as_itself_naming_the_agreement(policy, round_nga,
                                                                       tmp_path):
    asked = []

    def password_for(variable):
        asked.append(variable)
        return "short-pw" if variable == "package_password_unicef_nga" else PASSWORD

    with pytest.raises(WeakPassword, match="unicef-nga") as exc:
        _package(policy, round_nga, tmp_path, workers=2, password_for=password_for)
    assert "short-pw" not in str(exc.value) and "short-pw" not in "".join(exc.value.__notes__)
    assert sorted(asked) == sorted(set(asked))  # each password read once, in the parent
    assert not list((tmp_path / "pk2").glob("*.tmp"))


def test_an_unexpected_error_in_a_worker_names_the_organisation(policy, round_nga, tmp_path):
    (tmp_path / "pk2").write_text("a file where the packages' folder should be")
    with pytest.raises(FileExistsError) as exc:
        _package(policy, round_nga, tmp_path, workers=2)
    assert "protection-cluster-nga" in "".join(exc.value.__notes__)


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_worker_count_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("DISSEMINATION_PACKAGE_WORKERS", value)
    with pytest.raises(ValueError, match="DISSEMINATION_PACKAGE_WORKERS"):
        package_workers()


def _pool_in_a_daemon(results) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from dissemination.runs.packaging import _children_allowed

    try:
        with _children_allowed(), ProcessPoolExecutor(
                2, mp_context=multiprocessing.get_context("fork")) as pool:
            results.put(sorted(pool.map(abs, [-1, -2])))
        results.put(multiprocessing.current_process().daemon)
    except Exception as exc:  # reported to the test, not lost in the child
        results.put(repr(exc))


def test_forked_packaging_works_inside_a_celery_workers_daemonic_process():
    """Celery's prefork pool runs tasks in daemonic processes; multiprocessing refuses them
    children unless the pool lifts the flag for its lifetime."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_pool_in_a_daemon, args=(results,), daemon=True)
    child.start()
    child.join(60)
    assert results.get(timeout=5) == [1, 2]
    assert results.get(timeout=5) is True  # the flag is back once the pool is gone


def test_the_packaged_columns_alone_build_the_same_packages(policy, round_nga, tmp_path):
    """The package task reads only what some delivery shares or selects rows by (a field focal
    point's areas): the packages are those of the whole round."""
    from dataclasses import replace

    meta, df = round_nga
    # The field focal point's areas by a column no one receives: read all the same.
    area = df["admin1_name"].dropna().iloc[0]
    plans = [replace(p, areas={"admin1_name": [area]}) if p.areas else p
             for p in _plans(policy, round_nga)]
    assert sum(bool(p.areas) for p in plans) == 1
    columns = packaged_columns(plans, list(df.columns))
    assert not any(d.column == "admin1_name" for p in plans for d in p.selection.shared)
    assert {"admin1_name", "admin2_pcode", "site_id"} <= set(columns) < set(df.columns)
    assert "ki_phone" not in columns  # Secret: shared by no one (never staged anyway)

    def package(frame, name):
        ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / name}.db"))
        return package_deliveries(frame, meta, plans, policy, tmp_path / name,
                                        lambda variable: PASSWORD, ledger,
                                        PackagingRun(NOW, workers=1))

    whole, read = package(df, "whole"), package(df[columns], "read")
    assert 0 < read[-1].row_count < len(df)  # the field focal point's area only
    comparable = ("agreement_id", "recipient", "content_sha256", "row_count", "columns",
                  "explanation")
    assert [[getattr(d, k) for k in comparable] for d in read] \
        == [[getattr(d, k) for k in comparable] for d in whole]


def _copies(include, copies: dict[str, str]):
    """The tests' policy with each agreement of ``copies`` (new id -> original) copied for an
    organisation of its own (its focal points and password too): agreements from a template."""
    from dissemination.devkit.templates import copy_agreement
    from dissemination.policy import load_policy

    for ident, original in copies.items():
        copy_agreement(include, original, ident, ident, f"Partner {ident}")
    return load_policy(include)


@pytest.mark.integration
def test_organisations_alike_get_tables_built_and_deflated_once_in_zips_of_their_own(
        include, round_nga, tmp_path, monkeypatch):
    """Agreements copied from a template give the same tables: each is built, suppressed and
    written as CSV once, while every organisation still gets its own zips, each encrypted with
    its own password, which 7-Zip opens to the same CSV, and no other password opens."""
    meta, df = round_nga
    policy = _copies(include, {"unicef-nga-copy": "unicef-nga",
                               "protection-nga-copy": "protection-cluster-nga"})
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2026, 11, 2))
    organisations = [[p for p in plans if p.organisation_id == o]
                     for o in dict.fromkeys(p.organisation_id for p in plans)]
    groups = runs.alike(organisations)
    assert sorted(sorted(plans[0].organisation_id for plans in g) for g in groups) == [
        ["protection-nga-copy", "protection-sector-nga"], ["unicef", "unicef-nga-copy"]]
    assert sorted(len(plans) for g in groups for plans in g) == [1, 1, 2, 2]  # UNICEF: field too

    written = []
    write_csv = package.write_csv
    monkeypatch.setattr(package, "write_csv",
                        lambda frame, out: written.append(len(frame)) or write_csv(frame, out))

    generated: dict[str, str] = {}

    def password_for(variable):  # one generated password per Variable, as rotation stores
        return generated.setdefault(variable, new_password())

    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    out = package_deliveries(df, meta, plans, policy, tmp_path / "pk", password_for,
                                   ledger, PackagingRun(NOW, workers=1))
    assert [d.status for d in out] == ["packaged"] * 6
    assert len(written) == 3  # one CSV per distinct table, not one per package
    by_sha = {}
    for d in out:
        by_sha.setdefault(d.content_sha256, []).append(d)
    assert sorted(len(v) for v in by_sha.values()) == [2, 2, 2]
    for alike in by_sha.values():
        first, copy = alike
        assert first.organisation_id != copy.organisation_id
        assert (first.row_count, first.columns, first.explanation) \
            == (copy.row_count, copy.columns, copy.explanation)
        assert first.package_sha256 != copy.package_sha256  # its own salt, key and code
        csvs = []
        for d in alike:
            mine = password_for(policy.agreements[d.agreement_id].password.variable)
            seven("t", f"-p{mine}", d.package_path)  # AES authentication code and CRC
            target = tmp_path / "x" / d.agreement_id / d.recipient
            seven("x", f"-p{mine}", f"-o{target}", d.package_path)
            csvs.append((target / "data.csv").read_bytes())
            manifest, _ = open_package(d.package_path, mine)
            assert manifest["agreement"]["id"] == d.agreement_id
            other = next(o for o in alike if o is not d)
            with pytest.raises(RuntimeError, match="[Bb]ad password"):
                open_package(d.package_path, password_for(
                    policy.agreements[other.agreement_id].password.variable))
        assert csvs[0] == csvs[1] and hashlib.sha256(csvs[0]).hexdigest() == first.content_sha256


def test_an_error_for_an_organisation_alike_names_that_organisation(include, round_nga,
                                                                    tmp_path):
    """A group's later organisations are packaged on threads: the first failure is raised as
    itself, naming its own organisation and agreement, and leaves no partial zip."""
    meta, df = round_nga
    policy = _copies(include, {"unicef-nga-copy": "unicef-nga"})
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2026, 11, 2))

    def password_for(variable):
        return "short-pw" if variable == "package_password_unicef_nga_copy" else PASSWORD

    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    with pytest.raises(WeakPassword, match="unicef-nga-copy") as exc:
        package_deliveries(df, meta, plans, policy, tmp_path / "pk", password_for,
                                 ledger, PackagingRun(NOW, workers=1))
    assert "for Partner unicef-nga-copy" in "".join(exc.value.__notes__)
    assert "short-pw" not in str(exc.value) + "".join(exc.value.__notes__)
    assert not list((tmp_path / "pk").glob("*.tmp"))
