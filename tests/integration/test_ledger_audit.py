"""The ledger as an audit trail, on SQLite and PostgreSQL: migrations (new, old, re-run) and the
hash chain (untouched passes; an edited, deleted, reordered or slipped-in row fails, named)."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from dissemination.ledger.audit import verify, verify_since
from dissemination.ledger.migrations import open_upgraded, upgrade
from dissemination.ledger.records import DeliveryRecord, LedgerNeedsUpgrade
from dissemination.ledger.rows import insert_chained
from dissemination.ledger.store import Ledger
from dissemination.ledger.tables import GENESIS, SCHEMA_REVISION, deliveries, intake_log

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
SECRET_EMAIL = "aisha.private@unicef.example.org"  # a value that must never be printed


def _record(n: int, **overrides) -> DeliveryRecord:
    values = dict(
        agreement_id="unicef-nga", organisation="UNICEF", organisation_id="unicef",
        recipient="primary", focal_point_name="Aisha Bello", focal_point_email=SECRET_EMAIL,
        round_id=f"NGA-R{n:03d}-partial", country="NGA", urgency="medium", level="site",
        rules_version="2026.11", columns="[]", row_count=10 + n,
        content_sha256=f"{n:064x}", package_sha256="b" * 64, package_name=f"p{n}.zip",
        destination="sftp_unicef_nga:in", remote_path=f"in/p{n}.zip",
        delivered_at=T0 + timedelta(hours=n), run_id="run-1",
        deadline=T0 + timedelta(days=2), deadline_met=True)
    values.update(overrides)
    return DeliveryRecord(**values)


def _fill(engine: sa.Engine) -> Ledger:
    """Three deliveries, a rotation (then notified), an alert, an intake row: all chained."""
    ledger = open_upgraded(engine)
    for n in (1, 2, 3):
        ledger.record(_record(n))
    ledger.record_rotation("unicef-nga", "package_password_unicef_nga", T0, "Aisha Bello")
    ledger.alert_once("missed", "NGA-R001-partial/unicef-nga", T0)
    with engine.begin() as conn:
        insert_chained(conn, intake_log, dict(
            round_id="NGA-R004-partial", content_sha256="c" * 64, country="NGA",
            status="partial", exported_at=T0, seen_at=T0, version=1))
    return ledger


def _sql(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def test_the_code_expects_the_newest_migration():
    from alembic.script import ScriptDirectory

    from dissemination.ledger.migrations import HERE

    script = ScriptDirectory(str(HERE))
    assert script.get_current_head() == SCHEMA_REVISION


def test_every_column_of_a_chained_table_is_hashed_or_left_out_on_purpose():
    """A column added later must be decided on: chained (a new revision) or mutable."""
    from dissemination.ledger.tables import CHAINED, metadata

    mutable = {"password_rotations": {"notified_at", "called_at"}, "intake": {"exported_at"}}
    for name, (keys, columns) in CHAINED.items():
        assert set(metadata.tables[name].columns.keys()) == \
            set(keys) | set(columns) | mutable.get(name, set()), name


def test_a_new_ledger_upgrades_from_nothing_and_a_second_upgrade_does_nothing(sql_engine):
    with pytest.raises(LedgerNeedsUpgrade, match="ledger upgrade --url"):
        Ledger(sql_engine)
    first = upgrade(sql_engine)
    assert (first.before, first.after, first.recognised) == (None, SCHEMA_REVISION, False)
    again = upgrade(sql_engine)
    assert again.before == again.after == SCHEMA_REVISION
    assert "nothing to do" in again.line("url")
    assert verify(sql_engine).ok and verify(sql_engine).head_seq == 0
    # the page's reads stay off the table's bulk: the indexes the code declares are there
    indexes = {i["name"]: i["column_names"] for i in sa.inspect(sql_engine).get_indexes(
        "deliveries")}
    declared = {i.name: [c.name for c in i.columns] for i in deliveries.indexes}
    assert {"ix_deliveries_page", "ix_deliveries_round"} <= set(declared)
    assert {name: indexes.get(name) for name in declared} == declared


def test_a_ledger_at_this_codes_revision_is_upgraded_without_loading_alembic(tmp_path):
    """Every run's first task upgrades the ledger: at head it only reads the version table."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(sa.create_engine(url))
    code = ("import sys, sqlalchemy as sa; from dissemination.ledger.migrations import upgrade; "
            f"done = upgrade(sa.create_engine({url!r})); "
            "print(done.before, done.after, 'alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [SCHEMA_REVISION, SCHEMA_REVISION, "False"]


def test_an_untouched_ledger_verifies(sql_engine):
    _fill(sql_engine)
    # What changes by design is not chained: a rotation's notice, the intake's watermark.
    ledger = Ledger(sql_engine)
    (rotation_id, _), = ledger.unnotified_rotations()
    ledger.mark_rotation_notified(rotation_id, T0 + timedelta(hours=1))
    _sql(sql_engine, "UPDATE intake SET exported_at = exported_at")
    result = verify(sql_engine)
    assert result.ok, result.line()
    assert result.rows == {"deliveries": 3, "password_rotations": 1, "alerts": 1, "intake": 1,
                           "site_registry": 0}
    assert result.head_seq == 6
    assert result.line().startswith("ledger verified: 6 chained row(s) (deliveries 3, ")
    assert f"chain head seq 6 {result.head_sha256[:16]}" in result.line()


LATER = T0 + timedelta(seconds=1)


def test_a_rows_hash_is_the_same_on_every_backend(sql_engine):
    """Datetimes hash as UTC text: SQLite drops the offset, PostgreSQL converts it; both read
    back to the hash of the values as written."""
    from dissemination.ledger.rows import row_sha256
    from dissemination.ledger.tables import audit_chain

    open_upgraded(sql_engine).record(_record(1))
    with sql_engine.connect() as conn:
        chained = conn.execute(sa.select(audit_chain.c.row_sha256)).scalar_one()
    assert chained == row_sha256("deliveries", vars(_record(1)))


@pytest.mark.parametrize(("statement", "where"), [
    ("UPDATE deliveries SET row_count = 999 WHERE id = 2", "deliveries id=2 (chain seq 2)"),
    ("UPDATE deliveries SET focal_point_email = 'x@example.org' WHERE id = 3",
     "deliveries id=3 (chain seq 3)"),
    ("UPDATE deliveries SET delivered_at = :later WHERE id = 1", "deliveries id=1 (chain seq 1)"),
    ("UPDATE password_rotations SET focal_point_to_tell = 'Nobody'",
     "password_rotations id=1 (chain seq 4)"),
    ("UPDATE alerts SET sent_at = :later",
     "alerts kind=missed, subject=NGA-R001-partial/unicef-nga (chain seq 5)"),
    ("UPDATE intake SET version = 2",
     f"intake round_id=NGA-R004-partial, content_sha256={'c' * 64} (chain seq 6)"),
])
def test_an_edited_value_fails_naming_the_row(sql_engine, statement, where):
    _fill(sql_engine)
    with sql_engine.begin() as conn:
        conn.execute(sa.text(statement), {"later": LATER} if ":later" in statement else {})
    result = verify(sql_engine)
    assert not result.ok
    assert result.finding.where == where, result.line()
    assert result.finding.problem == "changed since it was recorded"
    assert SECRET_EMAIL not in result.line() and "x@example.org" not in result.line()


def test_a_deleted_row_fails_naming_it(sql_engine):
    _fill(sql_engine)
    _sql(sql_engine, "DELETE FROM deliveries WHERE id = 2")
    finding = verify(sql_engine).finding
    assert finding.line() == ("deliveries id=2 (chain seq 2): deleted (or its key changed) since "
                              "it was recorded")


def test_a_row_deleted_with_its_chain_entry_fails_at_the_gap(sql_engine):
    _fill(sql_engine)
    _sql(sql_engine, "DELETE FROM deliveries WHERE id = 2", "DELETE FROM audit_chain WHERE seq = 2")
    finding = verify(sql_engine).finding
    assert finding.where == "deliveries id=3 (chain seq 3)"
    assert finding.problem.startswith("chain entry seq 2 is missing")


def test_reordered_rows_fail_naming_the_first(sql_engine):
    """Swap two deliveries' ids: each holds content chained under the other's."""
    _fill(sql_engine)
    _sql(sql_engine, "UPDATE deliveries SET id = 100 WHERE id = 1",
         "UPDATE deliveries SET id = 1 WHERE id = 2", "UPDATE deliveries SET id = 2 WHERE id = 100")
    finding = verify(sql_engine).finding
    assert finding.line() == ("deliveries id=1 (chain seq 1): holds the content chained as "
                              "deliveries id=2: rows were reordered")


def test_reordered_chain_entries_fail(sql_engine):
    _fill(sql_engine)
    _sql(sql_engine, "UPDATE audit_chain SET seq = 100 WHERE seq = 2",
         "UPDATE audit_chain SET seq = 2 WHERE seq = 3",
         "UPDATE audit_chain SET seq = 3 WHERE seq = 100")
    finding = verify(sql_engine).finding
    assert finding.where == "deliveries id=3 (chain seq 2)"
    assert "reordered" in finding.problem


def test_a_row_slipped_in_around_the_chain_fails(sql_engine):
    _fill(sql_engine)
    with sql_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO alerts (kind, subject, sent_at) "
                             "VALUES ('missed', 'NGA-R009-partial/x', :at)"), {"at": T0})
    assert verify(sql_engine).finding.line() == (
        "alerts kind=missed, subject=NGA-R009-partial/x: is not in the chain: inserted around "
        "it (or its chain entry was deleted)")


