"""A batch's deliveries a few at once (``deliver_each``), against a real OpenSSH sshd and
both ledgers: they overlap, each is recorded exactly once with the hash chain intact, a failure
stops none of the others, and a batch stopped midway leaves no delivery half done."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from faults import InBackground, silent_sessions

from dissemination.classification import Urgency
from dissemination.delivery import Delivery, deliver, deliver_each
from dissemination.delivery.sftp_sessions import Sessions
from dissemination.delivery.sftp_target import DestinationMisconfigured
from dissemination.devkit.synthetic import generate_round
from dissemination.ledger.audit import verify
from dissemination.ledger.migrations import open_upgraded
from dissemination.runs import PackagingRun, package_deliveries, plan_deliveries

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
PASSWORD = "a-long-enough-test-password"


def _packaged(policy, tmp_path, ledger, rounds: int) -> list[Delivery]:
    """Every NGA medium-urgency delivery of ``rounds`` small rounds, packaged."""
    out = []
    for number in range(1, rounds + 1):
        meta, df = generate_round(policy.rulesets["NGA"], number, 40, seed=number)
        plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                      today=date(2026, 11, 2))
        out += package_deliveries(df, meta, plans, policy, tmp_path / f"pk{number}",
                                        lambda variable: PASSWORD, ledger, PackagingRun(NOW))
    assert len(out) >= 6 and all(d.status == "packaged" for d in out)
    return out


class Attempts:
    """Wraps ``deliver`` to see what a batch does: which attempts began and ended, and
    how many ran at once. The first ``together`` attempts wait for each other at a barrier, so
    a batch that did not run them at once fails with BrokenBarrierError."""

    def __init__(self, policy, server, ledger, together: int = 0, sessions=None):
        self.policy, self.server, self.ledger, self.sessions = policy, server, ledger, sessions
        self.barrier = threading.Barrier(together) if together else None
        self.lock = threading.Lock()
        self.began, self.ended, self.running, self.peak = [], [], 0, 0

    def __call__(self, d: Delivery) -> Delivery:
        with self.lock:
            self.began.append(d.package_path)
            first = len(self.began) <= (self.barrier.parties if self.barrier else 0)
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            if first:
                self.barrier.wait(timeout=60)
            return deliver(d, lambda conn: self.server.target(), self.policy,
                                 self.ledger, NOW, "run-1", sessions=self.sessions)
        finally:
            with self.lock:
                self.running -= 1
                self.ended.append(d.package_path)


def _on_server(server) -> dict[str, str]:
    return {str(p.relative_to(server.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in server.root.rglob("*") if p.is_file()}


def test_a_batchs_deliveries_overlap_and_each_is_recorded_once(policy, server, tmp_path,
                                                               sql_engine):
    ledger = open_upgraded(sql_engine)
    deliveries = _packaged(policy, tmp_path, ledger, rounds=3)
    attempts = Attempts(policy, server, ledger, together=4)

    results = list(deliver_each(deliveries, attempts, threads=4))

    assert [d for d, _ in results] == deliveries  # in batch order, whatever finished first
    assert [o.status for _, o in results] == ["recorded"] * len(deliveries), results
    assert attempts.peak == 4  # four at once, never more
    recorded = ledger.all()
    assert len(recorded) == len(deliveries)
    assert _on_server(server) == {r.remote_path: r.package_sha256 for r in recorded}
    assert {c.state for c in ledger.claims()} == {"delivered"}
    assert verify(ledger.engine).ok  # concurrent writers kept one unbroken hash chain
    # A second pass (a retry, or another run) sends nothing again.
    again = list(deliver_each(deliveries, Attempts(policy, server, ledger), threads=4))
    assert {o.status for _, o in again} == {"recorded"}  # this run's own, kept
    assert len(ledger.all()) == len(deliveries)


def test_one_failure_stops_none_of_the_others(policy, server, tmp_path, sql_engine):
    ledger = open_upgraded(sql_engine)
    deliveries = _packaged(policy, tmp_path, ledger, rounds=2)
    broken = 1  # its folder is missing on the server and it has no secondary to fall back to
    deliveries[broken] = replace(deliveries[broken], fallback={},
                                       destination=deliveries[broken].destination + "/gone")

    with Sessions() as sessions:  # the failed delivery's session is closed, not passed on
        results = list(deliver_each(
            deliveries, Attempts(policy, server, ledger, sessions=sessions), threads=3))

    assert [d for d, _ in results] == deliveries
    assert isinstance(results[broken][1], DestinationMisconfigured)
    assert "does not exist" in str(results[broken][1])
    others = [o for i, (_, o) in enumerate(results) if i != broken]
    assert {o.status for o in others} == {"recorded"}
    assert len(ledger.all()) == len(deliveries) - 1


def test_a_stopped_batch_leaves_no_delivery_half_done(policy, server, tmp_path, sql_engine):
    """A task timeout lands in the thread reading the outcomes; here the first attempt raises
    it. The attempt under way beside it still finishes and is recorded: no claim is left to
    wait out its lease, and what never began is not in the ledger."""
    ledger = open_upgraded(sql_engine)
    deliveries = _packaged(policy, tmp_path, ledger, rounds=2)
    attempts = Attempts(policy, server, ledger, together=2)

    def attempt(d):
        if d is deliveries[0]:
            with attempts.lock:
                attempts.began.append(d.package_path)
            attempts.barrier.wait(timeout=60)  # the second delivery is under way
            raise KeyboardInterrupt
        return attempts(d)

    with pytest.raises(KeyboardInterrupt):
        for _ in deliver_each(deliveries, attempt, threads=2):
            pass

    under_way = attempts.began[1:]
    assert under_way and sorted(attempts.ended) == sorted(under_way)  # all of them ended
    assert deliveries[1].package_path in under_way
    assert {r.package_sha256 for r in ledger.all()} == {
        d.package_sha256 for d in deliveries if d.package_path in under_way}
    assert {c.state for c in ledger.claims()} == {"delivered"}


def _logins(server) -> int:
    """Logins sshd has accepted so far (its own log, LogLevel VERBOSE)."""
    return sum("Accepted publickey" in line for line in server.log_lines)


def test_a_batch_logs_in_once_per_thread_not_once_per_delivery(policy, server, tmp_path):
    """An organisation's deliveries mostly go to one server: the batch keeps its sessions."""
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    deliveries = _packaged(policy, tmp_path, ledger, rounds=3)

    with Sessions() as sessions:
        results = list(deliver_each(
            deliveries, Attempts(policy, server, ledger, sessions=sessions), threads=2))

    assert [o.status for _, o in results] == ["recorded"] * len(deliveries)
    assert _on_server(server) == {r.remote_path: r.package_sha256 for r in ledger.all()}
    assert 1 <= sessions.opened <= 2 < len(deliveries)
    assert _logins(server) == sessions.opened


