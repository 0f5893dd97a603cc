"""Synthetic rounds are deterministic; the survey source round-trips on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from dissemination.classification import Classification
from dissemination.source import RoundNotFound, latest_round_id, read_round, write_round
from dissemination.synthetic import generate_round


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
    from datetime import UTC, datetime

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
