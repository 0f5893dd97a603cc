"""DAG parse time at 3 and at 1,000 agreements, against references parsed in the same run.

"Parse" is what the dag-processor does per file: import it into a DagBag and serialise its DAGs.
Each DAG file is compared with a trivial DAG of the same shape, written plainly: as many tasks
(a chain of one-line TaskFlow tasks) and the same trigger form fields as plain ``Param``s (no
pick list, Airflow's default schema dialect). That reference is what Airflow itself costs for
such a DAG; the ratio is what this project adds (policy files read at parse time, the pick list,
imports), which must stay small (issue 10: within 2x of the reference at 1,000 agreements) and
flat as the policy grows (the urgent form lists agreement ids: ``parse_1000_vs_3``). The one-task
DAG of Airflow's own examples is printed for scale.

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
from summary import Figure, record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AGREEMENTS = 1000
#: Airflow's smallest DAG, printed for scale.
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


def shaped_reference(path: Path, folder: Path) -> Path:
    """A trivial DAG with as many tasks as the DAG in ``path`` and its form's fields written
    plainly (the same types and defaults; no dialect, no pick list)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions._internal.types import NOTSET

    (dag,) = DagBag(dag_folder=str(path)).dags.values()
    fields = {}
    for name in dag.params:
        param = dag.params.get_param(name)
        schema = {k: v for k, v in param.schema.items() if k not in ("$schema", "examples")}
        default = "" if param.value is NOTSET else f"{param.value!r}, "
        fields[name] = f"Param({default}**{schema!r})"
    tasks = len(dag.tasks)
    body = "\n".join(f"    @task\n    def t{i}(x=None):\n        return 1\n" for i in range(tasks))
    chain = "t0()" if tasks == 1 else "".join(f"t{i}(" for i in reversed(range(tasks))) + \
        ")" * tasks
    ref = folder / f"reference_{path.stem}.py"
    ref.write_text(f"""
import pendulum
from airflow.sdk import Param, dag, task

@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False,
     params={{{", ".join(f"{k!r}: {v}" for k, v in fields.items())}}})
def reference_{path.stem}():
{body}
    {chain}

reference_{path.stem}()
""")
    return ref


def parse_medians(include: Path, files: list[Path], repeat: int = 7) -> dict[str, float]:
    """Median parse seconds of every file, with the policy in ``include`` (read at parse time);
    interleaved, so that a busy machine slows all alike."""
    os.environ["DISSEMINATION_INCLUDE_DIR"] = str(include)
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
    dags = sorted((REPO / "dags").glob("*.py"))
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one_task_dag.py"
        one.write_text(REFERENCE)
        parse(one)  # warm: airflow's own imports are paid once
        os.environ["DISSEMINATION_INCLUDE_DIR"] = str(REPO / "tests" / "support" / "policy")
        refs = {d.name: shaped_reference(d, Path(tmp)) for d in dags}
        files = [one, *dags, *refs.values()]
        small = parse_medians(REPO / "tests" / "support" / "policy", files)
        large = parse_medians(build_policy(Path(tmp), AGREEMENTS), files)
    ratios = {3: {}, AGREEMENTS: {}}
    print(f"{'DAG file':26s} {'3 agreements':>30s} {f'{AGREEMENTS} agreements':>30s}")
    print(f"{'':26s} {'ms':>7s} {'reference':>10s} {'ratio':>6s}   {'ms':>7s} {'reference':>10s} "
          f"{'ratio':>6s}")
    for d in dags:
        row = f"{d.name:26s}"
        for count, medians in ((3, small), (AGREEMENTS, large)):
            mine, ref = medians[d.name], medians[refs[d.name].name]
            ratios[count][d.name] = mine / ref
            row += f" {mine * 1000:7.1f} {ref * 1000:7.1f} ms {mine / ref:5.2f}x  "
        print(row)
    print(f"for scale, a one-task DAG: {small[one.name] * 1000:.1f} ms (the urgent DAG: "
          f"{small['urgent_dissemination.py'] / small[one.name]:.1f}x it at 3 agreements, "
          f"{large['urgent_dissemination.py'] / large[one.name]:.1f}x at {AGREEMENTS})")
    heavy = [m for m in ("pandas", "great_expectations", "paramiko", "pyzipper")
             if m in sys.modules]
    print(f"heavy modules imported by parsing: {heavy or 'none'}")
    worst = {count: max(r.values()) for count, r in ratios.items()}
    print(f"worst ratio to its reference: {worst[3]:.2f}x at 3 agreements, "
          f"{worst[AGREEMENTS]:.2f}x at {AGREEMENTS} (target: 2x)")
    # Flat: each file's time at 1,000 against 3, over the same ratio for its reference (the
    # machine's drift between the two rounds cancels out).
    growth = max((large[d.name] / small[d.name]) / (large[refs[d.name].name]
                                                    / small[refs[d.name].name]) for d in dags)
    print(f"growth from 3 to {AGREEMENTS} agreements (worst file, against its reference's): "
          f"{growth:.2f}x")
    urgent = large["urgent_dissemination.py"]
    record(parse_3_vs_reference=Figure(round(worst[3], 2),
                                       "worst DAG file / trivial DAG of its shape, 3 agreements"),
           parse_1000_vs_reference=Figure(round(worst[AGREEMENTS], 2),
                                          "worst DAG file / trivial DAG of its shape, "
                                          "1,000 agreements", "<= 2x"),
           parse_1000_vs_3=Figure(round(growth, 2),
                                  "worst file's growth from 3 to 1,000 agreements, "
                                  "over its reference's", "flat"),
           parse_urgent_ms=Figure(round(urgent * 1000, 1),
                                  "ms, the urgent DAG file at 1,000 agreements"),
           parse_urgent_vs_one_task=Figure(round(urgent / large[one.name], 2),
                                           "urgent DAG file / Airflow's one-task example DAG"))


if __name__ == "__main__":
    main()
