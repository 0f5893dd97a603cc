"""The urgent path end to end under ``airflow dags test``, against its floor in the same run.

Floor: a trivial 3-task TaskFlow DAG run with ``airflow dags test`` in the same environment (the
same Airflow home, metastore and settings), i.e. what Airflow costs before any work is done. Each
run parses its own DAG file only: ``--dagfile-path`` (Airflow's way to test one DAG) and a DAG
folder holding that file alone, as the floor's does (``dags test`` also syncs the whole folder of
the DAG it runs). Otherwise the urgent run would also parse, serialise and store the project's
five other DAGs (0.3-1.5 s), which no officer's urgent run waits for (the DAG processor parses
them apart). The
urgent run is the real one of ``make demo`` (``dissemination.devkit.sandbox``: SQLite survey
database, a real sshd on loopback as every partner's SFTP server, connections as AIRFLOW_CONN_*,
passwords as Variables, the tests' own policy: 3 recipients in NGA) on a synthetic NGA round of N
sites, a new round per run (a re-run of the same round delivers nothing). Floor and urgent runs are
interleaved, so that a busy machine slows both alike. A second reference, the libraries floor,
is the floor DAG whose middle task imports what the urgent path cannot do without (pandas,
pyarrow, the ADBC SQLite driver, paramiko, pyzipper, zlib-ng, aiosmtplib, and Great Expectations
as validation imports it), doing no work with them: what is left above it is the pipeline's own
work and tasks. Figures:

- ``urgent_<N>_vs_floor``: median wall time of the urgent run / median of the floor;
- ``urgent_libraries_vs_floor``: median of the libraries floor / median of the floor (the part
  of any urgent ratio that importing the design card's libraries takes, before any work);
- ``urgent_<N>_vs_libraries``: median of the urgent run / median of the libraries floor;
- ``urgent_<N>_peak_rss_vs_arrow``: peak RSS of the ``dags test`` process tree
  (``getrusage(RUSAGE_CHILDREN)`` in a small launcher: its largest process) / the round's
  in-memory Arrow size
  (``nbytes`` of the site table as ``read_round`` returns it).

    make bench   # or: PYTHONPATH=plugins .venv/bin/python bench/urgent.py [--sites 1000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from policies import FLOOR  # noqa: E402
from summary import Figure, record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
URGENT_DAG = str(REPO / "dags" / "urgent_dissemination.py")
CONF = {"country": "NGA", "justification": "benchmark of the urgent path end to end"}

#: The floor DAG with the urgent path's libraries imported in its middle task, used for nothing.
LIBRARIES = '''
import pendulum
from airflow.sdk import dag, task

@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def libraries():
    @task
    def first():
        return 1

    @task
    def second(x):
        import adbc_driver_sqlite.dbapi, aiosmtplib, pandas, paramiko, pyarrow, pyzipper
        import zlib_ng.zlib_ng
        from dissemination.intake.validation import import_great_expectations

        import_great_expectations()
        return x + 1

    @task
    def third(x):
        return x + 1

    third(second(first()))

libraries()
'''


# Runs the command and reports its time and peak RSS. The kernel's accounting of a child's peak
# RSS starts from its parent's RSS at fork (exec keeps the old memory's high-water mark): from
# this process, which holds a round, every child would seem as large; from this launcher, no.
LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2:], stdin=subprocess.DEVNULL)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "seconds": seconds,
               "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, f)
"""


