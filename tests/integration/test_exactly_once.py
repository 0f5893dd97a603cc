"""Exactly once, whatever fails: the fault matrix with real parts (OpenSSH sshd, PostgreSQL,
a real small filesystem, a real SIGKILL). For each fault: no file under a final name that is not a
complete, verified package; no duplicate delivery; nothing lost (the delivery completes on retry,
or fails naming the reason, with its claim released for the next run)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import POLICY_DIR, POSTGRES_URL
from faults import (
    CuttableLink,
    InBackground,
    deliver_in_child,
    kill_sshd,
    silent_sessions,
    small_filesystem,
    stuck_ledger_writer,
    wait_until,
)

from dissemination import runs
from dissemination.__main__ import main as cli
from dissemination.classification import Urgency
from dissemination.delivery import claim_key, deliver
from dissemination.delivery.sftp_sessions import Sessions
from dissemination.delivery.sftp_target import (
    DeliveryError,
    DestinationMisconfigured,
    UploadFailed,
)
from dissemination.devkit.local_sftp import LocalSftpServer
from dissemination.errors import PermanentError
from dissemination.ledger import connection as ledger_connection
from dissemination.ledger.audit import verify
from dissemination.ledger.migrations import open_upgraded
from dissemination.ledger.records import ClaimKey, LedgerUnavailable
from dissemination.ledger.store import Ledger
from dissemination.package.digests import file_sha256
from dissemination.runs import PackagingRun, package_deliveries, plan_deliveries

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
PASSWORD = "a-long-enough-test-password"


@pytest.fixture
def pg_schema():
    """A private schema in the machine's PostgreSQL (the production ledger)."""
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    schema = f"test_once_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield admin, schema
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _pg_ledger(schema: str, url: str = POSTGRES_URL) -> Ledger:
    return open_upgraded(sa.create_engine(url, hide_parameters=True,
                                          connect_args={"options": f"-c search_path={schema}"}))


def _sqlite_ledger(tmp_path) -> Ledger:
    return open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))


def _packaged(policy, round_nga, server, tmp_path, ledger, *, size: int = 0, folder="pk"):
    """unicef-nga's main delivery of the round, packaged; ``size`` pads the package (a real
    zip's bytes, then filler) so an upload lasts long enough to be interrupted."""
    meta, df = round_nga
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2026, 11, 2), only=["unicef-nga"])
    (delivery,) = [d for d in package_deliveries(
        df, meta, plans, policy, tmp_path / folder, lambda variable: PASSWORD, ledger,
        PackagingRun(NOW))
        if d.recipient == "primary"]
    for dest in (delivery.destination, delivery.fallback["destination"]):
        (server.root / dest.split(":", 1)[1]).mkdir(parents=True, exist_ok=True)
    if size:
        with open(delivery.package_path, "ab") as f:
            f.write(os.urandom(size))
        delivery = replace(delivery, package_sha256=file_sha256(Path(delivery.package_path)))
    return delivery


def _remote(server, delivery) -> Path:
    return server.root / delivery.destination.split(":", 1)[1]


def _finals_are_verified(server, ledger: Ledger) -> None:
    """Every file under a final name is a recorded, complete package; no temp file remains;
    the ledger's hash chain holds."""
    files = [p for p in server.root.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".partial")]
    recorded = {r.remote_path: r.package_sha256 for r in ledger.all()}
    assert {str(p.relative_to(server.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files} == recorded
    assert verify(ledger.engine).ok  # every delivery row is chained in the audit trail


def _ledger_status(ledger: Ledger) -> str:
    """What ``python -m dissemination ledger status`` prints for the ledger."""
    return subprocess.run(
        [sys.executable, "-m", "dissemination", "ledger", "status", "--url",
         str(ledger.engine.url)], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(runs.__file__).parents[2])}).stdout


def _deliver(delivery, server, policy, ledger, run_id="run-1", **kw):
    return deliver(delivery, lambda conn: server.target(), policy, ledger, NOW, run_id, **kw)


