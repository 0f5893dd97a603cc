"""An embedded, self-contained environment: used by ``make demo`` and the end-to-end tests.

It holds an Airflow home on SQLite, a survey database with a synthetic round, a ledger database,
and a local SFTP server on loopback (OpenSSH sshd, else pure Python) that stands in for every
partner's server. Airflow is driven through its CLI (``airflow dags test``) exactly as an engineer
would, with dev connections as ``AIRFLOW_CONN_*`` environment variables and passwords in the
metastore as Airflow Variables. The servers' ports are kept in ``<home>/ports.json``, so
``<home>/env.sh`` (the same settings, for hand runs) stays true between runs.

    python -m dissemination.devkit.sandbox --home .demo          # what `make demo` runs
    python -m dissemination.devkit.sandbox --home .demo --ui     # `make ui` (see ui.py)
    python -m dissemination.devkit.sandbox --home .demo --serve  # `make serve`: servers only
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet

from ..intake.source import latest_round_id, write_round
from ..ledger.chain import ChainKey, keyed
from ..ledger.migrations import upgrade as upgrade_ledger
from ..ledger.records import DeliveryRecord
from ..ledger.store import Ledger
from ..policy import Policy, load_policy
from ..registry.sites import columns_of, read_master_list
from ..registry.store import load_master
from ..runs.passwords import new_password
from .local_sftp import LocalSftpServer, SftpServerError, free_port
from .local_smtp import LocalSmtpServer
from .synthetic import generate_round
from .ui import serve

REPO = Path(__file__).resolve().parents[3]
DAG_ID = "urgent_dissemination"
MONTHLY_DAG_ID = "monthly_dissemination"


class SandboxBusy(RuntimeError):
    """Another process runs this sandbox's servers (its ports and env.sh are that process's)."""


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now (with SO_REUSEADDR, as sshd and
    aiosmtpd do: a port left in TIME_WAIT by the last run counts as free)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Sandbox:
    def __init__(self, home: Path | str, include: Path | str = REPO / "include", *,
                 metadata_url: str | None = None, ledger_url: str | None = None):
        """``metadata_url``/``ledger_url`` put Airflow's metastore or the ledger on a server
        database (PostgreSQL) instead of the embedded SQLite files."""
        self.home = Path(home).resolve()
        self.include = Path(include).resolve()
        self.airflow_home = self.home / "airflow"
        self.survey_db = self.home / "survey.db"
        self.ledger_db = self.home / "ledger.db"
        self.metadata_url = metadata_url or f"sqlite:///{self.home / 'airflow' / 'airflow.db'}"
        self.ledger_url = ledger_url or f"sqlite:///{self.ledger_db}"
        self.work_dir = self.home / "work"
        self.drop_dir = self.home / "drop"
        self.fernet_key_file = self.home / "fernet.key"
        self.chain_key_file = self.home / "chain.key"  # the ledger chain's HMAC key
        self.ports_file = self.home / "ports.json"
        self.sftp = LocalSftpServer(self.home / "sftp", self.stable_port("sftp"))
        self.smtp = LocalSmtpServer(self.home / "mail", self.stable_port("smtp"))
        self.policy: Policy = load_policy(self.include)
        self.host_key_override: str | None = None  # tests pin a wrong key through this
        self._serving = None  # the lock held while this process serves the sandbox

    # --- environment -----------------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        """What the sandbox adds to the environment: Airflow's home and configuration, the
        dissemination folders, and every connection the DAGs look up (``AIRFLOW_CONN_*``: the
        survey database, the ledger, the SMTP relay, each SFTP destination of the policy)."""
        settings = {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": self._fernet_key(),
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_url,
            "DISSEMINATION_INCLUDE_DIR": str(self.include),
            "DISSEMINATION_WORK_DIR": str(self.work_dir),
            "DISSEMINATION_DROP_DIR": str(self.drop_dir),
            "GX_ANALYTICS_ENABLED": "false",
            "AIRFLOW_CONN_SURVEY_DB": json.dumps({"conn_type": "sqlite",
                                                  "host": str(self.survey_db)}),
            "AIRFLOW_CONN_DISSEMINATION_LEDGER": json.dumps(_connection(self.ledger_url)),
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(self.smtp.airflow_connection()),
            # The chain key: a connection the DAGs read, the same file for the ledger CLI.
            "AIRFLOW_CONN_DISSEMINATION_CHAIN_KEY": json.dumps(
                {"conn_type": "generic", "password": self._chain_key()}),
            "DISSEMINATION_CHAIN_KEY_FILE": str(self.chain_key_file),
        }
        connection = json.dumps(self.sftp.airflow_connection(self.host_key_override))
        for destination in self.destinations():
            settings[f"AIRFLOW_CONN_{destination.sftp_conn_id.upper()}"] = connection
        return settings

    def env(self) -> dict[str, str]:
        """This process's environment with the sandbox's settings: for the airflow CLI."""
        return {
            **os.environ,
            **self.settings(),
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "plugins"), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }

    def _fernet_key(self) -> str:
        if not self.fernet_key_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            self.fernet_key_file.write_bytes(Fernet.generate_key())
            self.fernet_key_file.chmod(0o600)
        return self.fernet_key_file.read_text().strip()

    def _chain_key(self) -> str:
        if not self.chain_key_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            self.chain_key_file.touch(mode=0o600)
            self.chain_key_file.write_text(secrets.token_hex(32))
        return self.chain_key_file.read_text().strip()

    def stable_port(self, name: str, preferred: int = 0, *, must_be_free: bool = False) -> int:
        """The port kept for ``name`` in ports.json, so that env.sh stays true between runs. A
        new one (``preferred`` if free) when none is kept or, with ``must_be_free``, when the kept
        one is taken by something else."""
        try:
            kept = json.loads(self.ports_file.read_text())
        except FileNotFoundError:
            kept = {}
        port = kept.get(name)
        if port and (not must_be_free or port_free(port)):
            return port
        port = preferred if preferred and port_free(preferred) else free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        self.ports_file.write_text(json.dumps({**kept, name: port}, indent=2, sort_keys=True)
                                   + "\n")
        return port

    def survey(self) -> sa.Engine:
        return sa.create_engine(f"sqlite:///{self.survey_db}", hide_parameters=True)

    def ledger(self) -> Ledger:
        """The ledger as the DAGs write it: with the chain key."""
        return Ledger(keyed(sa.create_engine(self.ledger_url, hide_parameters=True),
                            ChainKey(self._chain_key(), f"chain key file {self.chain_key_file}")))

    def destinations(self) -> list:
        """Every SFTP destination of the policy: agreements' and focal points' own."""
        found = [a.destination for a in self.policy.agreements.values()]
        for people in self.policy.focal_points.values():
            found += [p.destination for p in (people.primary, people.secondary, *people.field)
                      if p.destination is not None]
        return found

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the airflow CLI here; with ``check``, a failure raises with the command's output."""
        airflow = Path(sys.executable).with_name("airflow")
        result = subprocess.run(
            [str(airflow), *args], env=self.env(), text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        if check and result.returncode:
            raise RuntimeError(f"`airflow {' '.join(args)}` exited {result.returncode}:\n"
                               f"{result.stdout[-3000:]}")
        return result

    def __enter__(self) -> Sandbox:
        """Start the local SFTP and SMTP servers (the sandbox's partners and mail relay) on
        their kept ports. One process at a time: a second one would move the ports under the
        first one's env.sh."""
        self.home.mkdir(parents=True, exist_ok=True)
        lock = (self.home / ".serving.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise SandboxBusy(f"another process serves the sandbox in {self.home} (make demo, "
                              f"make ui or make serve): stop it first") from None
        self._serving = lock
        try:
            self.sftp.port = self.stable_port("sftp", must_be_free=True)
            self.smtp.port = self.stable_port("smtp", must_be_free=True)
            self.sftp.start()
            self.smtp.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.smtp.stop()
        self.sftp.stop()
        if self._serving is not None:
            self._serving.close()  # releases the lock
            self._serving = None

    # --- set-up ------------------------------------------------------------------------------

    def init(self, *, sites: int = 300, seed: int = 7, cleaned: bool = True) -> None:
        """Idempotent: migrate the metastore and the ledger, write the round, make folders,
        set passwords. ``cleaned``: also the round's cleaned version, collected in November
        2026 (a caller that dates its own cleaned rounds, as ``bench/monthly.py``, leaves it
        out: in December 2026 it is last month's)."""
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate")
        survey = self.survey()
        # Round 1: raw partial data collected six hours ago (inside every urgent window), and a
        # cleaned version collected in November 2026 (for the monthly path).
        fresh = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
        versions = [("partial", fresh, 1), *([("cleaned", None, 3)] if cleaned else [])]
        sites_of = {}
        for country in sorted(self.policy.rulesets):
            for status, collected_at, days in versions:
                meta, df = generate_round(self.policy.rulesets[country], 1, sites, seed=seed,
                                          status=status, collected_at=collected_at,
                                          collection_days=days)
                write_round(survey, meta, df)
                sites_of[country] = df  # both versions name the same sites alike
        for destination in self.destinations():
            (self.sftp.root / destination.remote_dir).mkdir(parents=True, exist_ok=True)
        upgrade_ledger(sa.create_engine(self.ledger_url, hide_parameters=True))
        self.ledger().initialise("fresh start: a new sandbox", datetime.now(UTC))
        self.load_master_lists(sites_of)
        self.set_missing_passwords()

    def load_master_lists(self, rounds: dict) -> None:
        """Bootstrap each country's site registry as a coordinator would, from a master list
        (``<home>/sites/<ISO3>.csv``, written from its synthetic round): the demo's sites are
        registered as they are, so its packages hold every one. Loading it again adds nothing."""
        folder = self.home / "sites"
        folder.mkdir(parents=True, exist_ok=True)
        for country, df in rounds.items():
            ruleset = self.policy.rulesets[country]
            path = folder / f"{country}.csv"
            df[[c for c in df if c in {ruleset.site_key, *columns_of(ruleset).all}]].to_csv(
                path, index=False)
            load_master(self.ledger().engine, country,
                        read_master_list(path, ruleset, self.policy.intake),
                        f"master list {path.name} (the sandbox's synthetic sites)", "sandbox",
                        datetime.now(UTC))

    def set_missing_passwords(self) -> None:
        listed = json.loads(self.airflow("variables", "list", "-o", "json").stdout or "[]")
        present = {v["key"] for v in listed}
        missing = {
            a.password.variable: new_password()
            for a in self.policy.agreements.values()
            if a.password.variable not in present
        }
        if not missing:
            return
        # Through a 0600 file, not argv: command lines are visible to every local user.
        secrets_file = self.home / ".variables.json"
        secrets_file.touch(mode=0o600)
        try:
            secrets_file.write_text(json.dumps(missing))
            self.airflow("variables", "import", str(secrets_file))
        finally:
            secrets_file.unlink()

    def password(self, variable: str) -> str:
        return self.airflow("variables", "get", variable).stdout.strip().splitlines()[-1]

    # --- running -----------------------------------------------------------------------------

    def run_urgent(self, conf: dict) -> subprocess.CompletedProcess:
        return self.airflow("dags", "test", DAG_ID, "-c", json.dumps(conf), check=False)

    def write_env_file(self) -> Path:
        """A file to ``source`` for running the airflow CLI against this sandbox by hand: the
        settings the demo's own runs use, connections included. The Fernet and chain keys are
        read from their files, not copied; 0600 all the same (a server ledger's connection
        holds a password)."""
        lines = ["# The sandbox's settings for the airflow CLI (written by "
                 "dissemination.devkit.sandbox): source it."]
        for key, value in self.settings().items():
            if key == "AIRFLOW__CORE__FERNET_KEY":
                value = f'"$(cat {shlex.quote(str(self.fernet_key_file))})"'
            elif key == "AIRFLOW_CONN_DISSEMINATION_CHAIN_KEY":
                value = ('"{\\"conn_type\\": \\"generic\\", \\"password\\": \\"'
                         f'$(cat {shlex.quote(str(self.chain_key_file))})\\"}}"')
            else:
                value = shlex.quote(value)
            lines.append(f"export {key}={value}")
        lines.append(f"export PYTHONPATH={shlex.quote(str(REPO / 'plugins'))}"
                     '"${PYTHONPATH:+:$PYTHONPATH}"')
        lines.append(f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"")
        path = self.home / "env.sh"
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text("\n".join(lines) + "\n")
        return path

    def run(self, dag_id: str, logical_date: str | None = None) -> subprocess.CompletedProcess:
        return self.airflow("dags", "test", dag_id, *([logical_date] if logical_date else []),
                            check=False)

    def run_monthly(self, month_end: str) -> subprocess.CompletedProcess:
        """The low-urgency run due at ``month_end``: "2026-12-01" shares November 2026."""
        return self.run(MONTHLY_DAG_ID, month_end)

    def landed(self) -> list[Path]:
        return sorted(p for p in self.sftp.root.rglob("*.zip"))

    # --- the demo's report --------------------------------------------------------------------

    def summary(self, started: datetime, round_id: str, env_file: Path) -> list[str]:
        """What a run that started at ``started`` delivered (the ledger's rows recorded since),
        or, when it delivered nothing, when each focal point already received ``round_id``; and
        how to open one package, into a folder of its own."""
        rows = self.ledger().all()
        new = [r for r in rows if r.delivered_at >= started]
        if new:
            lines = ["== delivered by this run (packages on the local SFTP server):"]
            lines += [f"  {_who(r)}: {r.row_count} rows of {r.round_id}{_window(r)}\n"
                      f"    {self.sftp.root / r.remote_path}" for r in new]
        else:
            latest: dict[tuple[str, str], DeliveryRecord] = {}
            for row in rows:  # in the order recorded: the latest delivery per focal point
                if row.round_id == round_id:
                    latest[row.agreement_id, row.recipient] = row
            new = list(latest.values())
            if not new:
                return [f"== this run delivered nothing, and no delivery of {round_id} is "
                        f"recorded: see the run's log"]
            lines = [f"== delivered by this run: nothing new ({round_id} was delivered before):"]
            lines += [f"  {_who(r)}: nothing new: already delivered on "
                      f"{r.delivered_at:%Y-%m-%d %H:%M} UTC\n"
                      f"    {self.sftp.root / r.remote_path}" for r in new]
        package = self.sftp.root / new[0].remote_path
        variable = self.policy.agreements[new[0].agreement_id].password.variable
        opened = self.home / "opened" / package.stem
        return [*lines, "",
                "== open one (the password is an Airflow Variable; the pipeline never prints it):",
                f"  source {shlex.quote(str(env_file))}",
                f"  7z x -o{shlex.quote(str(opened))} -p\"$(airflow variables get {variable})\" "
                f"{shlex.quote(str(package))}",
                "  (or Python: dissemination.package.open_package(path, password))"]


def _who(row: DeliveryRecord) -> str:
    return (f"{row.organisation}, {row.recipient.split(':')[0]} focal point "
            f"{row.focal_point_name}")


def _window(row: DeliveryRecord) -> str:
    if row.deadline_met is None:
        return ""
    return f", urgent window {'met' if row.deadline_met else 'MISSED'}"


def _connection(url: str) -> dict:
    """An Airflow connection (JSON form) for a SQLite or PostgreSQL SQLAlchemy URL."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return {"conn_type": "sqlite", "host": parsed.database}
    return {"conn_type": "postgres", "host": parsed.host, "port": parsed.port,
            "login": parsed.username, "password": parsed.password, "schema": parsed.database}


def demo(sandbox: Sandbox, country: str) -> int:
    """``make demo``: the urgent path end to end, then what this run delivered and how to open
    it, and the settings for hand runs (env.sh)."""
    print(f"== sandbox in {sandbox.home}")
    with sandbox:
        print(f"== SFTP server: {sandbox.sftp.description} on 127.0.0.1:{sandbox.sftp.port}, "
              f"host key {sandbox.sftp.host_key[:40]}...; SMTP on 127.0.0.1:{sandbox.smtp.port}")
        sandbox.init()
        env_file = sandbox.write_env_file()
        print(f"== survey round written to {sandbox.survey_db}")
        round_id = latest_round_id(sandbox.survey(), country, "partial")  # what the DAG picks
        started = datetime.now(UTC)
        result = sandbox.run_urgent({
            "country": country,
            "justification": "demo: unaccompanied children reported in new arrivals",
        })
        log = sandbox.home / "dags_test.log"
        log.write_text(result.stdout)
        print(f"== airflow dags test {DAG_ID}: exit {result.returncode} (log: {log})")
        if result.returncode != 0:
            print(result.stdout[-4000:])
            return result.returncode
    print()
    print("\n".join(sandbox.summary(started, round_id, env_file)))
    print(f"\n== e-mails sent (no password in any): {sandbox.smtp.maildir}/*.eml")
    print(f"== ledger: sqlite3 {sandbox.ledger_db} 'select * from deliveries'; its hash chain: "
          f".venv/bin/dissemination ledger verify --url {sandbox.ledger_url}")
    print("Info-ZIP `unzip` cannot open AES zips: use 7-Zip, p7zip, WinZip or Python (pyzipper).")
    print(f"\n== other DAGs by hand: `make serve` (keeps the SFTP and SMTP servers up), then "
          f"`source {env_file}` and e.g. `airflow dags test password_rotation`; "
          f"the Airflow UI: `make ui`")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run the urgent dissemination DAG end to end, "
                                                 "or keep the sandbox running for hand runs")
    parser.add_argument("--home", type=Path, default=REPO / ".demo")
    parser.add_argument("--include", type=Path, default=REPO / "include",
                        help="the policy folder (default: the shipped include/)")
    parser.add_argument("--country", default="NGA")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--ui", action="store_true",
                      help="serve the SFTP and SMTP servers and Airflow's UI until Ctrl-C")
    mode.add_argument("--serve", action="store_true",
                      help="serve the SFTP and SMTP servers until Ctrl-C (for hand runs)")
    parser.add_argument("--port", type=int, default=0,
                        help="the UI's port (default: kept in <home>/ports.json, 8080 first)")
    args = parser.parse_args(argv)

    try:
        sandbox = Sandbox(args.home, args.include)
        if args.ui or args.serve:
            return serve(sandbox, ui=args.ui, port=args.port)
        return demo(sandbox, args.country)
    except SandboxBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SftpServerError as exc:  # one line, no traceback: what is missing or broken
        sys.exit(f"sandbox: {exc}")
