#!/usr/bin/env python3
"""Render the table of figures in docs/benchmarks.md from a benchmark summary (issue #31).

The docs' figures are generated, never typed: each benchmark records its figures with what they
are against and their goal (``bench/summary.py``), ``make bench`` copies the summary to
``bench/results/summary.json`` (committed, so the table can be rebuilt by anyone) and this
script replaces the part of the doc between its two markers. ``--check`` changes nothing and
exits 1 when the doc's table is not what the summary renders (a hand edit, or a summary
committed without its table).

Usage: python3 scripts/bench_table.py [SUMMARY] [--check] [--doc FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from doc_limits import CELL_WORDS, words  # noqa: E402

SUMMARY = ROOT / "bench" / "results" / "summary.json"
DOC = ROOT / "docs" / "benchmarks.md"
START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"
HEADER = ("benchmark", "figure", "value", "what it is (a ratio: against what)", "goal")


def _value(value: float) -> str:
    """Integers with thousands separators; other numbers as the benchmark rounded them."""
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _cell(text: str) -> str:
    if words(text) > CELL_WORDS:
        raise ValueError(f"table cell of {words(text)} words, over {CELL_WORDS}: {text!r}")
    return text.replace("|", "\\|")


def rows(summary: dict) -> list[tuple[str, ...]]:
    """One row per figure: benchmarks by name, each one's figures in the order it records them."""
    ordered = sorted(summary.items(), key=lambda item: item[1]["bench"])  # stable: keeps order
    return [tuple(_cell(text) for text in (f"`bench/{figure['bench']}.py`", f"`{key}`",
                                           _value(figure["value"]), figure["about"],
                                           figure["goal"]))
            for key, figure in ordered]


def render(summary: dict) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(summary)]
    return "\n".join(lines) + "\n"


def replace_region(text: str, table: str) -> str:
    """``text`` with what lies between the markers replaced by ``table``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the doc needs {START} then {END}, each on a line of its own")
    return text[:start + len(START)] + "\n" + table + text[end:]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", nargs="?", type=Path, default=SUMMARY)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the doc's table differs from the summary's rendering")
    args = parser.parse_args(argv)
    text = args.doc.read_text(encoding="utf-8")
    wanted = replace_region(text, render(json.loads(args.summary.read_text(encoding="utf-8"))))
    if wanted == text:
        return 0
    if args.check:
        print(f"{args.doc}: the table differs from {args.summary}'s rendering; run "
              "scripts/bench_table.py (never edit the table by hand)")
        return 1
    args.doc.write_text(wanted, encoding="utf-8")
    print(f"{args.doc}: table rendered from {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
