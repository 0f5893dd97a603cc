"""What benchmarks share: a global deployment's policy (tests/support/policy grown to ``count``
agreements of ``count`` organisations, each with its focal points, optionally spread over many
countries) and the floor DAG end-to-end runs compare with."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATE_COUNTRY = "NGA"


def build_policy(folder: Path, count: int) -> Path:
    """tests/support/policy with ``count`` agreements (copies of the shipped ones, new ids)."""
    from dissemination.devkit.templates import copy_agreement

    include = folder / "include"
    shutil.copytree(REPO / "tests" / "support" / "policy", include)
    templates = sorted(path.stem for path in (include / "agreements").glob("*.yaml"))
    for i in range(count - len(templates)):
        template = templates[i % len(templates)]
        copy_agreement(include, template, f"{template}-{i:04d}", f"org-{i:04d}",
                       f"Partner {i:04d}")
    return include


def country_codes(count: int) -> list[str]:
    """Made-up ISO3 codes from the user-assigned range: XAA, XAB, ..."""
    return [f"X{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(count)]


def spread_policy(folder: Path, agreements: int, countries: int) -> Path:
    """``build_policy``'s agreements spread over ``countries`` copies of NGA (rules and DTM focal
    points); each agreement covers one country with NGA's tiers, and its packages land in its
    own remote folders."""
    include = build_policy(folder, agreements)
    rules, dtm = include / "rules", include / "focal_points" / "dtm"
    template = yaml.safe_load((rules / f"{TEMPLATE_COUNTRY}.yaml").read_text())
    dtm_template = yaml.safe_load((dtm / f"{TEMPLATE_COUNTRY}.yaml").read_text())
    for path in [*rules.glob("*.yaml"), *dtm.glob("*.yaml")]:
        if path.stem != "default":
            path.unlink()
    codes = country_codes(countries)
    for code in codes:
        (rules / f"{code}.yaml").write_text(yaml.safe_dump({**template, "country": code}))
        (dtm / f"{code}.yaml").write_text(yaml.safe_dump({**dtm_template, "country": code}))
    # Agreements of other countries take the tiers of an NGA one of the same organisation kind.
    tiers = {}
    for path in sorted((include / "agreements").glob("*.yaml")):
        agreement = yaml.safe_load(path.read_text())
        if agreement["countries"] == [TEMPLATE_COUNTRY]:
            tiers.setdefault(agreement["id"].split("-")[0], agreement)
    for i, path in enumerate(sorted((include / "agreements").glob("*.yaml"))):
        agreement = yaml.safe_load(path.read_text())
        if agreement["countries"] != [TEMPLATE_COUNTRY]:
            like = tiers[agreement["id"].split("-")[0]]
            agreement.update(tiers=like["tiers"], max_classification=like["max_classification"])
        agreement["countries"] = [codes[i % len(codes)]]
        agreement["destination"]["remote_dir"] = f"{agreement['id']}/incoming"
        path.write_text(yaml.safe_dump(agreement))
        people_file = include / "focal_points" / f"{agreement['focal_points']}.yaml"
        people = yaml.safe_load(people_file.read_text())
        for person in [people["primary"], people["secondary"], *people.get("field", [])]:
            if person.get("destination"):
                leaf = person["destination"]["remote_dir"].split("/", 1)[1]
                person["destination"]["remote_dir"] = f"{agreement['id']}/{leaf}"
        people_file.write_text(yaml.safe_dump(people))
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
