"""Intake: watermark on the survey database, content hashes, the file drop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from dissemination.devkit.synthetic import generate_round
from dissemination.intake import (
    DropFileRejected,
    content_hash,
    import_drop,
    new_rounds,
    read_drop_file,
)
from dissemination.source import read_round, write_round

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def dbs(tmp_path):
    from dissemination.ledger_migrations import upgrade

    ledger = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    upgrade(ledger)
    return sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}"), ledger


def test_content_hash_ignores_order_but_not_values(policy):
    _, df = generate_round(policy.rulesets["NGA"], 1, 30, seed=1)
    shuffled = df.sample(frac=1, random_state=3)[list(reversed(df.columns))]
    assert content_hash(df) == content_hash(shuffled)
    changed = df.copy()
    changed.loc[4, "unaccompanied_children"] += 1
    assert content_hash(changed) != content_hash(df)


def test_each_round_is_processed_once_and_corrections_are_explicit(dbs, policy):
    survey, ledger = dbs
    meta, df = generate_round(policy.rulesets["NGA"], 1, 30, seed=1)
    write_round(survey, meta, df, exported_at=NOW)
    (first,) = new_rounds(survey, ledger, NOW)
    assert (first.round_id, first.version, first.corrected) == (meta.round_id, 1, False)
    assert new_rounds(survey, ledger, NOW) == []  # nothing exported since
    write_round(survey, meta, df, exported_at=NOW + timedelta(minutes=5))  # same content again
    assert new_rounds(survey, ledger, NOW) == []
    fixed = df.copy()
    fixed.loc[0, "idp_households"] = 12
    write_round(survey, meta, fixed, exported_at=NOW + timedelta(minutes=10))
    (second,) = new_rounds(survey, ledger, NOW)
    assert second.corrected and second.version == 2 and second.replaces == first.content_sha256


def test_the_file_drop_loads_good_files_and_rejects_bad_ones(dbs, tmp_path, policy):
    survey, _ = dbs
    drop = tmp_path / "drop"
    drop.mkdir()
    _, df = generate_round(policy.rulesets["SSD"], 4, 20, seed=2)
    df.drop(columns=["round_id"]).to_csv(drop / "SSD-R004-partial.csv", index=False)
    df.to_excel(drop / "SSD-R005-cleaned.xlsx", index=False)
    (drop / "notes.txt").write_text("hello")
    (drop / "NGA-R009-partial.csv").write_text("site_name\nx\n")
    imported = import_drop(drop, survey, NOW, policy)
    assert imported == ["SSD-R004-partial", "SSD-R005-cleaned"]
    meta, back = read_round(survey, "SSD-R004-partial")
    assert meta.status == "partial" and len(back) == 20
    first_day = datetime.fromisoformat(min(df["collected_on"])).replace(tzinfo=UTC)
    assert meta.collected_at == first_day  # the window runs from the first day of collection
    assert sorted(p.name for p in (drop / "processed").iterdir()) == [
        "SSD-R004-partial.csv", "SSD-R005-cleaned.xlsx"]
    errors = {p.name: p.read_text() for p in (drop / "rejected").glob("*.error")}
    assert "name must look like" in errors["notes.txt.error"]
    assert "no column is the site key" in errors["NGA-R009-partial.csv.error"]
    assert not [p for p in drop.iterdir() if p.is_file()]


def test_a_malformed_file_names_itself(tmp_path, policy):
    bad = tmp_path / "NGA-R001-partial.xlsx"
    bad.write_bytes(b"not a spreadsheet")
    with pytest.raises(DropFileRejected, match="NGA-R001-partial.xlsx: cannot be read"):
        read_drop_file(bad, policy)
