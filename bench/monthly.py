"""The monthly run at a global deployment's size: under ``airflow dags test`` and under the real
scheduler, against a trivial 3-task DAG under ``dags test`` in the same run (the floor).

Issue 10's target: 1,000 agreements across 20 countries, 100k sites per country, done in <= 10
minutes on 2 cores; no XCom above 64 KB; task instances growing with batches of destinations,
not 3x the agreements. The policy is the tests' own grown to N agreements (``bench/policies.py``),
spread over C made-up countries (NGA's rule set and DTM focal points under X-codes, ISO 3166's
user-assigned range), each agreement of its own organisation, focal points, password and remote
folder, with a low tier for its country. One cleaned round of S synthetic sites per country,
collected in the month before the wall clock's, so that the scheduler's first run of the
monthly DAG (catchup off: the last complete month) is that month, and ``dags test`` runs the
same month by logical date.

Everything else is the sandbox of ``make demo`` (``dissemination.devkit.sandbox``): a real sshd on
loopback as every partner's SFTP server (host key pinned), a local SMTP server, connections as
AIRFLOW_CONN_*; passwords as AIRFLOW_VAR_* (1,000 of them). ``dags test`` runs on SQLite; the
scheduler (``airflow standalone``, LocalExecutor, as tests/system/test_scheduler.py starts it) on
PostgreSQL, its metastore and the ledger, as in production. Each run has its own ledger and SFTP
root. After each: deliveries in the ledger (must equal the planned ones), task instances of the
run, the largest XCom value, and where the time went (per task, from ``task_instance``).

    make bench   # or: PYTHONPATH=plugins .venv/bin/python bench/monthly.py \
                 #         [--agreements 50 --countries 3 --sites 2000] [--no-scheduler]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from policies import FLOOR, spread_policy  # noqa: E402
from summary import Figure, record  # noqa: E402

from dissemination.devkit.sandbox import MONTHLY_DAG_ID, Sandbox  # noqa: E402
from dissemination.runs.passwords import new_password  # noqa: E402

# Last month, as the scheduler's first run sees it (a fixed month became "two months ago" when
# the calendar moved on, and the scheduler then ran another month than `dags test`).
THIS_MONTH = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
COLLECTED = (THIS_MONTH - timedelta(days=1)).replace(day=5, hour=8)  # inside last month
LOGICAL_DATE = THIS_MONTH.date().isoformat()  # the run due when last month is over


# --- the policy -------------------------------------------------------------------------------

# --- the environment --------------------------------------------------------------------------

class MonthlySandbox(Sandbox):
    """The demo's sandbox with the package passwords as AIRFLOW_VAR_* (no 1,000 metastore
    rows to import)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passwords = {f"AIRFLOW_VAR_{a.password.variable.upper()}": new_password()
                          for a in self.policy.agreements.values()}

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.passwords}

    def set_missing_passwords(self) -> None:
        """They are in the environment."""

    def metastore(self) -> sa.Engine:
        return sa.create_engine(self.metadata_url)


def write_rounds(sandbox: Sandbox, sites: int) -> None:
    """One cleaned round of ``sites`` sites per country, collected last month."""
    from dissemination.devkit.synthetic import generate_round
    from dissemination.intake.source import write_round

    for _, ruleset in sorted(sandbox.policy.rulesets.items()):
        write_round(sandbox.survey(), *generate_round(
            ruleset, 2, sites, seed=3, status="cleaned", collected_at=COLLECTED))


# --- measuring ------------------------------------------------------------------------------

def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def dags_test(sandbox: Sandbox, log: Path, *args: str, env: dict | None = None) -> float:
    """Wall seconds of one ``airflow dags test``; a failed run raises with its log's tail."""
    import subprocess

    airflow = Path(sys.executable).with_name("airflow")
    with open(log, "w") as out:
        seconds, code = timed(lambda: subprocess.call(
            [str(airflow), "dags", "test", *args], env=env or sandbox.env(),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))
    if code:
        raise RuntimeError(f"`airflow dags test {' '.join(args)}` exited {code}:\n"
                           f"{log.read_text()[-3000:]}")
    return seconds


