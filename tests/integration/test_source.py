"""Synthetic rounds are deterministic; the survey source round-trips on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from dissemination.classification import Classification
from dissemination.devkit.synthetic import generate_round
from dissemination.intake import reading, source
from dissemination.intake.contract import conform
from dissemination.intake.reading import read_round
from dissemination.intake.source import (
    SITE_TABLE,
    RoundNotFound,
    latest_round_id,
    write_round,
)


def test_same_arguments_same_round(policy):
    nga = policy.rulesets["NGA"]
    _, a = generate_round(nga, 2, 50, seed=1)
    _, b = generate_round(nga, 2, 50, seed=1)
    _, c = generate_round(nga, 2, 50, seed=2)
    assert a.equals(b) and not a.equals(c)


def test_the_round_looks_like_a_site_assessment(policy):
    ssd = policy.rulesets["SSD"]
    meta, df = generate_round(ssd, 1, 120, seed=4)
    assert meta.round_id == "SSD-R001-partial" and meta.country == "SSD"
    assert list(df.columns) == [*ssd.indicators, "enumerator_id"]
    assert df[ssd.site_key].is_unique
    for group in ssd.additive:
        assert (df[group.total] == df[list(group.parts)].sum(axis=1)).all()
    counts = [c for c, r in ssd.indicators.items() if r.kind == "count"]
    assert (df[counts] >= 0).all().all()
    for signal in ssd.urgent_signals:  # mostly no unaccompanied children, a few with many
        assert (df[signal.indicator] == 0).any()
    for name, rule in ssd.indicators.items():
        if rule.kind in ("categorical", "flag"):
            assert set(df[name]) <= set(rule.values), name
    for rule in ssd.relational:  # so that relational rules can trigger
        for column, values in rule.when.items():
            assert set(values) <= set(df[column]), rule.name
    secret = [c for c, r in ssd.indicators.items() if r.classification is Classification.SECRET]
    assert secret and df[[*secret, "enumerator_id"]].notna().all().all()


def test_round_trip_and_latest(sql_engine, policy):
    meta1, df1 = generate_round(policy.rulesets["NGA"], 1, 40, seed=9)
    meta2, df2 = generate_round(policy.rulesets["NGA"], 2, 30, seed=9)
    write_round(sql_engine, meta1, df1)
    write_round(sql_engine, meta2, df2)
    write_round(sql_engine, meta2, df2)  # a re-export replaces, never duplicates
    assert latest_round_id(sql_engine, "NGA", "partial") == meta2.round_id
    meta, df = read_round(sql_engine, meta2.round_id)
    assert meta == meta2 and len(df) == 30
    assert df["site_id"].tolist() == df2["site_id"].tolist()
    assert df["unaccompanied_children"].tolist() == df2["unaccompanied_children"].tolist()
    with pytest.raises(RoundNotFound, match="no cleaned round for country NGA"):
        latest_round_id(sql_engine, "NGA", "cleaned")
    with pytest.raises(RoundNotFound, match="belongs to NGA, not SSD"):
        read_round(sql_engine, meta1.round_id, country="SSD")
    with pytest.raises(RoundNotFound, match="'NGA-R404-partial'"):
        read_round(sql_engine, "NGA-R404-partial")


def test_collection_starts_at_collected_at_and_lasts_the_given_days(policy):
    nga = policy.rulesets["NGA"]
    start = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
    _, df = generate_round(nga, 1, 200, seed=3, collected_at=start, collection_days=1)
    assert set(df["collected_on"]) == {"2026-11-20"}
    _, df = generate_round(nga, 1, 200, seed=3, collected_at=start)
    assert set(df["collected_on"]) == {"2026-11-20", "2026-11-21", "2026-11-22"}


def test_rounds_with_other_columns_live_side_by_side(sql_engine, policy):
    """Schema drift: each round reads back with its own columns only."""
    nga = generate_round(policy.rulesets["NGA"], 1, 20, seed=1)
    bfa = generate_round(policy.rulesets["BFA"], 1, 20, seed=1)
    for meta, df in (nga, bfa):
        write_round(sql_engine, meta, df)
    for meta, df in (nga, bfa):
        _, back = read_round(sql_engine, meta.round_id)
        assert sorted(back.columns) == sorted(df.columns)


def _as_read_sql(engine, round_id: str, columns) -> pd.DataFrame:
    """The reference: what pandas.read_sql made of the same rows before reads went through ADBC."""
    quote = engine.dialect.identifier_preparer.quote
    with engine.connect() as conn:
        return pd.read_sql(sa.text(f"SELECT {', '.join(quote(c) for c in columns)} FROM "
                                   f"{SITE_TABLE} WHERE round_id = :r"),
                           conn, params={"r": round_id}, dtype_backend="pyarrow")


def _through_adbc(engine, round_id: str) -> bool:
    with engine.connect() as conn:
        return (reading._adbc_sqlite(conn, round_id, None)
                or reading._arrow_postgresql(conn, round_id, None)) is not None


def test_the_contract_sees_what_read_sql_gave(sql_engine, policy):
    """Answers that look missing ("None", "NA"), counts with empty cells, timezone-aware
    timestamps: the same types and values as pandas.read_sql, read through ADBC."""
    meta, df = generate_round(policy.rulesets["NGA"], 1, 60, seed=5)
    df["armed_actors_military"] = ["None", "NA", "", "null", "nan", "N/A"] * 10
    df["unaccompanied_children"] = pd.array([None, *range(59)], dtype="Int64")
    df["latitude"] = [float("nan"), *df["latitude"][1:]]
    df["reported_at"] = pd.date_range("2026-11-20 07:00", periods=60, freq="h", tz="UTC")
    df["checked"] = [True, False] * 30
    write_round(sql_engine, meta, df)
    assert _through_adbc(sql_engine, meta.round_id)
    _, back = read_round(sql_engine, meta.round_id)
    pd.testing.assert_frame_equal(back, _as_read_sql(sql_engine, meta.round_id, back.columns))
    assert back["armed_actors_military"].tolist()[:6] == ["None", "NA", "", "null", "nan", "N/A"]
    assert str(back["unaccompanied_children"].dtype) == "int64[pyarrow]"
    assert back["unaccompanied_children"].isna().tolist() == [True] + [False] * 59
    conformed = conform(back, policy.rulesets["NGA"], first_row=1)
    reference = conform(_as_read_sql(sql_engine, meta.round_id, back.columns),
                        policy.rulesets["NGA"], first_row=1)
    pd.testing.assert_frame_equal(conformed.frame, reference.frame)
    assert conformed.violations == reference.violations


def test_sqlite_loose_types_are_read_as_pandas_read_them_never_changed(tmp_path, policy):
    """SQLite keeps text and reals in an integer column (a later round wrote them there, a
    schema drift); ADBC types a column by its first 1,024 rows. Integers then text, integers
    then reals, text then reals (which ADBC would print with 6 digits): every value as stored,
    as read_sql gave it."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}", hide_parameters=True)
    ruleset = policy.rulesets["NGA"]
    write_round(engine, *generate_round(ruleset, 1, 20, seed=1))  # the count columns: BIGINT
    meta, df = generate_round(ruleset, 2, 1100, seed=2)
    df["idp_households"] = [*range(1099), "NSP"]
    df["idp_individuals"] = [*range(1099), 2.5]
    df["idp_female"] = ["NSP", *(123456789.123 + i for i in range(1099))]
    write_round(engine, meta, df)
    _, back = read_round(engine, meta.round_id)
    pd.testing.assert_frame_equal(back, _as_read_sql(engine, meta.round_id, back.columns))
    assert back["idp_households"].tolist() == [str(v) for v in df["idp_households"]]
    assert back["idp_individuals"].tolist() == [float(v) for v in df["idp_individuals"]]
    assert back["idp_female"].tolist()[:3] == ["NSP", "123456789.123", "123456790.123"]
    assert back["idp_male"].tolist() == df["idp_male"].tolist()  # untouched: still integers
    assert str(back["idp_male"].dtype) == "int64[pyarrow]"


