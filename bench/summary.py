"""``bench/out/summary.json``: every benchmark adds its keys, so runs can be compared by anyone;
and the one way benchmarks time things (the median of a few runs)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "summary.json"


def record(**figures: float) -> None:
    """Merge ``figures`` into the summary (other benchmarks' keys are kept)."""
    OUT.parent.mkdir(exist_ok=True)
    summary = json.loads(OUT.read_text()) if OUT.exists() else {}
    summary.update(figures)
    OUT.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def median_seconds(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
