"""DAG parse time, against a reference measured in the same run, at 3 and at 1,000 agreements.

Reference: a trivial one-task TaskFlow DAG file parsed by the same DagBag in the same process.
"Parse" is what the dag-processor does per file: import it into a DagBag and serialise its DAGs.
The ratio says how much this project's DAG files cost beyond Airflow's own floor; the rule is that
they stay within a few milliseconds of it (no pandas, GX or SFTP imports at top level), and that
it stays flat as the policy grows (issue 10: within 2x of the reference at 1,000 agreements; the
urgent trigger form lists the agreements at parse time).

    make bench   # or: PYTHONPATH=plugins .venv/bin/python bench/dag_parse.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from policies import build_policy  # noqa: E402
from summary import record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AGREEMENTS = 1000
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


def parse(path: Path) -> None:
    """Import the file into a DagBag and serialise its DAGs, as the dag-processor does."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=str(path))
    assert not bag.import_errors, bag.import_errors
    for dag in bag.dags.values():
        DagSerialization.to_dict(dag)


def parse_medians(include: Path, reference: Path, repeat: int = 7) -> dict[str, float]:
    """Median parse seconds of the reference and of every DAG file of dags/, with the policy in
    ``include`` (read at parse time); interleaved, so that a busy machine slows all alike."""
    os.environ["DISSEMINATION_INCLUDE_DIR"] = str(include)
    files = [reference, *sorted((REPO / "dags").glob("*.py"))]
    times: dict[str, list[float]] = {f.name: [] for f in files}
    for _ in range(repeat):
        for f in files:
            start = time.perf_counter()
            parse(f)
            times[f.name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-"))
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference_dag.py"
        ref.write_text(REFERENCE)
        parse(ref)  # warm: airflow's own imports are paid once
        small = parse_medians(REPO / "tests" / "policy", ref)
        large = parse_medians(build_policy(Path(tmp), AGREEMENTS), ref)
    ratios = {}
    for count, medians in ((3, small), (AGREEMENTS, large)):
        reference = medians.pop(ref.name)
        ratios[count] = {name: seconds / reference for name, seconds in medians.items()}
        print(f"{count} agreements: reference one-task DAG {reference * 1000:6.1f} ms "
              "(medians of 7, interleaved)")
    print(f"{'DAG file':32s} {'3 agreements':>22s} {f'{AGREEMENTS} agreements':>22s}")
    for name in small:
        print(f"{name:32s} {small[name] * 1000:7.1f} ms {ratios[3][name]:5.2f}x   "
              f"{large[name] * 1000:7.1f} ms {ratios[AGREEMENTS][name]:5.2f}x")
    heavy = [m for m in ("pandas", "great_expectations", "paramiko", "pyzipper")
             if m in sys.modules]
    print(f"heavy modules imported by parsing: {heavy or 'none'}")
    worst = {count: max(r.values()) for count, r in ratios.items()}
    print(f"worst ratio: {worst[3]:.2f}x at 3 agreements, {worst[AGREEMENTS]:.2f}x at "
          f"{AGREEMENTS} (target: 2x)")
    growth = max(large[name] / small[name] for name in small)  # flat means 1x
    print(f"growth from 3 to {AGREEMENTS} agreements (worst file): {growth:.2f}x")
    record(parse_3_vs_reference=round(worst[3], 2),
           parse_1000_vs_reference=round(worst[AGREEMENTS], 2),
           parse_1000_vs_3=round(growth, 2))


if __name__ == "__main__":
    main()
