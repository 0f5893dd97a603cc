"""The house limits of the README and docs/ (issue #31): the repository keeps them, and the
checker names a paragraph that breaks them by file and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "doc_limits.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_the_repository_keeps_the_limits():
    result = run()
    assert result.returncode == 0, result.stdout


def test_a_90_word_paragraph_is_named_by_line(tmp_path):
    doc = tmp_path / "long.md"
    # Short sentences, so only the paragraph limit is broken.
    paragraph = " ".join(["Nine words make up each of these short sentences."] * 10)
    doc.write_text(f"# A page\n\nA short first paragraph.\n\n{paragraph}\n", encoding="utf-8")
    result = run(str(doc))
    assert result.returncode == 1
    assert f"{doc}:5: paragraph of 90 words, over 80" in result.stdout
