"""The figures of docs/benchmarks.md are generated from the committed summary (issue #31): a hand
edit of the table, or a summary committed without its table, fails here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_table.py"
sys.path.insert(0, str(REPO / "scripts"))
import bench_table  # noqa: E402

SYNTHETIC = {
    "b_ratio": {"bench": "beta", "value": 1.46, "about": "this / a trivial DAG", "goal": "<= 2x"},
    "b_bytes": {"bench": "beta", "value": 1620, "about": "bytes, largest XCom", "goal": ""},
    "a_ms": {"bench": "alpha", "value": 82.5, "about": "ms | per task", "goal": "<= 300 ms"},
}


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the doc's generated region, split into stripped cells."""
    region = text.split(bench_table.START)[1].split(bench_table.END)[0]
    lines = [line for line in region.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_the_committed_table_is_the_committed_summary_rendered():
    summary = json.loads(bench_table.SUMMARY.read_text(encoding="utf-8"))
    doc = bench_table.DOC.read_text(encoding="utf-8")
    assert bench_table.replace_region(doc, bench_table.render(summary)) == doc
    assert len(table_rows(doc)) == len(summary)
    assert run("--check").returncode == 0


def test_a_hand_edit_of_the_table_fails_the_check(tmp_path):
    doc = tmp_path / "benchmarks.md"
    rendered = bench_table.replace_region(
        f"# B\n\n{bench_table.START}\n{bench_table.END}\n\nAfter.\n",
        bench_table.render(SYNTHETIC))
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(SYNTHETIC))
    doc.write_text(rendered.replace("1.46", "1.2"))
    result = run(str(summary), "--doc", str(doc), "--check")
    assert result.returncode == 1
    assert "differs" in result.stdout
    assert "1.2" in doc.read_text()  # --check changes nothing
    assert run(str(summary), "--doc", str(doc)).returncode == 0
    assert doc.read_text() == rendered


def test_rows_group_by_benchmark_in_recorded_order_with_reference_and_goal():
    text = bench_table.replace_region(f"{bench_table.START}\n{bench_table.END}\n",
                                      bench_table.render(SYNTHETIC))
    rows = table_rows(text)
    assert [row[1] for row in rows] == ["`a_ms`", "`b_ratio`", "`b_bytes`"]
    assert rows[0] == ["`bench/alpha.py`", "`a_ms`", "82.5", "ms \\| per task", "<= 300 ms"]
    assert rows[1][2:] == ["1.46", "this / a trivial DAG", "<= 2x"]
    assert rows[2][2:4] == ["1,620", "bytes, largest XCom"]
    assert rows[2][4] == ""


def test_a_description_over_the_cell_limit_is_refused():
    long = {"k": {"bench": "b", "value": 1, "about": " ".join(["word"] * 26), "goal": ""}}
    with pytest.raises(ValueError, match="26 words"):
        bench_table.render(long)


def test_a_doc_without_markers_is_refused():
    with pytest.raises(ValueError, match="bench-table:start"):
        bench_table.replace_region("# no markers\n", "| t |\n")