def test_an_anchor_catches_a_chain_cut_short(sql_engine):
    """Removing the newest rows with their entries leaves a valid, shorter chain: only the head
    a previous audit kept elsewhere tells."""
    _fill(sql_engine)
    before = verify(sql_engine)
    _sql(sql_engine, "DELETE FROM intake", "DELETE FROM audit_chain WHERE seq = 6")
    assert verify(sql_engine).ok  # what no chain can tell by itself
    cut = verify(sql_engine, (before.head_seq, before.head_sha256))
    assert cut.finding.line().startswith("chain seq 6: the chain ends at seq 5")
    assert verify(sql_engine, (5, verify(sql_engine).head_sha256[:16])).ok


def test_since_the_last_audits_head_only_what_was_chained_after_is_checked(sql_engine):
    """The Dissemination page's check: later entries and their rows, and the head itself."""
    ledger = _fill(sql_engine)
    audited = verify(sql_engine)
    anchor = (audited.head_seq, audited.head_sha256[:16])  # as the audit keeps it
    ledger.record(_record(4))
    ledger.record(_record(5))
    result = verify_since(sql_engine, anchor)
    assert result.ok, result.line()
    assert result.rows == {"deliveries": 2, "password_rotations": 0, "alerts": 0, "intake": 0,
                           "site_registry": 0}
    assert (result.head_seq, result.head_sha256) == (8, verify(sql_engine).head_sha256)
    assert result.line().startswith("ledger verified: 2 chained row(s) since seq 6 (up to it: "
                                    "the last passing ledger audit) (deliveries 2, ")
    assert verify_since(sql_engine, (8, result.head_sha256)).rows["deliveries"] == 0

    _sql(sql_engine, "UPDATE deliveries SET row_count = 999 WHERE id = 5")
    assert verify_since(sql_engine, anchor).finding.line() == (
        "deliveries id=5 (chain seq 8): changed since it was recorded")
    _sql(sql_engine, "UPDATE deliveries SET row_count = 15 WHERE id = 5")  # as it was
    assert verify_since(sql_engine, anchor).ok
    # Before the head, rows are the audit's business: the next full verify names it.
    _sql(sql_engine, "UPDATE deliveries SET row_count = 999 WHERE id = 2")
    assert verify_since(sql_engine, anchor).ok
    assert verify(sql_engine).finding.where == "deliveries id=2 (chain seq 2)"


