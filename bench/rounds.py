"""Joint protection of a round judged with the tables its recipient holds of earlier rounds.

Rounds are linked (``runs.packaging.linked_rounds``): a round's packages are protected with the
tables the organisation holds of its neighbouring rounds, as ``disclosure.Delivered``. This
measures what each more round held costs, to choose ``ROUND_HORIZON``. One organisation
receives each round per site (small counts suppressed) and per state; round k+1 is round k
with a share (``--churn``) of its counts changed, the rest persisting as sites' values do.
Each earlier round is protected with those before it, as it was delivered; the last is timed.

    PYTHONPATH=plugins .venv/bin/python bench/rounds.py [--sites 2000] [--held 0 1 2 4 8]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from dissemination.classification import Urgency
from dissemination.classify.sensitivity import (
    active_relational,
    classify_round,
    select_for_agreement,
)
from dissemination.devkit.synthetic import generate_round
from dissemination.disclosure.engine import Delivered, blanks, build_contents
from dissemination.intake.contract import conform
from dissemination.policy import load_policy

REPO = Path(__file__).resolve().parents[1]
COUNTS = ["unaccompanied_children", "separated_children", "idp_female", "idp_male"]


def _policy(folder: Path):
    """The tests' policy, unicef-nga per site (no exact counts) and per state."""
    include = folder / "include"
    shutil.copytree(REPO / "tests" / "support" / "policy", include)
    path = include / "agreements" / "unicef-nga.yaml"
    agreement = yaml.safe_load(path.read_text())
    agreement["tiers"]["medium"]["indicators"] = [
        "round_id", "site_id", "admin1_pcode", "admin2_pcode", *COUNTS[:2]]
    agreement["tiers"]["medium"].pop("exact_counts", None)
    agreement["tiers"]["low"] = {"schedule": "monthly", "aggregate_to": "admin1",
                                 "indicators": ["round_id", "admin1_pcode", "admin1_name",
                                                "idp_individuals", *COUNTS]}
    path.write_text(yaml.safe_dump(agreement))
    return load_policy(include)


def _rounds(ruleset, sites: int, count: int, churn: float) -> list[pd.DataFrame]:
    _, first = generate_round(ruleset, 1, sites, seed=1, status="cleaned")
    rounds = [conform(first, ruleset, first_row=1).frame]
    rng = np.random.default_rng(0)
    for k in range(2, count + 1):
        after = rounds[-1].copy()
        after["round_id"] = f"NGA-R{k:03d}-cleaned"
        for column in COUNTS:
            values = after[column].to_numpy(dtype="int64", copy=True)
            changed = rng.random(sites) < churn
            values[changed] = rng.integers(0, 12, int(changed.sum()))
            after[column] = pd.array(values, dtype=rounds[0][column].dtype)
        after["idp_individuals"] = after["idp_female"] + after["idp_male"]
        rounds.append(after)
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=2000)
    parser.add_argument("--held", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    parser.add_argument("--churn", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policy = _policy(Path(tmp))
    ruleset, agreement = policy.rulesets["NGA"], policy.agreements["unicef-nga"]

    def parts(df):
        base, active = classify_round(df.columns, ruleset), active_relational(df, ruleset)
        return [(select_for_agreement(base, ruleset, agreement, u, active=active), None)
                for u in (Urgency.MEDIUM, Urgency.LOW)]

    rounds = _rounds(ruleset, args.sites, max(args.held) + 1, args.churn)
    held: list[Delivered] = []
    for k, df in enumerate(rounds):
        if k in args.held:
            start = time.perf_counter()
            contents = build_contents(df, parts(df), ruleset, held)
            took = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{args.sites} sites, {k} earlier round(s) held ({len(held)} tables): "
                  f"{took:8.2f} s; cells hidden "
                  f"{sum(sum(c.suppressed.values()) for c in contents)}; peak RSS {peak:.0f} MB")
        else:
            contents = build_contents(df, parts(df), ruleset, held)  # as it went out
        held += [Delivered(df, s, rows, blanks(c.frame))
                 for c, (s, rows) in zip(contents, parts(df), strict=True)]


if __name__ == "__main__":
    main()