def dags_test(env: dict, log: Path, *args: str) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of one ``airflow dags test`` (its largest process,
    from the kernel's own accounting at exit); a failed run raises with its log's tail."""
    airflow = Path(sys.executable).with_name("airflow")
    report = log.with_suffix(".json")
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-c", LAUNCHER, str(report), str(airflow), "dags", "test",
                        *args], env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    result = json.loads(report.read_text())
    if result["code"]:
        raise RuntimeError(f"`airflow dags test {' '.join(args)}` exited {result['code']}:\n"
                           f"{log.read_text()[-3000:]}")
    return result["seconds"], result["maxrss_kib"] * 1024  # Linux reports KiB


def label(sites: int) -> str | None:
    """The summary's name for the issue's sizes; other sizes (quick runs) are only printed."""
    return {100_000: "100k", 1_000_000: "1m"}.get(sites)


#: Per size label: how the table writes it, and the issue's targets (time against the floor,
#: peak memory against the round in Arrow).
GOALS = {"100k": ("100k", "<= 1.3x", ""), "1m": ("1M", "<= 2x", "<= 3x")}


def urgent_figures(label: str, m: dict) -> dict[str, Figure]:
    """The summary's figures of one size, each with its reference and the issue's target."""
    name = f"urgent_{label}"
    size, time_goal, memory_goal = GOALS[label]
    return {f"{name}_vs_floor": Figure(round(m["urgent"] / m["floor"], 2),
                                       f"urgent run / trivial 3-task DAG (floor), {size} sites",
                                       time_goal),
            f"{name}_vs_libraries": Figure(round(m["urgent"] / m["libraries"], 2),
                                           f"urgent run / libraries floor, {size} sites"),
            f"{name}_libraries_s": Figure(round(m["libraries"], 1),
                                          f"seconds, libraries floor, {size} sites run"),
            f"{name}_s": Figure(round(m["urgent"], 1), f"seconds, urgent run, {size} sites"),
            f"{name}_floor_s": Figure(round(m["floor"], 1), f"seconds, floor, {size} sites run"),
            f"{name}_peak_rss_mb": Figure(round(m["peak"] / 2**20),
                                          f"MiB, urgent run's peak RSS, {size} sites"),
            f"{name}_arrow_mb": Figure(round(m["arrow"] / 2**20),
                                       f"MiB, the {size}-site round in Arrow"),
            f"{name}_peak_rss_vs_arrow": Figure(round(m["peak"] / m["arrow"], 2),
                                                "urgent run's peak RSS / the round in Arrow",
                                                memory_goal)}


def measure(sandbox, floor_dir: Path, sites: int, runs: int, first_round: int) -> dict:
    """``runs`` interleaved floor and urgent runs, each urgent run on a new round of ``sites``."""
    import pyarrow as pa

    from dissemination.devkit.synthetic import generate_round
    from dissemination.intake.reading import read_round
    from dissemination.intake.source import write_round

    ruleset = sandbox.policy.rulesets["NGA"]
    floor_env = {**sandbox.env(), "AIRFLOW__CORE__DAGS_FOLDER": str(floor_dir)}
    urgent_dir = floor_dir.with_name("urgent_dags")  # the real DAG file, alone in its folder
    urgent_dir.mkdir(exist_ok=True)
    urgent_dag = urgent_dir / Path(URGENT_DAG).name
    if not urgent_dag.exists():
        urgent_dag.symlink_to(URGENT_DAG)
    urgent_env = {**sandbox.env(), "AIRFLOW__CORE__DAGS_FOLDER": str(urgent_dir)}
    floors, libraries, urgents, peaks, floor_peaks = [], [], [], [], []
    arrow_bytes = 0
    for number in range(first_round, first_round + runs):
        meta, df = generate_round(ruleset, number, sites, seed=11, status="partial",
                                  collected_at=datetime.now(UTC) - timedelta(hours=6),
                                  collection_days=1)
        write_round(sandbox.survey(), meta, df)
        del df
        seconds, peak = dags_test(floor_env, sandbox.home / "floor.log", "floor",
                                  "--dagfile-path", str(floor_dir / "floor.py"))
        floors.append(seconds)
        floor_peaks.append(peak)
        seconds, _ = dags_test(floor_env, sandbox.home / "libraries.log", "libraries",
                               "--dagfile-path", str(floor_dir / "libraries.py"))
        libraries.append(seconds)
        conf = json.dumps({**CONF, "round_id": meta.round_id})
        seconds, peak = dags_test(urgent_env, sandbox.home / "urgent.log",
                                  "urgent_dissemination", "-c", conf, "--dagfile-path",
                                  str(urgent_dag))
        urgents.append(seconds)
        peaks.append(peak)
        delivered = [r for r in sandbox.ledger().all() if r.round_id == meta.round_id]
        if len(delivered) != 3:  # a run that delivered nothing measured nothing
            raise RuntimeError(f"{meta.round_id}: {len(delivered)} deliveries recorded, "
                               f"expected 3; see {sandbox.home / 'urgent.log'}")
        print(f"  {meta.round_id}: floor {floors[-1]:6.1f} s, libraries {libraries[-1]:6.1f} s, "
              f"urgent {urgents[-1]:6.1f} s, "
              f"peak RSS {peaks[-1] / 2**20:7.0f} MiB", flush=True)
        if not arrow_bytes:
            _, table = read_round(sandbox.survey(), meta.round_id)
            arrow_bytes = pa.Table.from_pandas(table, preserve_index=False).nbytes
            del table
    return {"floor": statistics.median(floors), "libraries": statistics.median(libraries),
            "urgent": statistics.median(urgents),
            "peak": max(peaks), "floor_peak": max(floor_peaks), "arrow": arrow_bytes}


def main() -> None:
    from dissemination.devkit.sandbox import Sandbox

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3, help="runs per size (medians)")
    parser.add_argument("--quick", action="store_true",
                        help="one run each at 1,000,000 sites or more")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-urgent-") as tmp:
        floor_dir = Path(tmp) / "floor_dags"
        floor_dir.mkdir()
        (floor_dir / "floor.py").write_text(FLOOR)
        (floor_dir / "libraries.py").write_text(LIBRARIES)
        with Sandbox(Path(tmp) / "sandbox", REPO / "tests" / "support" / "policy") as sandbox:
            sandbox.init(sites=50)
            figures, first_round = {}, 2
            for sites in args.sites:
                runs = 1 if args.quick and sites >= 1_000_000 else args.runs
                print(f"urgent path, {sites} sites, {runs} run(s):", flush=True)
                m = measure(sandbox, floor_dir, sites, runs, first_round)
                first_round += runs
                if size := label(sites):
                    figures |= urgent_figures(size, m)
                if sites == 100_000:  # the libraries' share, at the size of the tightest target
                    figures["urgent_libraries_vs_floor"] = Figure(
                        round(m["libraries"] / m["floor"], 2),
                        "libraries floor (imports only, no work) / floor, 100k sites")
                print(f"{sites} sites: urgent {m['urgent']:.1f} s vs floor {m['floor']:.1f} s "
                      f"({m['urgent'] / m['floor']:.2f}x), libraries floor {m['libraries']:.1f} s "
                      f"({m['libraries'] / m['floor']:.2f}x the floor; urgent "
                      f"{m['urgent'] / m['libraries']:.2f}x it); "
                      f"peak RSS {m['peak'] / 2**20:.0f} MiB "
                      f"(floor {m['floor_peak'] / 2**20:.0f} MiB) vs the round in Arrow "
                      f"{m['arrow'] / 2**20:.0f} MiB ({m['peak'] / m['arrow']:.2f}x)", flush=True)
    record(**figures)


if __name__ == "__main__":
    main()
