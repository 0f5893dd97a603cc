"""An embedded, self-contained environment: used by ``make demo`` and the end-to-end tests.

It holds an Airflow home on SQLite, a survey database with a synthetic round, a ledger database,
and a real OpenSSH SFTP server on loopback that stands in for every partner's server. Airflow is
driven through its CLI (``airflow dags test``) exactly as an engineer would, with dev connections
as ``AIRFLOW_CONN_*`` environment variables and passwords in the metastore as Airflow Variables.

    python -m dissemination.devkit.sandbox --home .demo     # what `make demo` runs
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from ..ledger import Ledger
from ..ledger_migrations import upgrade as upgrade_ledger
from ..policy import Policy, load_policy
from ..source import write_round
from ..steps import new_password
from .local_sftp import LocalSftpServer, SftpServerError
from .local_smtp import LocalSmtpServer
from .synthetic import generate_round

REPO = Path(__file__).resolve().parents[3]
DAG_ID = "urgent_dissemination"
MONTHLY_DAG_ID = "monthly_dissemination"


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
        self.sftp = LocalSftpServer(self.home / "sftp")
        self.smtp = LocalSmtpServer(self.home / "mail")
        self.policy: Policy = load_policy(self.include)
        self.host_key_override: str | None = None  # tests pin a wrong key through this

    # --- environment -----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        fernet = self.home / "fernet.key"
        if not fernet.exists():
            from cryptography.fernet import Fernet

            self.home.mkdir(parents=True, exist_ok=True)
            fernet.write_bytes(Fernet.generate_key())
            fernet.chmod(0o600)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": fernet.read_text().strip(),
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_url,
            "DISSEMINATION_INCLUDE_DIR": str(self.include),
            "DISSEMINATION_WORK_DIR": str(self.work_dir),
            "DISSEMINATION_DROP_DIR": str(self.drop_dir),
            "GX_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "plugins"), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "AIRFLOW_CONN_SURVEY_DB": json.dumps({"conn_type": "sqlite",
                                                  "host": str(self.survey_db)}),
            "AIRFLOW_CONN_DISSEMINATION_LEDGER": json.dumps(_connection(self.ledger_url)),
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(self.smtp.airflow_connection()),
        }
        connection = json.dumps(self.sftp.airflow_connection(self.host_key_override))
        for destination in self.destinations():
            env[f"AIRFLOW_CONN_{destination.sftp_conn_id.upper()}"] = connection
        return env

    def survey(self) -> sa.Engine:
        return sa.create_engine(f"sqlite:///{self.survey_db}", hide_parameters=True)

    def ledger(self) -> Ledger:
        return Ledger(sa.create_engine(self.ledger_url, hide_parameters=True))

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
        """Start the local SFTP and SMTP servers (the sandbox's partners and mail relay)."""
        self.sftp.start()
        self.smtp.start()
        return self

    def __exit__(self, *exc) -> None:
        self.smtp.stop()
        self.sftp.stop()

    # --- set-up ------------------------------------------------------------------------------

    def init(self, *, sites: int = 300, seed: int = 7) -> None:
        """Idempotent: migrate the metastore and the ledger, write the round, make folders,
        set passwords."""
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate")
        survey = self.survey()
        # Round 1: raw partial data collected six hours ago (inside every urgent window), and a
        # cleaned version collected in November 2026 (for the monthly path).
        fresh = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
        for country in sorted(self.policy.rulesets):
            for status, collected_at, days in (("partial", fresh, 1), ("cleaned", None, 3)):
                meta, df = generate_round(self.policy.rulesets[country], 1, sites, seed=seed,
                                          status=status, collected_at=collected_at,
                                          collection_days=days)
                write_round(survey, meta, df)
        for destination in self.destinations():
            (self.sftp.root / destination.remote_dir).mkdir(parents=True, exist_ok=True)
        upgrade_ledger(sa.create_engine(self.ledger_url, hide_parameters=True))
        self.ledger().initialise("fresh start: a new sandbox", datetime.now(UTC))
        self.set_missing_passwords()

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
        """A file to ``source`` for running the airflow CLI against this sandbox by hand."""
        keys = ["AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER",
                "AIRFLOW__CORE__LOAD_EXAMPLES", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                "DISSEMINATION_INCLUDE_DIR", "DISSEMINATION_WORK_DIR", "PYTHONPATH"]
        env = self.env()
        lines = [f"export {k}={shlex.quote(env[k])}" for k in keys]
        lines.append(f"export AIRFLOW__CORE__FERNET_KEY=$(cat {shlex.quote(str(self.home))}/fernet.key)")
        lines.append(f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH")
        path = self.home / "env.sh"
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


def _connection(url: str) -> dict:
    """An Airflow connection (JSON form) for a SQLite or PostgreSQL SQLAlchemy URL."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return {"conn_type": "sqlite", "host": parsed.database}
    return {"conn_type": "postgres", "host": parsed.host, "port": parsed.port,
            "login": parsed.username, "password": parsed.password, "schema": parsed.database}


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description="run the urgent dissemination DAG end to end")
    parser.add_argument("--home", type=Path, default=REPO / ".demo")
    parser.add_argument("--country", default="NGA")
    args = parser.parse_args()

    sandbox = Sandbox(args.home)
    print(f"== sandbox in {sandbox.home}")
    with sandbox:
        print(f"== SFTP server: {sandbox.sftp.description} on 127.0.0.1:{sandbox.sftp.port}, "
              f"host key {sandbox.sftp.host_key[:40]}...; SMTP on 127.0.0.1:{sandbox.smtp.port}")
        sandbox.init()
        print(f"== survey round written to {sandbox.survey_db}")
        result = sandbox.run_urgent({
            "country": args.country,
            "justification": "demo: unaccompanied children reported in new arrivals",
        })
        log = sandbox.home / "dags_test.log"
        log.write_text(result.stdout)
        print(f"== airflow dags test {DAG_ID}: exit {result.returncode} (log: {log})")
        if result.returncode != 0:
            print(result.stdout[-4000:])
            return result.returncode
    env_file = sandbox.write_env_file()
    print("\n== packages delivered (files on the local SFTP server):")
    rows = sandbox.ledger().all()
    for row in rows:
        print(f"  {row.organisation}, {row.recipient.split(':')[0]} focal point "
              f"{row.focal_point_name}: {row.row_count} rows, urgent window "
              f"{'met' if row.deadline_met else 'MISSED'}"
              f"\n    {sandbox.sftp.root / row.remote_path}")
    agreement = sandbox.policy.agreements[rows[-1].agreement_id]
    path = sandbox.sftp.root / rows[-1].remote_path
    print("\n== open one (the password is an Airflow Variable; the pipeline never prints it):")
    print(f"  source {env_file}")
    print(f"  7z x -p\"$(airflow variables get {agreement.password.variable})\" {path}")
    print("  (or Python: dissemination.package.open_package(path, password))")
    print(f"\n== e-mails sent (no password in any): {sandbox.smtp.maildir}/*.eml")
    print(f"== ledger: sqlite3 {sandbox.ledger_db} 'select * from deliveries'; its hash chain: "
          f"PYTHONPATH=plugins python -m dissemination ledger verify --url {sandbox.ledger_url}")
    print("Info-ZIP `unzip` cannot open AES zips: use 7-Zip, p7zip, WinZip or Python (pyzipper).")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SftpServerError as exc:  # one line, no traceback: what is missing or broken
        sys.exit(f"sandbox: {exc}")