def test_since_a_head_rewritten_or_cut_away_fails(sql_engine):
    _fill(sql_engine)
    head = verify(sql_engine)
    assert verify_since(sql_engine, (head.head_seq, "0" * 16)).finding.problem.startswith(
        "differs from the head a previous audit verified")
    _sql(sql_engine, "DELETE FROM intake", "DELETE FROM audit_chain WHERE seq = 6")
    assert verify_since(sql_engine, (6, head.head_sha256)).finding.line().startswith(
        "chain seq 6: the chain ends at seq 5")


def test_concurrent_appends_never_fork_the_chain(sql_engine):
    """Two writers at once (threads, one connection each): every row linked, in one line."""
    ledger = open_upgraded(sql_engine)
    errors = []

    def write(offset: int) -> None:
        try:
            for n in range(offset, offset + 12):
                ledger.record(_record(n))
                ledger.alert_once("at_risk", f"NGA-R{n:03d}/unicef-nga", T0)
        except Exception as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(o,)) for o in (100, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = verify(sql_engine)
    assert result.ok, result.line()
    assert result.head_seq == 48 and result.rows["deliveries"] == 24


def test_a_delivery_is_chained_inside_the_callers_transaction(sql_engine):
    """record(conn=...) joins the caller's transaction: rolled back, neither row nor entry."""
    ledger = open_upgraded(sql_engine)
    with pytest.raises(RuntimeError), sql_engine.begin() as conn:
        ledger.record(_record(1), conn=conn)
        raise RuntimeError("the claim's update failed")
    assert ledger.all() == [] and verify(sql_engine).head_seq == 0
    with sql_engine.begin() as conn:
        ledger.record(_record(1), conn=conn)
        assert ledger.record(_record(1, run_id="run-2"), conn=conn).run_id == "run-1"
    assert len(ledger.all()) == 1 and verify(sql_engine).ok


# --- ledgers made before migrations ----------------------------------------------------------


def _first_release_ledger(engine: sa.Engine) -> None:
    """The DDL the first release's create_all emitted (written out here, independent of the
    migrations' own copy), with rows, as such a ledger holds them."""
    _sql(engine, """CREATE TABLE deliveries (
            id INTEGER NOT NULL PRIMARY KEY, agreement_id VARCHAR(64) NOT NULL,
            organisation VARCHAR(200) NOT NULL, recipient VARCHAR(64) NOT NULL,
            focal_point_name VARCHAR(200) NOT NULL, focal_point_email VARCHAR(200) NOT NULL,
            round_id VARCHAR(64) NOT NULL, country VARCHAR(3) NOT NULL,
            urgency VARCHAR(8) NOT NULL, level VARCHAR(32) NOT NULL,
            rules_version VARCHAR(64) NOT NULL, columns TEXT NOT NULL,
            row_count INTEGER NOT NULL, content_sha256 VARCHAR(64) NOT NULL,
            package_sha256 VARCHAR(64) NOT NULL, package_name VARCHAR(255) NOT NULL,
            destination VARCHAR(255) NOT NULL, remote_path VARCHAR(1024) NOT NULL,
            delivered_at TIMESTAMP WITH TIME ZONE NOT NULL, run_id VARCHAR(255) NOT NULL,
            deadline TIMESTAMP WITH TIME ZONE, deadline_met BOOLEAN,
            CONSTRAINT uq_delivery_once UNIQUE (agreement_id, round_id, urgency, recipient,
                                                content_sha256))""",
         """CREATE TABLE alerts (kind VARCHAR(32) NOT NULL, subject VARCHAR(255) NOT NULL,
            sent_at TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (kind, subject))""",
         """CREATE TABLE password_rotations (id INTEGER NOT NULL PRIMARY KEY,
            agreement_id VARCHAR(64) NOT NULL, variable VARCHAR(64) NOT NULL,
            rotated_at TIMESTAMP WITH TIME ZONE NOT NULL,
            focal_point_to_tell VARCHAR(200) NOT NULL, notified_at TIMESTAMP WITH TIME ZONE)""")
    if engine.dialect.name == "postgresql":  # what SQLAlchemy's Integer primary key makes
        _sql(engine, "CREATE SEQUENCE deliveries_id_seq OWNED BY deliveries.id",
             "ALTER TABLE deliveries ALTER id SET DEFAULT nextval('deliveries_id_seq')",
             "CREATE SEQUENCE password_rotations_id_seq OWNED BY password_rotations.id",
             "ALTER TABLE password_rotations ALTER id SET DEFAULT "
             "nextval('password_rotations_id_seq')")
    rows = [{k: v for k, v in vars(_record(n)).items() if k != "organisation_id"}
            for n in (1, 2)]
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO deliveries ({', '.join(rows[0])}) VALUES "
                             f"({', '.join(':' + k for k in rows[0])})"), rows)
        conn.execute(sa.text("INSERT INTO alerts VALUES ('missed', 'NGA-R001/unicef-nga', :t)"),
                     {"t": T0})
        conn.execute(sa.text("INSERT INTO password_rotations (agreement_id, variable, "
                             "rotated_at, focal_point_to_tell) VALUES ('unicef-nga', 'v', :t, "
                             "'Aisha Bello')"), {"t": T0})