def run_figures(sandbox: MonthlySandbox, logs: list[Path]) -> dict:
    """The last monthly run in the metastore: its task instances, largest XCom, per-task time;
    the ledger's deliveries against the planned ones (the plan task's log lines)."""
    metastore = sandbox.metastore()
    with metastore.connect() as conn:
        run_id, state, started, ended = conn.execute(sa.text(
            "select run_id, state, start_date, end_date from dag_run where dag_id = :d "
            "order by id desc limit 1"), {"d": MONTHLY_DAG_ID}).one()
        tis = conn.execute(sa.text(
            "select task_id, state, duration from task_instance "
            "where dag_id = :d and run_id = :r"), {"d": MONTHLY_DAG_ID, "r": run_id}).all()
        as_text = "value::text" if metastore.dialect.name == "postgresql" else "value"
        xcom = conn.execute(sa.text(
            f"select max(length({as_text})) from xcom where dag_id = :d and run_id = :r"),
            {"d": MONTHLY_DAG_ID, "r": run_id}).scalar() or 0
    metastore.dispose()
    per_task: dict[str, list] = {}
    for task_id, ti_state, seconds in tis:
        seconds = seconds or 0.0
        entry = per_task.setdefault(task_id, [0, 0.0, 0.0, set()])
        entry[0] += 1
        entry[1] += seconds
        entry[2] = max(entry[2], seconds)
        entry[3].add(ti_state)
    text = "".join(p.read_text(errors="replace") for p in logs if p.exists())
    planned = len(re.findall(r"\]: planned\b", text))
    recorded = [r for r in sandbox.ledger().all() if r.run_id == run_id]
    return {"run_id": run_id, "state": state, "task_instances": len(tis), "max_xcom": xcom,
            "planned": planned, "recorded": len(recorded),
            "run_seconds": _seconds(started, ended),
            "per_task": per_task}


def _seconds(start, end) -> float | None:
    """end - start, as SQLite (text) or PostgreSQL (datetime) returns them."""
    if not (start and end):
        return None
    start, end = (datetime.fromisoformat(str(t)) for t in (start, end))
    return (end - start).total_seconds()


def task_logs(sandbox: Sandbox, run_id: str, task_id: str) -> list[Path]:
    """A task's log files under the Airflow home (the scheduler's workers write them there)."""
    return [p for p in (sandbox.airflow_home / "logs").rglob("*")
            if p.is_file() and f"task_id={task_id}" in str(p) and run_id in str(p)]


def show(name: str, figures: dict) -> None:
    took = f" in {figures['run_seconds']:.1f} s" if name == "scheduler" else ""
    print(f"\n{name}: run {figures['run_id']} {figures['state']}{took}, "
          f"{figures['task_instances']} task instances, largest XCom {figures['max_xcom']} B, "
          f"{figures['recorded']} deliveries recorded of {figures['planned']} planned")
    print(f"  {'task':16s} {'instances':>9s} {'sum s':>9s} {'max s':>8s}  states")
    for task_id, (count, total, longest, states) in sorted(
            figures["per_task"].items(), key=lambda kv: -kv[1][1]):
        print(f"  {task_id:16s} {count:9d} {total:9.1f} {longest:8.1f}  {','.join(sorted(states))}")


def check(name: str, figures: dict) -> None:
    """A run that did not deliver everything it planned measured nothing."""
    if figures["state"] != "success" or not figures["planned"] or (
            figures["recorded"] != figures["planned"]):
        raise RuntimeError(f"{name}: run {figures['state']}, {figures['recorded']} deliveries "
                           f"recorded of {figures['planned']} planned")


def under_dags_test(home: Path, include: Path, sites: int) -> tuple[float, float, dict]:
    """Floor, then the monthly run under ``dags test`` (SQLite metastore and ledger)."""
    floor_dir = home / "floor_dags"
    floor_dir.mkdir(parents=True)
    (floor_dir / "floor.py").write_text(FLOOR)
    with MonthlySandbox(home / "dags_test", include) as sandbox:
        sandbox.init(sites=10, cleaned=False)  # only the rounds below are this month's
        write_rounds(sandbox, sites)
        floor = dags_test(sandbox, home / "floor.log", "floor", env={
            **sandbox.env(), "AIRFLOW__CORE__DAGS_FOLDER": str(floor_dir)})
        print(f"floor (3-task DAG, dags test): {floor:.1f} s", flush=True)
        log = home / "monthly_dags_test.log"
        seconds = dags_test(sandbox, log, MONTHLY_DAG_ID, LOGICAL_DATE)
        print(f"monthly, dags test: {seconds:.1f} s (log {log})", flush=True)
        figures = run_figures(sandbox, [log])
    return floor, seconds, figures