def test_sshd_killed_mid_upload_then_back(policy, round_nga, server, tmp_path):
    ledger = _sqlite_ledger(tmp_path)
    delivery = _packaged(policy, round_nga, server, tmp_path, ledger, size=128 << 20)
    attempt = InBackground(lambda: _deliver(delivery, server, policy, ledger))
    folder = _remote(server, delivery)
    wait_until(lambda: any(p.stat().st_size > 1 << 20 for p in folder.glob(".*.partial")),
               what="the upload to be under way")
    kill_sshd(server)
    error = attempt.outcome()
    assert isinstance(error, UploadFailed) and not isinstance(error, PermanentError)
    assert f"127.0.0.1:{server.port}:{delivery.destination.split(':', 1)[1]}" in str(error)
    assert "retrying is safe" in str(error)
    assert not (folder / Path(delivery.package_path).name).exists()
    assert ledger.claims() == [] and ledger.all() == []  # released: nothing half-claimed
    (left,) = folder.glob(".*.partial")  # the attempt could not remove it: the ledger knows it
    left_path = f"{delivery.destination.split(':', 1)[1]}/{left.name}"
    assert ledger.partials_left(delivery.destination) == [left_path]
    ledger.initialise("test ledger", NOW)
    assert f"temporary file left at {delivery.destination}: {left_path} since " \
        in _ledger_status(ledger)
    server.start()  # back, same host key and port
    done = _deliver(delivery, server, policy, ledger)
    assert done.status == "recorded"
    _finals_are_verified(server, ledger)  # the killed attempt's temp file is gone too
    assert ledger.partials_left(delivery.destination) == []


def test_sigkill_mid_upload_then_the_retry(policy, round_nga, server, tmp_path):
    """A task process killed with SIGKILL mid-upload says nothing: its claim stays, and its
    temporary file is known only to the server. The retry looks through the folder, removes
    it, and delivers once."""
    ledger = _sqlite_ledger(tmp_path)
    delivery = _packaged(policy, round_nga, server, tmp_path, ledger, size=256 << 20)
    target = server.target()
    child = deliver_in_child({
        "delivery": delivery.to_xcom(), "policy": str(POLICY_DIR), "run_id": "run-1",
        "now": NOW.isoformat(), "ledger_url": str(ledger.engine.url),
        "target": {"host": target.host, "port": target.port, "username": target.username,
                   "host_key": target.host_key, "private_key_path": target.private_key_path}})
    folder = _remote(server, delivery)
    try:
        wait_until(lambda: any(p.stat().st_size > 1 << 20 for p in folder.glob(".*.partial"))
                   or child.poll() is not None, what="the upload to be under way")
    finally:
        child.kill()
        output = child.communicate()[0]
    assert child.returncode == -9, output  # killed mid-upload, not finished
    assert [p.suffix for p in folder.iterdir()] == [".partial"]
    assert len(ledger.claims()) == 1 and ledger.partials_left(delivery.destination) == []
    done = _deliver(delivery, server, policy, ledger)  # Airflow's retry of the same task
    assert done.status == "recorded"
    _finals_are_verified(server, ledger)  # the killed attempt's temp file is gone


def test_server_silent_mid_upload_then_back(policy, round_nga, server, tmp_path):
    """A server that stops answering mid-upload (its session processes stopped, as on a dead
    disk) ends the attempt once it has said nothing for the pool's limit, where paramiko alone
    waits for ever, holding the claim. The claim is released naming the temporary file; once
    the server answers again, the retry removes it and delivers once."""
    ledger = _sqlite_ledger(tmp_path)
    delivery = _packaged(policy, round_nga, server, tmp_path, ledger, size=128 << 20)
    folder = _remote(server, delivery)
    with Sessions(stall_seconds=2) as sessions:
        attempt = InBackground(lambda: _deliver(delivery, server, policy, ledger,
                                                sessions=sessions))
        wait_until(lambda: any(p.stat().st_size > 1 << 20 for p in folder.glob(".*.partial")),
                   what="the upload to be under way")
        with silent_sessions(server):
            error = attempt.outcome(within=60)
    assert isinstance(error, UploadFailed) and not isinstance(error, PermanentError)
    assert "the server sent nothing for 2 s, so the session was closed" in str(error)
    assert f"127.0.0.1:{server.port}:{delivery.destination.split(':', 1)[1]}" in str(error)
    assert ledger.claims() == [] and ledger.all() == []  # released: the next run need not wait
    (left,) = folder.glob(".*.partial")
    assert ledger.partials_left(delivery.destination) == [
        f"{delivery.destination.split(':', 1)[1]}/{left.name}"]
    done = _deliver(delivery, server, policy, ledger)
    assert done.status == "recorded"
    _finals_are_verified(server, ledger)  # the silent attempt's temp file is gone too


