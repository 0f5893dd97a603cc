"""DAG parse time, against a reference measured in the same run.

Reference: a trivial one-task TaskFlow DAG file parsed by the same DagBag in the same process.
The ratio says how much this project's DAG files cost beyond Airflow's own floor; the rule is that
they stay within a few milliseconds of it (no pandas, GX or SFTP imports at top level).

    make bench   # or: PYTHONPATH=plugins .venv/bin/python bench/dag_parse.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = '''
import pendulum
from airflow.sdk import dag, task

@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False, tags=["ref"])
def reference():
    @task
    def one():
        return 1
    one()

reference()
'''


def parse_seconds(folder: Path, repeat: int) -> float:
    from airflow.dag_processing.dagbag import DagBag

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        bag = DagBag(dag_folder=str(folder))
        times.append(time.perf_counter() - start)
        assert not bag.import_errors, bag.import_errors
    return statistics.median(times)


def main() -> None:
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-"))
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference_dag.py"
        ref.write_text(REFERENCE)
        parse_seconds(Path(tmp), 1)  # warm: airflow's own imports are paid once
        reference = parse_seconds(Path(tmp), 7)
    ours = {}
    for dag_file in sorted((REPO / "dags").glob("*.py")):
        ours[dag_file.name] = parse_seconds(dag_file, 7)
    print(f"reference one-task DAG: {reference * 1000:7.1f} ms (median of 7)")
    for name, seconds in ours.items():
        print(f"{name:32s} {seconds * 1000:7.1f} ms  ratio {seconds / reference:5.2f}x")
    heavy = [m for m in ("pandas", "great_expectations", "paramiko", "pyzipper")
             if m in sys.modules]
    print(f"heavy modules imported by parsing: {heavy or 'none'}")


if __name__ == "__main__":
    main()
