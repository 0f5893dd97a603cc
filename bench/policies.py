"""What benchmarks share: a global deployment's policy (tests/policy grown to ``count`` agreements of
``count`` organisations, each with its focal points) and the floor DAG end-to-end runs compare with."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_policy(folder: Path, count: int) -> Path:
    """tests/policy with ``count`` agreements (copies of the shipped ones, new ids)."""
    from dissemination.devkit.templates import copy_agreement

    include = folder / "include"
    shutil.copytree(REPO / "tests" / "policy", include)
    templates = sorted(path.stem for path in (include / "agreements").glob("*.yaml"))
    for i in range(count - len(templates)):
        template = templates[i % len(templates)]
        copy_agreement(include, template, f"{template}-{i:04d}", f"org-{i:04d}",
                       f"Partner {i:04d}")
    return include


#: The floor of end-to-end benchmarks: a trivial 3-task DAG run the same way in the same run.
FLOOR = '''
import pendulum
from airflow.sdk import dag, task

@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def floor():
    @task
    def first():
        return 1

    @task
    def second(x):
        return x + 1

    @task
    def third(x):
        return x + 1

    third(second(first()))

floor()
'''