@pytest.mark.integration
def test_server_down_then_back(policy, round_nga, tmp_path):
    server = LocalSftpServer(tmp_path / "sftp")
    ledger = _sqlite_ledger(tmp_path)
    delivery = _packaged(policy, round_nga, server, tmp_path, ledger)
    server._write_config()  # keys exist, nothing listens yet
    with pytest.raises(DeliveryError, match=f"cannot reach SFTP server .*:{server.port}") as exc:
        _deliver(delivery, server, policy, ledger)
    assert not isinstance(exc.value, PermanentError)  # Airflow retries it
    assert ledger.claims() == []
    with server:
        assert _deliver(delivery, server, policy, ledger).status == "recorded"
        _finals_are_verified(server, ledger)


@pytest.mark.integration
def test_a_server_refusing_renames_holds_no_claim(policy, round_nga, tmp_path):
    """A server that refuses to rename (at the primary's and the secondary's destination)
    answered, so nothing can be under a final name: the claim is released at once, and the
    next run need not wait out the lease."""
    with LocalSftpServer(tmp_path / "sftp", refuse=("posix-rename", "rename")) as server:
        ledger = _sqlite_ledger(tmp_path)
        delivery = _packaged(policy, round_nga, server, tmp_path, ledger)
        with pytest.raises(DestinationMisconfigured, match="refuses to rename"):
            _deliver(delivery, server, policy, ledger)
        assert ledger.claims() == [] and ledger.all() == []
        assert not [p for p in server.root.rglob("*") if p.is_file()]


def test_host_key_changed_sends_nothing_and_reports_why(policy, round_nga, server, tmp_path):
    ledger = _sqlite_ledger(tmp_path)
    delivery = replace(_packaged(policy, round_nga, server, tmp_path, ledger), fallback={})
    impostor = LocalSftpServer(tmp_path / "impostor")
    impostor._write_config()
    with pytest.raises(PermanentError, match="presented host key .* nothing was sent"):
        deliver(delivery, lambda conn: server.target(host_key=impostor.host_key), policy,
                      ledger, NOW, "run-1")
    assert ledger.claims() == [] and not list(_remote(server, delivery).iterdir())
    assert _deliver(delivery, server, policy, ledger).status == "recorded"  # key fixed


def test_login_revoked_falls_back_to_the_secondary_once(policy, round_nga, server, tmp_path):
    """The primary's server refuses the login: the secondary receives it, recorded as such;
    without a secondary the delivery fails naming the login, and nothing is recorded."""
    ledger = _sqlite_ledger(tmp_path)
    delivery = _packaged(policy, round_nga, server, tmp_path, ledger)
    (server.home / "authorized_keys").write_text("")  # revoked
    with pytest.raises(PermanentError, match="login refused"):
        _deliver(replace(delivery, fallback={}), server, policy, ledger)
    assert ledger.claims() == [] and ledger.all() == []
    other = LocalSftpServer(tmp_path / "secondary").start()
    try:
        targets = {delivery.destination.split(":")[0]: server.target(),
                   delivery.fallback["destination"].split(":")[0]: other.target()}
        if len(targets) == 1:  # same connection id: point the fallback at the other server
            delivery = replace(delivery, fallback={**delivery.fallback, "destination":
                               "secondary_sftp:" + delivery.fallback["destination"].split(":")[1]})
            targets["secondary_sftp"] = other.target()
        (other.root / delivery.fallback["destination"].split(":")[1]).mkdir(parents=True)
        done = deliver(delivery, targets.__getitem__, policy, ledger, NOW, "run-1")
        again = deliver(delivery, targets.__getitem__, policy, ledger, NOW, "run-2")
    finally:
        other.stop()
    assert (done.status, done.recipient) == ("recorded", "secondary")
    assert "login refused" in done.reason
    assert again.status == "already_delivered"
    (row,) = ledger.all()
    assert (row.recipient, row.destination) == ("secondary", delivery.fallback["destination"])
    _finals_are_verified(other, ledger)


