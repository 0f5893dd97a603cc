"""Hostile input, contained: round ids from every entry point, staging on disk, Data Docs, and
database errors that must not carry a round's values into a log."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from dissemination.ids import ROUND_ID_PATTERN, InvalidRoundId, check_round_id
from dissemination.intake.source import SITE_TABLE, metadata, rounds

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
HOSTILE = "../../tmp/evil-R001-partial"


@pytest.mark.parametrize("value", [
    HOSTILE, "NGA-R001-partial/../../x", "NGA-R001-partial\n", " NGA-R001-partial",
    "nga-R001-partial", "NGA-R01-partial", "NGA-R00001-partial", "NGA-R001-draft",
    "ＮＧＡ-R001-partial", "NGA-R\u0661\u0662\u0663-partial", "", None, 7,
])
def test_round_ids_outside_the_pattern_are_refused_naming_where(value):
    with pytest.raises(InvalidRoundId) as refused:
        check_round_id(value, "survey database")
    assert str(refused.value).startswith("survey database: refused round id")
    assert ROUND_ID_PATTERN in str(refused.value)


def test_a_refused_id_is_shown_short_and_escaped():
    long = "NGA-R001-partial" + "A" * 5000 + "\x1b[2J"
    with pytest.raises(InvalidRoundId) as refused:
        check_round_id(long, "trigger form")
    assert len(str(refused.value)) < 250 and "\x1b" not in str(refused.value)


def test_the_ids_we_make_pass(policy):
    from dissemination.devkit.synthetic import generate_round

    for country in ("NGA", "SSD", "BFA"):
        for number, status in ((1, "partial"), (12, "cleaned"), (1234, "partial")):
            meta, _ = generate_round(policy.rulesets[country], number, 3, seed=1, status=status)
            assert check_round_id(meta.round_id, "synthetic") == meta.round_id


@pytest.fixture
def hostile_survey(tmp_path, round_nga):
    """A survey database another system wrote, holding a round whose id is a path."""
    meta, df = round_nga
    survey = sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}")
    metadata.create_all(survey)
    with survey.begin() as conn:  # directly: write_round would refuse this id
        conn.execute(rounds.insert().values(round_id=HOSTILE, country="NGA", status="partial",
                                            collected_at=NOW - timedelta(days=1),
                                            exported_at=NOW))
        df.assign(round_id=HOSTILE).to_sql(SITE_TABLE, conn, index=False)
    return survey, meta, df


def test_a_path_as_round_id_in_the_survey_database_is_refused_and_nothing_escapes(
        hostile_survey, tmp_path, policy, monkeypatch):
    from dissemination.intake import fresh as intake
    from dissemination.intake import reading, source
    from dissemination.intake.source import RoundMeta
    from dissemination.intake.staging import staged_round_path
    from dissemination.ledger.migrations import open_upgraded
    from dissemination.runs import stage_round
    from dissemination_airflow.store import RunStage

    survey, meta, df = hostile_survey
    monkeypatch.setenv("DISSEMINATION_WORK_DIR", str(tmp_path / "work"))
    before = _files(tmp_path)
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")).engine
    stored = [  # every way a round id is read from the database
        lambda: source.latest_round_id(survey, "NGA", "partial"),
        lambda: source.round_ids_between(survey, "partial", NOW - timedelta(days=7), NOW),
        lambda: source.exported_since(survey, None),
        lambda: intake.new_rounds(survey, ledger, NOW),
        lambda: source.previous_round_id(survey, RoundMeta("NGA-R009-partial", "NGA",
                                                           "partial", NOW)),
    ]
    for read in stored:
        with pytest.raises(InvalidRoundId, match=r"survey database .*table rounds: refused "
                                                 r"round id '\.\./\.\./tmp/evil-R001-partial'"):
            read()
    for read in (reading.read_round, source.read_meta):  # asked for by name
        with pytest.raises(InvalidRoundId, match="round requested: refused"):
            read(survey, HOSTILE)
    folder = RunStage("manual__2026-11-21T12:00:00+00:00").local_dir()  # where pull stages
    with pytest.raises(InvalidRoundId, match="staging: refused"):
        staged_round_path(folder, HOSTILE)
    with pytest.raises(InvalidRoundId, match="staging: refused"):  # a meta made elsewhere
        stage_round(RoundMeta(HOSTILE, "NGA", "partial", NOW), df, policy,
                          folder / f"{HOSTILE}.arrow")
    created = _files(tmp_path) - before
    assert {p.relative_to(tmp_path).parts[0] for p in created} <= {"ledger.db", "work"}
    assert not list((tmp_path / "work").rglob("*.arrow"))
    assert not (tmp_path / "work" / "tmp").exists()


def test_the_file_drop_uses_the_same_pattern(tmp_path, policy):
    from dissemination.devkit.synthetic import generate_round
    from dissemination.intake.fresh import import_drop

    drop = tmp_path / "drop"
    drop.mkdir()
    _, df = generate_round(policy.rulesets["NGA"], 4, 20, seed=2)
    for name in ("NGA-R4-partial.csv", "NGA-R004-partial.csv.csv", "NGA-R004-Partial.csv"):
        df.drop(columns=["round_id"]).to_csv(drop / name, index=False)
    survey = sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}")
    assert import_drop(drop, survey, NOW, policy) == []
    for error in (drop / "rejected").glob("*.error"):
        assert "file drop: refused round id" in error.read_text(), error.name
        assert ROUND_ID_PATTERN in error.read_text()
    assert len(list((drop / "rejected").glob("*.error"))) == 3


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_staging_is_private_and_named_by_hash(tmp_path, policy, round_nga, monkeypatch):
    from dissemination.intake.staging import staged_round_path
    from dissemination.runs import stage_round
    from dissemination_airflow import data_docs_dir, work_dir
    from dissemination_airflow.store import RunStage

    work = tmp_path / "work"
    work.mkdir(mode=0o755)  # an older, world-readable work dir is tightened on next use
    work.chmod(0o755)
    monkeypatch.setenv("DISSEMINATION_WORK_DIR", str(work))
    monkeypatch.delenv("DISSEMINATION_DATA_DOCS_DIR", raising=False)
    monkeypatch.delenv("DISSEMINATION_STAGING_URL", raising=False)
    run_id = "manual__2026-11-21T12:00:00+00:00/../../x"
    stage = RunStage(run_id)
    scratch = stage.local_dir()
    assert scratch.parent == work / "scratch" and len(scratch.name) == 16
    assert stage.name == scratch.name == RunStage(run_id).name != RunStage(run_id + "1").name
    meta, df = round_nga
    staged = stage_round(meta, df, policy, staged_round_path(scratch, meta.round_id))
    name = stage.put(Path(staged["path"]), Path(staged["path"]).name)
    stored = stage.fetch(name)
    assert stored.parent == work / "runs" / stage.name and _mode(stored) == 0o600
    assert {_mode(p) for p in (work_dir(), work / "runs", stored.parent, scratch,
                               data_docs_dir())} == {0o700}


def test_the_retention_is_configurable_and_checked(monkeypatch):
    from dissemination_airflow import ConfigurationError, staging_retention

    monkeypatch.delenv("DISSEMINATION_STAGING_RETENTION_HOURS", raising=False)
    assert staging_retention() == timedelta(hours=72)
    monkeypatch.setenv("DISSEMINATION_STAGING_RETENTION_HOURS", "1.5")
    assert staging_retention() == timedelta(minutes=90)
    for bad in ("-1", "three days", "nan"):
        monkeypatch.setenv("DISSEMINATION_STAGING_RETENTION_HOURS", bad)
        with pytest.raises(ConfigurationError, match="DISSEMINATION_STAGING_RETENTION_HOURS"):
            staging_retention()


def test_sweep_removes_run_folders_untouched_for_longer_than_the_retention(tmp_path):
    """Age is the newest file in the folder: a failed run resumed yesterday is kept."""
    import os

    from dissemination.intake.staging import run_folder, sweep

    root = tmp_path / "runs"

    def folder(run_id: str, hours_ago: float, newest_file_hours_ago: float | None = None):
        path = run_folder(root, run_id)
        (path / "packages").mkdir()
        files = [path / "NGA-R001-partial.arrow", path / "packages" / "p.zip"]
        for f in files:
            f.write_bytes(b"survey data")
        at = (NOW - timedelta(hours=hours_ago)).timestamp()
        for p in [*files, path / "packages", path]:  # children first: writing touches parents
            os.utime(p, (at, at))
        if newest_file_hours_ago is not None:
            at = (NOW - timedelta(hours=newest_file_hours_ago)).timestamp()
            os.utime(files[1], (at, at))
        return path

    old, resumed = folder("failed_old", 100), folder("failed_resumed", 100, 2)
    recent, edge = folder("failed_recent", 10), folder("at_the_limit", 72)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("not staging")
    link = root / ("0" * 16)  # named like a run folder, but a link out of the root
    link.symlink_to(outside)
    (root / "notes").mkdir()
    ancient = (NOW - timedelta(days=30)).timestamp()
    for p in (outside, link, root / "notes"):
        os.utime(p, (ancient, ancient), follow_symlinks=False)

    assert sweep(root, timedelta(hours=72), NOW) == [old]
    assert not old.exists()
    assert all(p.is_dir() for p in (resumed, recent, edge, root / "notes"))
    assert (outside / "keep.txt").read_text() == "not staging" and link.is_symlink()
    assert sweep(root, timedelta(hours=72), NOW) == []
    assert sweep(tmp_path / "absent", timedelta(hours=72), NOW) == []
    assert sorted(sweep(root, timedelta(0), NOW)) == sorted([resumed, recent, edge])


PHONE, NAME, SITE = "+234-LEAK-5550", "Zz Leakname Okafor", "Zz-LEAK Camp 4417"


def _everything_said(exc: BaseException, capsys, caplog) -> str:
    """The error as a task log would show it (traceback, chained errors) and all output."""
    import traceback

    out = capsys.readouterr()
    return "".join(traceback.format_exception(exc)) + out.out + out.err + caplog.text


def _site_table_with_a_check(engine: sa.Engine, df) -> None:
    """The site table as another system made it: phones must hold no letters."""
    import pandas as pd

    table = sa.Table(SITE_TABLE, sa.MetaData(), *(
        sa.Column(c, sa.BigInteger if pd.api.types.is_integer_dtype(df[c]) else
                  sa.Float if pd.api.types.is_float_dtype(df[c]) else sa.Text)
        for c in df.columns),
        sa.CheckConstraint("ki_phone NOT LIKE '%LEAK%'", name="ki_phone_digits"))
    table.create(engine)


def test_a_refused_insert_names_table_row_and_constraint_never_values(sql_engine, policy,
                                                                      capsys, caplog):
    """The survey database refuses row 3 (its own constraint). PostgreSQL's message quotes the
    whole row ("Failing row contains ..."), SQLAlchemy adds the bound parameters: neither may
    reach the error, the log or the output; the table, row and constraint are named."""
    from dissemination.devkit.synthetic import generate_round
    from dissemination.intake.reading import read_round
    from dissemination.intake.source import RoundNotFound, RoundNotWritten, write_round

    meta, df = generate_round(policy.rulesets["NGA"], 1, 40, seed=3)
    df.loc[2, ["ki_name", "ki_phone"]] = [NAME, PHONE]
    _site_table_with_a_check(sql_engine, df)
    with pytest.raises(RoundNotWritten) as refused:
        write_round(sql_engine, meta, df, exported_at=NOW)
    said = _everything_said(refused.value, capsys, caplog)
    for value in (PHONE, NAME, "LEAK-5550", df.loc[2, "site_name"], df.loc[2, "site_id"]):
        assert value not in said
    assert f"table {SITE_TABLE}, data row 3 of 40" in str(refused.value)
    assert "ki_phone_digits" in str(refused.value)
    with pytest.raises(RoundNotFound):  # nothing of it was stored
        read_round(sql_engine, meta.round_id)


def test_the_file_drop_rejects_a_file_the_database_refuses_without_quoting_it(
        sql_engine, tmp_path, policy, capsys, caplog):
    """A unique index another system put on site names: PostgreSQL says "Key (site_name)=(...)
    already exists". The file goes to rejected/ with a reason that names no value; the other
    files go on."""
    from dissemination.devkit.synthetic import generate_round
    from dissemination.intake.fresh import import_drop
    from dissemination.intake.reading import read_round
    from dissemination.intake.source import RoundNotFound, write_round

    ruleset = policy.rulesets["NGA"]
    meta, first = generate_round(ruleset, 1, 20, seed=1)
    first.loc[4, "site_name"] = SITE
    write_round(sql_engine, meta, first, exported_at=NOW)
    with sql_engine.begin() as conn:
        conn.execute(sa.text(f"CREATE UNIQUE INDEX one_site_per_name ON {SITE_TABLE} "
                             "(site_name)"))
    drop = tmp_path / "drop"
    drop.mkdir()
    _, second = generate_round(ruleset, 2, 20, seed=2)
    second["site_name"] = [f"Other site {i}" for i in range(20)]
    second.loc[6, "site_name"] = SITE
    second.drop(columns=["round_id"]).to_csv(drop / "NGA-R002-partial.csv", index=False)
    _, third = generate_round(ruleset, 3, 20, seed=3)
    third["site_name"] = [f"Third site {i}" for i in range(20)]
    third.drop(columns=["round_id"]).to_csv(drop / "NGA-R003-partial.csv", index=False)

    caplog.set_level(logging.INFO, logger="dissemination")  # the drop's log lines, every one
    assert import_drop(drop, sql_engine, NOW, policy) == ["NGA-R003-partial"]
    reason = (drop / "rejected" / "NGA-R002-partial.csv.error").read_text()
    assert reason.startswith(f"NGA-R002-partial.csv: the survey database refused round "
                             f"NGA-R002-partial: table {SITE_TABLE}, data row 7 of 20")
    out = capsys.readouterr()
    for text in (reason, out.out, out.err, caplog.text):
        assert SITE not in text and "LEAK" not in text
    assert "rejected NGA-R002-partial.csv: the survey database refused" in caplog.text
    assert "imported NGA-R003-partial.csv as NGA-R003-partial" in caplog.text
    with pytest.raises(RoundNotFound):
        read_round(sql_engine, "NGA-R002-partial")
