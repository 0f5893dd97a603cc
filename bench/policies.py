"""What benchmarks share: a global deployment's policy (tests/policy grown to ``count`` agreements of
``count`` organisations, each with its focal points) and the floor DAG end-to-end runs compare with."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def build_policy(folder: Path, count: int) -> Path:
    """tests/policy with ``count`` agreements (copies of the shipped ones, new ids)."""
    include = folder / "include"
    shutil.copytree(REPO / "tests" / "policy", include)
    templates = sorted((include / "agreements").glob("*.yaml"))
    for i in range(count - len(templates)):
        template = templates[i % len(templates)]
        agreement = yaml.safe_load(template.read_text())
        people = yaml.safe_load((include / "focal_points" / f"{agreement['focal_points']}.yaml")
                                .read_text())
        ident = f"{agreement['id']}-{i:04d}"
        org = f"org-{i:04d}"
        agreement.update(id=ident, organisation=org, focal_points=ident)
        agreement["password"]["variable"] = f"package_password_{ident.replace('-', '_')}"
        people.update(id=ident, organisation=org) if "id" in people else people.update(
            organisation=org)
        (include / "organisations" / f"{org}.yaml").write_text(
            yaml.safe_dump({"id": org, "name": f"Partner {i:04d}"}))
        (include / "agreements" / f"{ident}.yaml").write_text(yaml.safe_dump(agreement))
        (include / "focal_points" / f"{ident}.yaml").write_text(yaml.safe_dump(people))
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