def test_remote_disk_full(policy, round_nga, server, tmp_path):
    ledger = _sqlite_ledger(tmp_path)
    delivery = _packaged(policy, round_nga, server, tmp_path, ledger, size=3 << 20)
    with small_filesystem(_remote(server, delivery), "1m") as resize:
        with pytest.raises(UploadFailed, match="full disk") as exc:
            _deliver(delivery, server, policy, ledger)
        assert delivery.destination.split(":", 1)[1] in str(exc.value)
        assert not list(_remote(server, delivery).iterdir())  # temp file removed
        assert ledger.claims() == []
        resize("8m")  # the partner frees space
        assert _deliver(delivery, server, policy, ledger).status == "recorded"
        _finals_are_verified(server, ledger)


def test_ledger_unavailable_before_the_claim_uploads_nothing(policy, round_nga, server, tmp_path,
                                                             pg_schema):
    _, schema = pg_schema
    link = CuttableLink("127.0.0.1", sa.make_url(POSTGRES_URL).port or 5432)
    try:
        url = sa.make_url(POSTGRES_URL).set(port=link.port)
        ledger = _pg_ledger(schema, url)
        delivery = _packaged(policy, round_nga, server, tmp_path, ledger)
        link.cut()
        with pytest.raises(LedgerUnavailable, match="claim the delivery") as exc:
            _deliver(delivery, server, policy, ledger)
        assert not isinstance(exc.value, PermanentError)
        assert not list(_remote(server, delivery).iterdir())
    finally:
        link.close()


def test_ledger_cut_during_and_after_the_upload(policy, round_nga, server, tmp_path, pg_schema):
    """The link to PostgreSQL is cut once the claim is made: the upload completes, the ledger
    row cannot be written. The retry (a new process: a new engine) finds the package whole on
    the server and records it without uploading again."""
    _, schema = pg_schema
    link = CuttableLink("127.0.0.1", sa.make_url(POSTGRES_URL).port or 5432)
    try:
        url = sa.make_url(POSTGRES_URL).set(port=link.port)
        delivery = _packaged(policy, round_nga, server, tmp_path, _pg_ledger(schema, url))

        def target_after_cut(conn_id):
            link.cut()  # the claim is written; the upload starts now
            return server.target()

        with pytest.raises(LedgerUnavailable, match="complete and verified, but not yet recorded"):
            deliver(delivery, target_after_cut, policy, _pg_ledger(schema, url), NOW,
                          "run-1")
        final = _remote(server, delivery) / Path(delivery.package_path).name
        uploaded = final.stat()
        link.restore()
        ledger = _pg_ledger(schema, url)
        done = _deliver(delivery, server, policy, ledger)
        assert done.status == "recorded" and "not uploaded again" in done.reason
        assert (final.stat().st_ino, final.stat().st_mtime_ns) == (uploaded.st_ino,
                                                                    uploaded.st_mtime_ns)
        _finals_are_verified(server, ledger)
        assert _deliver(delivery, server, policy, ledger, "run-2").status == "already_delivered"
    finally:
        link.close()


@pytest.mark.integration
@pytest.mark.parametrize("holds", ["the chain lock", "the delivery's claim"])
def test_a_writer_stopped_mid_transaction_holds_the_others_briefly(
        policy, round_nga, server, tmp_path, pg_schema, monkeypatch, holds):
    """PostgreSQL: a ledger writer whose process stops mid-transaction (SIGSTOP) holds a lock:
    the chain lock every writer of every run needs, or the row of the claim its retry (or
    another run) takes. The others give up after LOCK_WAIT, naming it, rather than wait for
    ever; PostgreSQL ends the stopped writer's transaction after STUCK_AFTER, which that writer
    set itself; then the retry delivers, once."""
    admin, schema = pg_schema
    ledger = _pg_ledger(schema)
    monkeypatch.setattr(ledger_connection, "LOCK_WAIT", timedelta(seconds=1))
    delivery = _packaged(policy, round_nga, server, tmp_path, ledger)
    claim = asdict(claim_key(delivery)) if holds == "the delivery's claim" else None
    writer, backend = stuck_ledger_writer(POSTGRES_URL, schema, 4, claim)
    try:
        error = InBackground(lambda: _deliver(delivery, server, policy, ledger)).outcome(60)
        assert isinstance(error, LedgerUnavailable), error
        assert "waited 1 s for a lock of the ledger" in str(error)
        if claim:  # nothing was uploaded
            assert "while trying to claim the delivery" in str(error)
            assert not [p for p in server.root.rglob("*") if p.is_file()]
        else:  # uploaded, not yet recorded
            assert "while trying to record the verified delivery" in str(error)
            assert "complete and verified, but not yet recorded" in str(error)
        with admin.connect() as conn:
            wait_until(lambda: not conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend}
            ).scalar(), what="PostgreSQL to end the stopped writer's transaction")
        done = _deliver(delivery, server, policy, ledger)
    finally:
        writer.kill()
        writer.wait()
    assert done.status == "recorded"
    assert ("not uploaded again" in done.reason) == (claim is None)
    _finals_are_verified(server, ledger)


