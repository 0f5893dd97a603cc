"""The keyed chain: whoever can write the ledger but lacks the chain key cannot cut its tail or
re-hash a row; the heads audits publish outside it catch what a key cannot (a tail removed).

The attacker here does what a plain SHA-256 chain allowed: rows written after the last passing
audit changed or deleted, and every later link recomputed with SHA-256, which anyone can."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys

import pytest
import sqlalchemy as sa
from test_ledger_audit import SECRET_EMAIL, _fill, _record

from dissemination.ledger.audit import verify
from dissemination.ledger.chain import KEY_FILE_VARIABLE, ChainKey, ChainKeyError, Head, keyed
from dissemination.ledger.migrations import open_upgraded
from dissemination.ledger.rows import chained_select, row_sha256
from dissemination.ledger.store import Ledger
from dissemination.ledger.tables import CHAINED, GENESIS, audit_chain, metadata

KEY = secrets.token_hex(32)


@pytest.fixture
def key_file(tmp_path, monkeypatch):
    """The chain key where the ledger CLI and the writers of this process look for it."""
    path = tmp_path / "chain.key"
    path.write_text(KEY + "\n")
    monkeypatch.setenv(KEY_FILE_VARIABLE, str(path))
    return path


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dissemination", "ledger", "verify", *args,
                           "--url", url], capture_output=True, text=True)


def _plain(prev: str, seq: int, table: str, key: str, row_hash: str) -> str:
    """The link as anyone can compute it (what the chain was before its key)."""
    return hashlib.sha256("\n".join([prev, str(seq), table, key, row_hash]).encode()).hexdigest()


def _relink(engine: sa.Engine, start: int) -> None:
    """The attacker's repair: every entry from ``start`` renumbered in order, its row hashed
    again and linked to the one before with plain SHA-256."""
    with engine.begin() as conn:
        rows = conn.execute(sa.select(audit_chain.c.table_name, audit_chain.c.row_key)
                            .where(audit_chain.c.seq >= start).order_by(audit_chain.c.seq)).all()
        prev = conn.execute(sa.select(audit_chain.c.chain_sha256)
                            .where(audit_chain.c.seq == start - 1)).scalar() or GENESIS
        conn.execute(audit_chain.delete().where(audit_chain.c.seq >= start))
        for seq, (name, key) in enumerate(rows, start=start):
            table = metadata.tables[name]
            row = conn.execute(chained_select(table).where(*(
                table.c[k] == v for k, v in zip(CHAINED[name][0], json.loads(key), strict=True)
            ))).mappings().one()
            digest = row_sha256(name, row)
            link = _plain(prev, seq, name, key, digest)
            conn.execute(audit_chain.insert().values(seq=seq, table_name=name, row_key=key,
                                                     row_sha256=digest, prev_sha256=prev,
                                                     chain_sha256=link))
            prev = link


def _tail(engine: sa.Engine) -> Ledger:
    """Six rows audited (seq 1-6), then two deliveries (ids 4, 5: seq 7, 8)."""
    ledger = _fill(engine)
    ledger.record(_record(4))
    ledger.record(_record(5))
    return ledger


def test_a_row_changed_after_the_audit_and_rehashed_without_the_key_fails(tmp_path, key_file):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = sa.create_engine(url)
    _fill(engine)
    audited = _cli(url)
    assert audited.returncode == 0, audited.stderr
    anchor = verify(engine).anchor  # seq 6, kept outside the ledger
    Ledger(engine).record(_record(4))
    Ledger(engine).record(_record(5))
    with engine.begin() as conn:  # a count changed in a delivery written since the audit
        conn.execute(sa.text("UPDATE deliveries SET row_count = 999 WHERE id = 4"))
    _relink(engine, 7)

    failed = _cli(url, "--anchor", anchor)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert ("FAILED at deliveries id=4 (chain seq 7): its chain entry was altered (its keyed "
            "link does not verify") in failed.stdout
    assert KEY not in failed.stdout + failed.stderr and SECRET_EMAIL not in failed.stdout


def test_the_newest_rows_deleted_and_rehashed_fail_against_the_published_head(
        tmp_path, key_file, monkeypatch):
    """Deliveries 4 and 5 are deleted and the chain re-linked: with the key, the first re-hashed
    link is named; with the marker of the keyed part removed and the whole chain re-hashed as
    plain, the head the audit published (outside the ledger) is no longer there."""
    from dissemination_airflow.store import PublishedHeads

    monkeypatch.setenv("DISSEMINATION_WORK_DIR", str(tmp_path / "work"))
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = sa.create_engine(url)
    _tail(engine)
    heads = PublishedHeads()
    heads.publish(verify(engine).head("2026-11-03T00:00:00+00:00"))  # the audit: seq 8
    folder = tmp_path / "work" / "runs" / "ledger-heads"
    assert _cli(url, "--heads", str(folder)).returncode == 0

    _record_and_cut(engine, "DELETE FROM deliveries WHERE id = 4", 7)  # id 5 moves to seq 7
    failed = _cli(url, "--heads", str(folder))
    assert failed.returncode == 1
    assert "FAILED at deliveries id=5 (chain seq 7): its chain entry was altered" in failed.stdout

    with engine.begin() as conn:  # the keyed part "never happened"; everything plain again
        conn.execute(sa.text("DELETE FROM ledger_meta WHERE key = 'chain_keyed_from'"))
        conn.execute(sa.text("DELETE FROM deliveries WHERE id = 5"))
        conn.execute(sa.text("DELETE FROM audit_chain WHERE seq = 7"))
    _relink(engine, 1)
    assert verify(engine).ok  # consistent, by itself
    failed = _cli(url, "--heads", str(folder))
    assert failed.returncode == 1
    assert "FAILED at chain seq 8: the chain ends at seq 6, before the head" in failed.stdout


def _record_and_cut(engine: sa.Engine, delete: str, start: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(delete))
        conn.execute(sa.text("DELETE FROM audit_chain WHERE seq = :s"), {"s": start})
        conn.execute(sa.text("UPDATE audit_chain SET seq = seq - 1 WHERE seq > :s"),
                     {"s": start})
    _relink(engine, start)


def test_the_keyed_part_moved_later_is_caught_by_the_published_head(sql_engine):
    """Moving where the keyed part starts lets keyed links be re-hashed as plain ones: the
    published head says where it started."""
    key = ChainKey(KEY)
    engine = keyed(sql_engine, key)
    _tail(engine)
    published = verify(engine).head("now")
    assert published.keyed_from == 1
    with sql_engine.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_meta SET value = '9' WHERE key = 'chain_keyed_from'"))
    _relink(sql_engine, 1)
    assert verify(engine).ok  # nothing keyed left to check, by itself
    finding = verify(engine, published=published).finding
    assert finding.where == "deliveries id=5 (chain seq 8)"
    assert "differs from the head" in finding.problem
    alone = Head(published.seq, verify(engine).head_sha256, 1)  # its hash as the ledger has it
    assert "keyed links were re-hashed as plain ones" in verify(
        engine, published=alone).finding.problem


def test_an_existing_plain_chain_goes_on_keyed_and_protects_what_came_before(sql_engine):
    """Upgrade: entries written before the key stay plain; the first keyed write records the
    switch, and from then on its keyed links cover the plain ones too."""
    _fill(sql_engine)  # no key: the chain as earlier releases wrote it
    assert verify(sql_engine).keyed_from is None
    assert "NOT keyed" in verify(sql_engine).line()
    engine = keyed(sql_engine, ChainKey(KEY))
    Ledger(engine).record(_record(4))
    result = verify(engine)
    assert result.ok and result.keyed_from == 7 and ", keyed from seq 7" in result.line()
    with sql_engine.begin() as conn:  # a plain row changed, re-hashed up to the keyed link
        conn.execute(sa.text("UPDATE deliveries SET row_count = 1 WHERE id = 2"))
    _relink(sql_engine, 2)
    assert verify(engine).finding.where == "deliveries id=4 (chain seq 7)"
    with pytest.raises(ChainKeyError, match="keyed from seq 7: give its key"):
        Ledger(sql_engine).record(_record(5))  # never continued with forgeable links
    with pytest.raises(ChainKeyError, match="keyed from seq 7"):
        verify(sql_engine)
    assert "keyed link does not verify" in verify(
        keyed(sql_engine, ChainKey("x" * 64))).finding.problem  # not this ledger's key


def test_the_key_is_never_printed_and_a_short_one_is_refused(tmp_path, monkeypatch):
    assert KEY not in repr(ChainKey(KEY))
    short = tmp_path / "short.key"
    short.write_text("s3cret-but-short")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_upgraded(sa.create_engine(url))
    monkeypatch.setenv(KEY_FILE_VARIABLE, str(short))
    refused = _cli(url)
    assert refused.returncode == 2 and "32 characters or more, this one has 16" in refused.stderr
    assert "s3cret" not in refused.stderr + refused.stdout
