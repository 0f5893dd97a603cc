"""``bench/out/summary.json``: every benchmark adds its figures, so runs can be compared by anyone;
and the one way benchmarks time things (the median of a few runs).

Each figure is stored with what it measures and the goal the benchmark states, so the table of
docs/benchmarks.md is rendered from the JSON alone (``scripts/bench_table.py``) and a figure
cannot drift from its description.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "summary.json"


@dataclass(frozen=True)
class Figure:
    """One figure, what it is and its goal.

    ``about`` names the reference a ratio is against (or the unit); ``goal`` is the target the
    benchmark states, empty where it states none. Both are table cells: a few words each.
    """

    value: float
    about: str
    goal: str = ""


def record(**figures: Figure) -> None:
    """Merge ``figures`` into the summary (other benchmarks' keys are kept).

    The benchmark is named after the script that runs (``bench/<name>.py``), so a figure's row
    says where to re-measure it.
    """
    bench = Path(sys.argv[0]).stem
    OUT.parent.mkdir(exist_ok=True)
    summary = json.loads(OUT.read_text()) if OUT.exists() else {}
    # Bare numbers are an older summary's: no description to render, so they are dropped.
    summary = {key: figure for key, figure in summary.items() if isinstance(figure, dict)}
    summary.update({key: {"bench": bench, "value": f.value, "about": f.about, "goal": f.goal}
                    for key, f in figures.items()})
    # In the order benchmarks record them (a re-run keeps its keys' places), so the table reads
    # as each benchmark lists its figures.
    OUT.write_text(json.dumps(summary, indent=2) + "\n")


def median_seconds(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