@pytest.mark.integration
def test_a_rotation_mark_waits_for_a_stopped_writer_only_briefly(pg_schema, monkeypatch,
                                                                 capsys):
    """PostgreSQL: DTM's focal point marks a rotation called while another writer of the same
    rotation's row stopped mid-transaction. The mark gives up after LOCK_WAIT, naming what it
    was doing, instead of hanging the command; once PostgreSQL ended the stopped transaction,
    the mark goes through."""
    admin, schema = pg_schema
    ledger = _pg_ledger(schema)
    monkeypatch.setattr(ledger_connection, "LOCK_WAIT", timedelta(seconds=1))
    ledger.record_rotation("unicef-nga", "package_password_unicef_nga", NOW, "Aisha Bello")
    writer, backend = stuck_ledger_writer(POSTGRES_URL, schema, 4, rotation_of="unicef-nga")
    try:
        called = ["ledger", "called", "--agreement", "unicef-nga", "--url",
                  f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"]
        assert InBackground(lambda: cli(called)).outcome(60) == 1
        error = capsys.readouterr().err
        assert "waited 1 s for a lock of the ledger" in error
        assert "while trying to mark the rotation called" in error
        with admin.connect() as conn:
            wait_until(lambda: not conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend}
            ).scalar(), what="PostgreSQL to end the stopped writer's transaction")
        assert cli(called) == 0
    finally:
        writer.kill()
        writer.wait()
    assert "1 password rotation(s) marked" in capsys.readouterr().out
    assert [r.called_at is not None for r in ledger.rotations()] == [True]