def test_a_session_the_server_dropped_is_replaced(policy, server, tmp_path):
    """Between two deliveries the server ends the kept session (an idle timeout, a restart):
    the next delivery notices before uploading, logs in again, and delivers."""
    import psutil

    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    first, second, *_ = _packaged(policy, tmp_path, ledger, rounds=2)
    with Sessions() as sessions:
        attempt = Attempts(policy, server, ledger, sessions=sessions)
        assert attempt(first).status == "recorded"
        for session in psutil.Process(server._proc.pid).children(recursive=True):
            session.kill()  # the listening sshd stays; the kept session's processes end
        assert attempt(second).status == "recorded"
    assert sessions.opened == 2 == _logins(server)
    assert _on_server(server) == {r.remote_path: r.package_sha256 for r in ledger.all()}


def test_a_kept_session_whose_server_fell_silent_is_replaced(policy, server, tmp_path):
    """Between two deliveries the kept session's server stops answering (its processes
    stopped): the check before reuse gives up after the pool's limit, where paramiko alone
    would wait for ever, and the next delivery goes through a new session."""
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    first, second, *_ = _packaged(policy, tmp_path, ledger, rounds=2)
    with Sessions(stall_seconds=2) as sessions:
        attempt = Attempts(policy, server, ledger, sessions=sessions)
        assert attempt(first).status == "recorded"
        with silent_sessions(server):
            assert InBackground(lambda: attempt(second)).outcome(within=60).status == "recorded"
    assert sessions.opened == 2 == _logins(server)
    assert _on_server(server) == {r.remote_path: r.package_sha256 for r in ledger.all()}


@pytest.mark.parametrize("threads", [1, 4])
def test_one_thread_or_several_deliver_the_same(policy, server, tmp_path, threads):
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    deliveries = _packaged(policy, tmp_path, ledger, rounds=2)
    attempts = Attempts(policy, server, ledger)

    results = list(deliver_each(deliveries, attempts, threads=threads))

    assert [o.status for _, o in results] == ["recorded"] * len(deliveries)
    assert attempts.peak <= threads
    assert len(ledger.all()) == len(deliveries)


@pytest.mark.parametrize("value", ["0", "-2", "four", "1.5"])
@pytest.mark.parametrize("variable, setting", [
    ("DISSEMINATION_DELIVERY_THREADS", "delivery_threads"),
    ("DISSEMINATION_SFTP_STALL_SECONDS", "sftp_stall_seconds")])
def test_a_bad_setting_is_refused_naming_it(monkeypatch, value, variable, setting):
    import dissemination_airflow
    from dissemination_airflow import ConfigurationError

    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        getattr(dissemination_airflow, setting)()
    monkeypatch.setenv(variable, "6")
    assert getattr(dissemination_airflow, setting)() == 6