def under_scheduler(home: Path, include: Path, survey_db: Path) -> tuple[float, dict]:
    """The monthly DAG unpaused under ``airflow standalone`` (PostgreSQL); wall seconds from
    the unpause to the run's end."""
    sys.path[:0] = [str(REPO / "tests" / d) for d in ("", "support", "system")]
    import httpx
    from airflow_services import api_ok as _ok
    from airflow_services import wait_for
    from conftest import POSTGRES_URL
    from test_scheduler import Standalone

    from dissemination.devkit.local_sftp import free_port

    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    names = [f"bench_monthly_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("airflow", "ledger")]
    urls = [sa.engine.make_url(POSTGRES_URL).set(database=n).render_as_string(False)
            for n in names]
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        with MonthlySandbox(home / "scheduler", include, metadata_url=urls[0],
                            ledger_url=urls[1]) as sandbox:
            sandbox.init(sites=10, cleaned=False)
            shutil.copyfile(survey_db, sandbox.survey_db)  # the same rounds
            server = Standalone(sandbox, free_port())
            server.start()
            try:
                api = httpx.Client(base_url=f"http://127.0.0.1:{server.port}/api/v2",
                                   timeout=60)
                wait_for("the api-server", lambda: _ok(api, "/monitor/health"), timeout=300)
                wait_for("the monthly DAG to be parsed",
                         lambda: _ok(api, f"/dags/{MONTHLY_DAG_ID}"), timeout=300)
                start = time.perf_counter()
                api.patch(f"/dags/{MONTHLY_DAG_ID}", json={"is_paused": False}
                          ).raise_for_status()

                def finished():
                    runs = api.get(f"/dags/{MONTHLY_DAG_ID}/dagRuns").json()["dag_runs"]
                    return bool(runs) and runs[-1]["state"] in ("success", "failed")

                wait_for("the monthly run", finished, timeout=3600, every=5)
                seconds = time.perf_counter() - start
                print(f"monthly, scheduler: {seconds:.1f} s from the unpause", flush=True)
                with sandbox.metastore().connect() as conn:
                    run_id = conn.execute(sa.text(
                        "select run_id from dag_run where dag_id = :d order by id desc limit 1"),
                        {"d": MONTHLY_DAG_ID}).scalar()
                figures = run_figures(sandbox, task_logs(sandbox, run_id, "plan"))
            finally:
                server.stop()
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return seconds, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agreements", type=int, default=1000)
    parser.add_argument("--countries", type=int, default=20)
    parser.add_argument("--sites", type=int, default=100_000)
    parser.add_argument("--no-scheduler", action="store_true", help="dags test only")
    parser.add_argument("--keep", type=Path, help="work here and keep it (logs, databases)")
    args = parser.parse_args()
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-monthly-")
    home = args.keep or Path(tmp.name)
    try:
        include = spread_policy(home, args.agreements, args.countries)
        print(f"monthly run: {args.agreements} agreements, {args.countries} countries, "
              f"{args.sites} sites each (work in {home})", flush=True)
        floor, seconds, figures = under_dags_test(home, include, args.sites)
        show("dags test", figures)
        check("dags test", figures)
        size = f"{args.agreements:,} agreements"
        results = {"monthly_dags_test_vs_floor": Figure(
                       round(seconds / floor, 2), f"`dags test` run / trivial 3-task DAG, {size}"),
                   "monthly_floor_s": Figure(round(floor, 1), "seconds, the trivial DAG's run"),
                   "max_xcom_bytes": Figure(figures["max_xcom"], f"bytes, largest XCom, {size}",
                                            "<= 64 KB"),
                   "monthly_task_instances": Figure(figures["task_instances"],
                                                    f"task instances under `dags test`, {size}",
                                                    "growing with batches"),
                   "monthly_deliveries": Figure(figures["recorded"],
                                                "deliveries recorded (must equal those planned)")}
        if not args.no_scheduler:
            scheduled, sched = under_scheduler(home, include,
                                               home / "dags_test" / "survey.db")
            show("scheduler", sched)
            check("scheduler", sched)
            results.update(max_xcom_bytes=Figure(max(figures["max_xcom"], sched["max_xcom"]),
                                                 f"bytes, largest XCom, {size}", "<= 64 KB"),
                           monthly_scheduler_task_instances=Figure(
                               sched["task_instances"],
                               f"task instances under the scheduler, {size}"))
        print(f"\n{'':34s} {'seconds':>8s} {'vs floor':>9s} {'TIs':>5s} {'XCom B':>7s} "
              f"{'deliveries':>10s}")
        print(f"{'trivial 3-task DAG, dags test':34s} {floor:8.1f} {1:9.2f}")
        print(f"{'monthly, dags test':34s} {seconds:8.1f} {seconds / floor:9.2f} "
              f"{figures['task_instances']:5d} {figures['max_xcom']:7d} {figures['recorded']:10d}")
        if not args.no_scheduler:
            print(f"{'monthly, scheduler (unpause->end)':34s} {scheduled:8.1f} "
                  f"{scheduled / floor:9.2f} {sched['task_instances']:5d} "
                  f"{sched['max_xcom']:7d} {sched['recorded']:10d}")
        print("target: <= 600 s on 2 cores, no XCom above 65536 B")
        if (args.agreements, args.countries, args.sites) == (1000, 20, 100_000):
            results["monthly_1000_agreements_s"] = Figure(
                round(seconds, 1), "seconds, `dags test` run, 20 countries, 100k sites each",
                "<= 600 s")
            if not args.no_scheduler:
                results["monthly_1000_agreements_scheduler_s"] = Figure(
                    round(scheduled, 1), "seconds, the scheduler's run, unpause to end", "<= 600 s")
            record(**results)
        else:
            print("(not recorded: not the issue's size)")
        print(json.dumps({key: f.value for key, f in results.items()}))
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