def test_a_first_release_ledger_upgrades_in_place(sql_engine):
    _first_release_ledger(sql_engine)
    done = upgrade(sql_engine)
    assert (done.before, done.after, done.recognised) == ("0001", SCHEMA_REVISION, True)
    assert "made before migrations" in done.line("url")
    tables = set(sa.inspect(sql_engine).get_table_names())
    assert {"intake", "ledger_meta", "delivery_claims", "audit_chain",
            "ledger_alembic_version"} <= tables
    ledger = Ledger(sql_engine)
    kept = ledger.all()
    assert [(r.round_id, r.row_count, r.organisation_id, r.delivered_at) for r in kept] == [
        ("NGA-R001-partial", 11, None, T0 + timedelta(hours=1)),
        ("NGA-R002-partial", 12, None, T0 + timedelta(hours=2))]
    result = verify(sql_engine)
    assert result.ok and result.head_seq == 4
    assert "4 row(s) written before the chain existed, chained at upgrade time" in result.line()
    ledger.record(_record(3))  # the upgraded ledger goes on: new rows link to adopted ones
    assert verify(sql_engine).head_seq == 5 and verify(sql_engine).ok
    assert upgrade(sql_engine).before == SCHEMA_REVISION  # a second upgrade does nothing
    _sql(sql_engine, "UPDATE deliveries SET row_count = 1 WHERE id = 1")  # adopted rows count
    assert verify(sql_engine).finding.where == "deliveries id=1 (chain seq 1)"