def test_the_site_table_is_indexed_by_round(sql_engine, policy):
    """Every read names one round: without the index each one scans every round stored."""
    meta, df = generate_round(policy.rulesets["NGA"], 1, 20, seed=1)
    write_round(sql_engine, meta, df)
    write_round(sql_engine, meta, df)  # a re-export: the index is there already
    indexes = sa.inspect(sql_engine).get_indexes(SITE_TABLE)
    assert [i["column_names"] for i in indexes if i["name"] == source.ROUND_INDEX] == [
        [source.ROUND_COLUMN]]


def test_a_round_read_in_parts_is_typed_as_one_read(tmp_path, policy, monkeypatch):
    """A large SQLite round is read in rowid ranges on threads, each typing its columns by its
    own first rows: reals only in a later part, a column empty in one part, text only in a
    later part. The frame is the one read_sql gives, and the one a single read gives."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}", hide_parameters=True)
    ruleset = policy.rulesets["NGA"]
    write_round(engine, *generate_round(ruleset, 1, 20, seed=1))  # the count columns: BIGINT
    meta, df = generate_round(ruleset, 2, 3000, seed=2)  # 3 parts of 1,000 rows
    empty = [None] * 1000  # a whole part: ADBC types an empty column as integers
    df["idp_households"] = [*range(1000), *(i + 0.5 for i in range(2000))]  # reals later
    df["idp_individuals"] = pd.array([*empty, *range(2000)], dtype="Int64")  # empty, then ints
    df["idp_female"] = [*range(1500), "NSP", *range(1499)]  # text only in the second part
    df["site_name"] = [*empty, *(f"Site {i}" for i in range(2000))]  # TEXT: empty, then text
    df["latitude"] = [*(11.5 + i / 1e4 for i in range(2000)), *empty]  # reals, then empty
    df["admin2_name"] = [None] * 1500 + ["Maiduguri"] * 1500  # empty past ADBC's first batch
    write_round(engine, meta, df)
    monkeypatch.setattr(reading, "PART_ROWS", 100)
    monkeypatch.setattr(reading, "read_threads", lambda: 3)
    spans, real_fetch = [], reading._fetch

    def fetch(*args, **kwargs):
        spans.append(args[5] if len(args) > 5 else None)
        return real_fetch(*args, **kwargs)

    monkeypatch.setattr(reading, "_fetch", fetch)
    _, parts = read_round(engine, meta.round_id)
    assert len([span for span in spans if span]) >= 3  # really read in parts
    pd.testing.assert_frame_equal(parts, _as_read_sql(engine, meta.round_id, parts.columns))
    monkeypatch.setattr(reading, "read_threads", lambda: 1)
    _, whole = read_round(engine, meta.round_id)
    pd.testing.assert_frame_equal(parts, whole)
    assert parts["idp_female"].tolist()[1499:1502] == ["1499", "NSP", "0"]
    assert str(parts["idp_individuals"].dtype) == "int64[pyarrow]"
    assert parts["admin2_name"].fillna("").tolist() == [""] * 1500 + ["Maiduguri"] * 1500


@pytest.mark.parametrize(
    "sql_engine", [pytest.param("postgresql", marks=pytest.mark.integration)], indirect=True)
def test_postgresql_types_another_system_chose_read_as_read_sql_read_them(sql_engine):
    """A site table written by another system (no round_columns: read whole): small integers,
    numeric, real, date, JSON, a column of NULLs only; a type with no rule (time of day) is read
    through pandas. The same frame either way."""
    with sql_engine.begin() as conn:
        source.metadata.create_all(conn)
        conn.execute(sa.text(
            f"CREATE TABLE {SITE_TABLE} (round_id text, site_id text, households smallint, "
            "people integer, share numeric(6,2), score real, visited date, seen timestamptz, "
            "extra json, nothing bigint)"))
        conn.execute(sa.text(
            f"INSERT INTO {SITE_TABLE} VALUES ('NGA-R001-partial', 'S1', 3, 7, 0.25, 1.5, "
            "'2026-11-20', '2026-11-20 09:00+02', '[1]', NULL), ('NGA-R001-partial', 'None', "
            "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"))
        conn.execute(source.rounds.insert().values(
            round_id="NGA-R001-partial", country="NGA", status="partial",
            collected_at=datetime(2026, 11, 20, tzinfo=UTC),
            exported_at=datetime(2026, 11, 21, tzinfo=UTC)))
    _, back = read_round(sql_engine, "NGA-R001-partial")
    assert _through_adbc(sql_engine, "NGA-R001-partial")
    pd.testing.assert_frame_equal(back, _as_read_sql(sql_engine, "NGA-R001-partial",
                                                      back.columns))
    with sql_engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {SITE_TABLE} ADD COLUMN opened time"))
        conn.execute(sa.text(f"UPDATE {SITE_TABLE} SET opened = '08:30'"))
    _, back = read_round(sql_engine, "NGA-R001-partial")
    pd.testing.assert_frame_equal(back, _as_read_sql(sql_engine, "NGA-R001-partial",
                                                      back.columns))