def test_sigkill_between_upload_and_ledger_write(policy, round_nga, server, tmp_path, pg_schema):
    """A task process killed with SIGKILL after its upload, while writing the ledger row (held
    there by a lock the test owns). The retry records it without uploading again."""
    admin, schema = pg_schema
    ledger = _pg_ledger(schema)
    delivery = _packaged(policy, round_nga, server, tmp_path, ledger)
    with admin.connect() as conn:
        conn.execute(sa.text(f"""
            CREATE FUNCTION "{schema}".hold() RETURNS trigger AS $$
            BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER hold BEFORE INSERT ON "{schema}".deliveries
            FOR EACH ROW EXECUTE FUNCTION "{schema}".hold();"""))
    holder = admin.connect()
    holder.execute(sa.text("SELECT pg_advisory_lock(4242)"))
    target = server.target()
    child = deliver_in_child({
        "delivery": delivery.to_xcom(), "policy": str(POLICY_DIR), "run_id": "run-1",
        "now": NOW.isoformat(), "ledger_url": POSTGRES_URL,
        "connect_args": {"options": f"-c search_path={schema}"},
        "target": {"host": target.host, "port": target.port, "username": target.username,
                   "host_key": target.host_key, "private_key_path": target.private_key_path}})
    try:
        wait_until(lambda: holder.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' "
            "AND query LIKE 'INSERT INTO deliveries%'")).scalar(), what="the ledger write")
        final = _remote(server, delivery) / Path(delivery.package_path).name
        assert final.exists()  # uploaded, renamed, verified; not yet recorded
        child.kill()
        child.wait()
    finally:
        holder.execute(sa.text("SELECT pg_advisory_unlock(4242)"))
        holder.close()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP TRIGGER hold ON "{schema}".deliveries'))
    assert ledger.all() == []
    uploaded = final.stat()
    done = _deliver(delivery, server, policy, ledger)  # Airflow's retry of the same task
    assert done.status == "recorded" and "not uploaded again" in done.reason
    assert final.stat().st_ino == uploaded.st_ino
    _finals_are_verified(server, ledger)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def test_two_runs_of_the_same_round_at_once(backend, policy, round_nga, server, tmp_path,
                                            pg_schema):
    """Two runs package the same round separately (different bytes, same content) and deliver
    at the same instant: one uploads and records; the other sees the claim and stops."""
    _, schema = pg_schema
    first = _sqlite_ledger(tmp_path) if backend == "sqlite" else _pg_ledger(schema)

    def make():  # each run its own process, hence its own engine
        return Ledger(sa.create_engine(first.engine.url, hide_parameters=True,
                                       connect_args={} if backend == "sqlite" else
                                       {"options": f"-c search_path={schema}"}))
    a = _packaged(policy, round_nga, server, tmp_path, make(), folder="a")
    b = _packaged(policy, round_nga, server, tmp_path, make(), folder="b")
    assert a.package_sha256 != b.package_sha256 and a.content_sha256 == b.content_sha256
    start, results = threading.Barrier(2), {}

    def run(delivery, run_id):
        start.wait()
        results[run_id] = _deliver(delivery, server, policy, make(), run_id)

    workers = [threading.Thread(target=run, args=args) for args in ((a, "run-a"), (b, "run-b"))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    statuses = sorted(r.status for r in results.values())
    assert statuses[0] in ("already_delivered", "in_progress") and statuses[1] == "recorded"
    ledger = make()
    (row,) = ledger.all()
    _finals_are_verified(server, ledger)
    (claim,) = ledger.claims()
    assert claim.state == "delivered" and claim.run_id == row.run_id


def test_a_stale_claim_of_a_dead_run_is_taken_over_after_its_lease(policy, round_nga, server,
                                                                   tmp_path):
    ledger = _sqlite_ledger(tmp_path)
    delivery = _packaged(policy, round_nga, server, tmp_path, ledger)
    key = claim_key(delivery)
    ledger.claim(key, "dead-run", "0" * 64, delivery.destination, "nowhere.zip", NOW,
                 timedelta(hours=1))
    held = _deliver(delivery, server, policy, ledger, "run-2")
    assert held.status == "in_progress" and "dead-run" in held.reason
    ledger.initialise("test ledger", NOW)
    assert ("claimed, not delivered: unicef-nga NGA-R001-partial (medium, main) by run "
            "dead-run since 2026-11-02 10:00 UTC; others may take over after 2026-11-02 "
            "11:00 UTC") in _ledger_status(ledger)
    later = deliver(delivery, lambda conn: server.target(), policy, ledger,
                          NOW + timedelta(hours=2), "run-3")
    assert later.status == "recorded"
    _finals_are_verified(server, ledger)


def test_a_notice_is_sent_once_per_delivery(tmp_path):
    ledger = _sqlite_ledger(tmp_path)
    got = ledger.claim(ClaimKey("a", "NGA-R001-partial", "medium", "main", "c" * 64),
                       "run", "p" * 64, "sftp:in", "in/x.zip", NOW, timedelta(hours=1))
    assert ledger.mark_notified(got.claim.id, NOW) is True
    assert ledger.mark_notified(got.claim.id, NOW) is False  # a retry of notify
    ledger.unmark_notified(got.claim.id)  # the mail server refused: the retry sends it
    assert ledger.mark_notified(got.claim.id, NOW) is True


def test_a_retry_of_the_same_run_keeps_a_recorded_delivery_whose_notice_is_due(
        policy, round_nga, server, tmp_path):
    """A batch whose second delivery failed is retried whole: the first, recorded by the
    earlier attempt, stays ``recorded`` (same claim) until its notice is marked sent, and
    another run sees it delivered."""
    ledger = _sqlite_ledger(tmp_path)
    delivery = _packaged(policy, round_nga, server, tmp_path, ledger)
    first = _deliver(delivery, server, policy, ledger, "run-1")
    retry = _deliver(delivery, server, policy, ledger, "run-1")
    assert (retry.status, retry.claim_id, retry.remote_path) == (
        "recorded", first.claim_id, first.remote_path)
    assert retry.deadline_met == first.deadline_met
    assert _deliver(delivery, server, policy, ledger, "run-2").status == "already_delivered"
    assert ledger.mark_notified(retry.claim_id, NOW) is True
    assert _deliver(delivery, server, policy, ledger, "run-1").status == "already_delivered"
    assert len(ledger.all()) == 1
