#!/usr/bin/env python3
"""The house limits of the README and docs/ (issue #31), checked.

README.md: at most 200 lines and 2,000 words. README.md and every docs/**/*.md: a paragraph at
most 80 words, a sentence at most 35, a table cell at most 25, and every relative link resolves
to an existing file. Fenced code blocks and headings are skipped; a list item is a paragraph of
its own; inline code counts as words. A link to a heading of a Markdown file must name one.
Prints `file:line: ...` per offence and exits 1 if any.

Usage: python3 scripts/doc_limits.py [FILE_OR_DIR ...]   (default: README.md and docs/)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README_LINES = 200
README_WORDS = 2000
PARAGRAPH_WORDS = 80
SENTENCE_WORDS = 35
CELL_WORDS = 25

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}(\s|$)")
_LIST_ITEM = re.compile(r"^\s*([-*+]|\d+[.)])\s+")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_ABBREVIATIONS = re.compile(r"\b(e\.g|i\.e|etc|vs|cf|approx|incl|No|Dr|Mr|Ms|St)\.", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?][\"')\]*_]*(?=\s|$)")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def words(text: str) -> int:
    return len(text.split())


def _mask_code(text: str) -> str:
    """Inline code stays words, but its periods and pipes no longer end sentences or cells."""
    return _CODE_SPAN.sub(lambda m: re.sub(r"[.!?|]", "_", m.group(0)), text)


def _cells(line: str) -> list[str]:
    masked = _mask_code(line).replace("\\|", "__")
    parts = masked.strip().strip("|").split("|")
    return parts


def sentences(text: str) -> list[str]:
    masked = _ABBREVIATIONS.sub(lambda m: m.group(0).replace(".", "_"), _mask_code(text))
    masked = re.sub(r"(\d)\.(\d)", r"\1_\2", masked)
    return [s for s in _SENTENCE_END.split(masked) if s.strip()]


def _line_kind(line: str) -> str:
    """What a line outside code is: a paragraph break, a table row, a list item or text.

    Headings end a paragraph like a blank line, so they are breaks, never counted as prose.
    """
    if not line.strip() or _HEADING.match(line):
        return "break"
    if line.lstrip().startswith("|"):
        return "table"
    if _LIST_ITEM.match(line):
        return "item"
    return "text"


def blocks(lines: list[str]):
    """Yield (kind, first line number, text) for paragraphs and table cells, code skipped."""
    in_fence = False
    para: list[str] = []
    start = 0
    for number, line in enumerate(lines, 1):
        kind = "fence" if _FENCE.match(line) else ("code" if in_fence else _line_kind(line))
        if kind == "code":
            continue
        if kind != "text" and para:  # only running text continues a paragraph
            yield ("paragraph", start, " ".join(para))
            para = []
        if kind == "fence":
            in_fence = not in_fence
        elif kind == "table" and not _TABLE_SEP.match(line):
            yield from (("cell", number, cell) for cell in _cells(line))
        elif kind in ("item", "text"):
            start = number if not para else start
            para.append(_LIST_ITEM.sub("", line, count=1) if kind == "item"
                        else line.strip().lstrip(">").strip())
    if para:
        yield ("paragraph", start, " ".join(para))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped, - for space."""
    found: set[str] = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence or not _HEADING.match(line):
            continue
        text = line.strip().lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def links(path: Path, lines: list[str]):
    in_fence = False
    for number, line in enumerate(lines, 1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
                continue
            file, _, fragment = target.partition("#")
            if not file:
                continue
            resolved = (path.parent / file) if not file.startswith("/") else ROOT / file[1:]
            if not resolved.exists():
                yield number, target, "no such file"
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                yield number, target, "no such heading"


def check(path: Path, readme: bool = False) -> list[str]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    try:
        name = str(path.resolve().relative_to(ROOT))
    except ValueError:
        name = str(path)
    problems = []
    if readme:
        if len(lines) > README_LINES:
            problems.append(f"{name}:{len(lines)}: {len(lines)} lines, over {README_LINES}")
        if (count := words(text)) > README_WORDS:
            problems.append(f"{name}:1: {count} words, over {README_WORDS}")
    for kind, number, block in blocks(lines):
        count = words(block)
        if kind == "cell":
            if count > CELL_WORDS:
                problems.append(f"{name}:{number}: table cell of {count} words, over {CELL_WORDS}")
            continue
        if count > PARAGRAPH_WORDS:
            problems.append(f"{name}:{number}: paragraph of {count} words, over {PARAGRAPH_WORDS}")
        for sentence in sentences(block):
            if (n := words(sentence)) > SENTENCE_WORDS:
                head = " ".join(sentence.split()[:6])
                problems.append(
                    f"{name}:{number}: sentence of {n} words, over {SENTENCE_WORDS} ({head} ...)"
                )
    for number, target, why in links(path, lines):
        problems.append(f"{name}:{number}: link to {target}: {why}")
    return problems


def targets(args: list[str]) -> list[tuple[Path, bool]]:
    if not args:
        found = [(ROOT / "README.md", True)]
        found += [(p, False) for p in sorted((ROOT / "docs").rglob("*.md"))]
        return found
    found = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found += [(p, False) for p in sorted(path.rglob("*.md"))]
        else:
            found.append((path, path.name == "README.md"))
    return found


def main(argv: list[str]) -> int:
    problems = []
    for path, readme in targets(argv):
        problems += check(path, readme)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} offence(s) against the house limits (scripts/doc_limits.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