def test_the_previous_releases_ledger_upgrades_in_place(sql_engine):
    """Made by the last code before migrations (claims, organisations, marker): the schema of
    revision 0003 without the version table."""
    from alembic import command

    from dissemination.ledger.migrations import _config
    from dissemination.ledger.tables import VERSION_TABLE

    with sql_engine.begin() as conn:
        command.upgrade(_config(conn), "0003")
        conn.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
    with sql_engine.begin() as conn:
        conn.execute(deliveries.insert().values(**vars(_record(1))))
    done = upgrade(sql_engine)
    assert (done.before, done.recognised) == ("0003", True)
    assert [r.round_id for r in Ledger(sql_engine).all()] == ["NGA-R001-partial"]
    assert verify(sql_engine).ok and verify(sql_engine).head_seq == 1


# --- the command line ---------------------------------------------------------------------------


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dissemination", "ledger", *args, "--url", url],
                          capture_output=True, text=True)


def test_the_ledger_commands_exit_codes(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _first_release_ledger(sa.create_engine(url))
    refused = _cli(url, "verify")
    assert refused.returncode == 2 and "ledger upgrade --url" in refused.stderr
    assert _cli(url, "status").returncode == 1
    upgraded = _cli(url, "upgrade")
    assert upgraded.returncode == 0 and "upgraded from revision 0001" in upgraded.stdout
    ok = _cli(url, "verify")
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == 1
    assert "ledger verified: 4 chained row(s)" in ok.stdout
    head = verify(sa.create_engine(url)).anchor
    assert _cli(url, "verify", "--anchor", head).returncode == 0
    assert _cli(url, "verify", "--anchor", "nonsense").returncode == 2
    _sql(sa.create_engine(url), "UPDATE deliveries SET focal_point_email = 'x@example.org' "
                                "WHERE id = 2")
    failed = _cli(url, "verify")
    assert failed.returncode == 1
    assert "FAILED at deliveries id=2 (chain seq 2): changed since it was recorded" in failed.stdout
    assert "x@example.org" not in failed.stdout + failed.stderr
    assert SECRET_EMAIL not in failed.stdout + failed.stderr


@pytest.mark.parametrize("change, column", [
    ("deadline_met = 'x'", "deadline_met"),  # reads back as True: the row's hash stands
    ("delivered_at = 'garbage'", "delivered_at"),  # cannot be read as a time at all
])
def test_sqlite_values_stored_as_the_pipeline_never_writes_them_are_found(tmp_path, change,
                                                                           column):
    """SQLite keeps any value in any column and reading converts it, so 'x' in deadline_met
    hashed as the True it read as while the page, counting deadline_met = 1 in SQL, lost a
    window met; 'garbage' as a time stopped the audit with a ValueError."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    _fill(engine)
    _sql(engine, f"UPDATE deliveries SET {change} WHERE id = 2")
    for result in (verify(engine), verify_since(engine, (0, GENESIS))):
        assert result.finding.line() == (f"deliveries id=2: {column} is stored as the pipeline "
                                         "never writes it: changed outside the pipeline")
