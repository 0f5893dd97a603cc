"""Sensitivity engine throughput on a large round, against references measured in the same run.

The round is first conformed to its contract (every value checked and normalised, as every
pull does), then classified once (``classify_round`` + ``active_relational``), then each agreement's
table is built (``select_for_agreement`` + ``build_content``: projection, aggregation, redaction,
small-cell and secondary suppression), and all of them as one organisation's (joint
suppression). References: reading the same round back from Parquet
(the physical floor of touching the data once) and a plain pandas projection of the same columns.

    PYTHONPATH=plugins .venv/bin/python bench/engine.py [--sites 200000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from dissemination.classification import Urgency
from dissemination.classify.sensitivity import (
    active_relational,
    classify_round,
    select_for_agreement,
)
from dissemination.devkit.synthetic import generate_round
from dissemination.disclosure import build_content, build_contents
from dissemination.intake.contract import conform
from dissemination.policy import load_policy

REPO = Path(__file__).resolve().parents[1]


def timed(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=200_000)
    args = parser.parse_args()
    policy = load_policy(REPO / "include")
    ruleset = policy.rulesets["NGA"]
    _, df = generate_round(ruleset, 1, args.sites, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "round.parquet"
        df.to_parquet(path)
        t_read, df = timed(lambda: pd.read_parquet(path, dtype_backend="pyarrow"))
    t_conform, conformed = timed(lambda: conform(df, ruleset, first_row=1))
    assert not conformed.violations, conformed.violations[:3]
    df = conformed.frame
    t_classify, (base, active) = timed(
        lambda: (classify_round(df.columns, ruleset), active_relational(df, ruleset)))
    print(f"round: {args.sites} sites x {df.shape[1]} columns")
    print(f"reference read_parquet:        {t_read * 1000:8.1f} ms")
    print(f"conform (every value checked): {t_conform * 1000:8.1f} ms  "
          f"ratio {t_conform / t_read:5.2f}x read")
    print(f"classify once (all partners):  {t_classify * 1000:8.1f} ms  "
          f"ratio {t_classify / t_read:5.2f}x read")
    selections = []
    for agreement in sorted(policy.agreements.values(), key=lambda a: a.id):
        for urgency in Urgency:
            if "NGA" not in agreement.countries:
                continue
            if agreement.tiers.get(urgency) is None:
                continue
            selection = select_for_agreement(base, ruleset, agreement, urgency, active=active)
            t_proj, _ = timed(lambda s=selection: df[s.columns].copy())
            t_build, content = timed(lambda s=selection: build_content(df, s, ruleset))
            print(f"{agreement.id:24s} {urgency.value:6s} {selection.level:6s} "
                  f"{t_build * 1000:8.1f} ms  ratio {t_build / t_read:5.2f}x read, "
                  f"{t_build / t_proj:6.1f}x projection; "
                  f"suppressed {sum(content.suppressed.values())} cells")
            selections.append(selection)
    # The worst case of the joint suppression: every NGA table above held by one organisation
    # (site and area levels of one round, linked by their sums).
    t_joint, contents = timed(lambda: build_contents(df, [(s, None) for s in selections],
                                                     ruleset), repeat=1)
    print(f"joint suppression, {len(selections)} tables of one organisation: "
          f"{t_joint * 1000:8.1f} ms  ratio {t_joint / t_read:5.2f}x read; suppressed "
          f"{sum(sum(c.suppressed.values()) for c in contents)} cells")


if __name__ == "__main__":
    main()
