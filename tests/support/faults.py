"""Real faults for the fault-matrix tests: a TCP link to PostgreSQL that can be cut, an sshd
killed with SIGKILL or whose sessions stop answering (SIGSTOP), a small filesystem of the test's
own, and a delivery in a child process.

    python tests/support/faults.py deliver <json>   # one delivery attempt, as a task process
                                                    # makes it
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path


def wait_until(condition: Callable[[], object], timeout: float = 60, what: str = "") -> object:
    """Poll a condition the test cannot be told about (a file on the server, a lock wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or condition}")


class CuttableLink:
    """A TCP forwarder between a client and a real server whose every connection can be cut at
    once (the ledger database "going away" mid-task) and later restored. ``rate``: bytes per
    second towards the server at most (a slow uplink; default as fast as it goes)."""

    def __init__(self, host: str, port: int, rate: float | None = None):
        self.upstream = (host, port)
        self.rate = rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            for a, b, rate in ((client, server, self.rate), (server, client, None)):
                threading.Thread(target=self._pipe, args=(a, b, rate), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, rate: float | None) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)  # pacing, not synchronisation
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            self._sockets.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def kill_sshd(server) -> None:
    """SIGKILL the server's sshd and every session it forked: the machine "dies" mid-upload."""
    import psutil

    master = psutil.Process(server._proc.pid)
    for process in [*master.children(recursive=True), master]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    server._proc.wait()
    server._proc = None


@contextlib.contextmanager
def silent_sessions(server):
    """Stop (SIGSTOP) every session process the server's sshd has forked so far, as a server
    stuck on a dead disk: connections stay open and nothing answers. New connections are served
    by new processes. Resumed (SIGCONT) on exit."""
    import psutil

    sessions = psutil.Process(server._proc.pid).children(recursive=True)
    assert sessions, "no session to stop"
    for process in sessions:
        process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for process in sessions:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGCONT)


class InBackground:
    """``call()`` on a thread of its own. ``outcome(within)``: its result or the error it raised,
    failing the test if it has not ended after ``within`` seconds, the bound of a wait that,
    broken, would never end (the thread is then left to its fate)."""

    def __init__(self, call: Callable[[], object]):
        self._outcome: dict = {}
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            self._outcome["result"] = call()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            self._outcome["error"] = exc

    def outcome(self, within: float = 600) -> object:
        self._thread.join(within)
        assert not self._thread.is_alive(), f"still waiting after {within} s"
        return self._outcome.get("error", self._outcome.get("result"))


@contextlib.contextmanager
def small_filesystem(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path``: a remote disk that fills up for real."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                   check=True, capture_output=True)
    try:
        yield lambda new_size: subprocess.run(
            ["mount", "-o", f"remount,size={new_size}", str(path)], check=True,
            capture_output=True)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


def deliver_in_child(args: dict) -> subprocess.Popen:
    """One delivery attempt in its own process, so the test can SIGKILL it at a chosen point."""
    plugins = str(Path(__file__).resolve().parents[2] / "plugins")
    return subprocess.Popen([sys.executable, __file__, "deliver", json.dumps(args)],
                            env={**os.environ, "PYTHONPATH": plugins},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _deliver(args: dict) -> None:
    from datetime import datetime

    import sqlalchemy as sa

    from dissemination.delivery import Delivery, deliver
    from dissemination.delivery.sftp_target import SftpTarget
    from dissemination.ledger.store import Ledger
    from dissemination.policy import load_policy

    target = SftpTarget(**args["target"])
    done = deliver(Delivery.from_xcom(args["delivery"]), lambda conn: target,
                         load_policy(args["policy"]),
                         Ledger(sa.create_engine(args["ledger_url"], hide_parameters=True,
                                                 connect_args=args.get("connect_args", {}))),
                         datetime.fromisoformat(args["now"]), args["run_id"])
    print(done.status, flush=True)


def stuck_ledger_writer(url: str, schema: str, stuck_after: float, claim: dict | None = None,
                        rotation_of: str | None = None) -> tuple[subprocess.Popen, int]:
    """A ledger writer in a process of its own that stops itself (SIGSTOP) mid-transaction, as
    a paused or frozen process would: after a chained insert, so holding the chain lock every
    writer needs; or, given ``claim`` (a ClaimKey's fields), after inserting that claim's row,
    which another claim of the same delivery waits for; or, given ``rotation_of`` (an
    agreement id), after marking its rotations called, which any other mark of them waits for.
    Returned once it holds the lock, with its PostgreSQL backend's pid."""
    plugins = str(Path(__file__).resolve().parents[2] / "plugins")
    child = subprocess.Popen(
        [sys.executable, __file__, "stuck-writer", json.dumps(
            {"url": url, "schema": schema, "stuck_after": stuck_after, "claim": claim,
             "rotation_of": rotation_of})],
        env={**os.environ, "PYTHONPATH": plugins}, stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline().split()
    assert line[:1] == ["holding"], f"the stuck writer did not start: {line}"
    return child, int(line[1])


def _stuck_writer(args: dict) -> None:
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from dissemination.ledger import connection, rows, store, tables

    connection.STUCK_AFTER = timedelta(seconds=args["stuck_after"])
    engine = sa.create_engine(args["url"], hide_parameters=True,
                              connect_args={"options": f"-c search_path={args['schema']}"})
    now = datetime.now(UTC)
    # the writer's own transaction, its bounds set as the ledger sets them
    with store.Ledger(engine)._writing("hold a lock") as conn:
        if args["claim"]:
            conn.execute(tables.delivery_claims.insert().values(
                **args["claim"], state="claimed", attempt="stuck", run_id="stuck-run",
                package_sha256="0" * 64, destination="x:y", remote_path="y/z",
                claimed_at=now, lease_until=now))
        elif args["rotation_of"]:
            rotations = tables.password_rotations
            conn.execute(rotations.update().where(
                rotations.c.agreement_id == args["rotation_of"]).values(called_at=now))
        else:
            rows.insert_chained(conn, tables.alerts, {
                "kind": "test", "subject": "a writer stopped mid-transaction", "sent_at": now})
        print("holding", conn.execute(sa.select(sa.func.pg_backend_pid())).scalar(), flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)


if __name__ == "__main__" and sys.argv[1] == "deliver":
    _deliver(json.loads(sys.argv[2]))
if __name__ == "__main__" and sys.argv[1] == "stuck-writer":
    _stuck_writer(json.loads(sys.argv[2]))
