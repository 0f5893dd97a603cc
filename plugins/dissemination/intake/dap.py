"""Import a Data Analysis Plan into a country rule file: categories, kinds, headers, value sets.

The DAP is filled in with partners when the questionnaire is designed. Its sheet has, per row,
the indicator (column A: the variable name, as in the round) and the dissemination category
(column B); optional column C gives the classification and column D the kind. Further columns
are recognised by the text of their header in the first row (case-insensitive, by keyword):

* "Header", "Export header", "Question" or "Label": the export header(s) of the indicator;
* "HXL": its HXL hashtag (e.g. ``#affected+idps+ind``);
* "Values", "Choices", "Answers" or "Options": its declared value set.

Several headers or values in one cell are separated by ``;``, ``|`` or line breaks.

The importer updates ``include/rules/<ISO3>.yaml`` in place, keeping its comments, shows the
diff, and refuses to write a file the policy loader would reject (for example a category that
loosens the default without a reason, or a categorical indicator without its values). An entry
for an indicator of ``rules/default.yaml`` lists only what the DAP changes.

    python -m dissemination dap --country NGA DAP_NGA.xlsx           # show the diff
    python -m dissemination dap --country NGA DAP_NGA.xlsx --write   # apply it
"""

from __future__ import annotations

import difflib
import io
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import get_args

import pandas as pd
from openpyxl import load_workbook
from openpyxl.utils import get_column_letter

from .. import normalise
from ..classification import Classification, DisseminationCategory
from ..errors import PermanentError
from ..policy import DEFAULT_RULES, PolicyError, load_policy
from ..policy.rules import SET_KINDS, VALUE_KINDS, Kind
from ..policy.yamlsafety import alias_problem
from .textfiles import encoding_of

#: What DAP templates write in column B, mapped to our categories (case-insensitive).
CATEGORY_WORDS = {
    "public": DisseminationCategory.PUBLIC,
    "urgent": DisseminationCategory.URGENT,
    "medium": DisseminationCategory.URGENT,
    "medium urgency": DisseminationCategory.URGENT,
    "monthly": DisseminationCategory.MONTHLY,
    "low": DisseminationCategory.MONTHLY,
    "low urgency": DisseminationCategory.MONTHLY,
    "internal": DisseminationCategory.INTERNAL,
    "not shared": DisseminationCategory.INTERNAL,
    "do not share": DisseminationCategory.INTERNAL,
}

KINDS = get_args(Kind)

#: Optional columns after A-D, found by a keyword in their header (first match wins, in order).
OPTIONAL_COLUMNS = (
    ("hxl", re.compile(r"\bhxl\b", re.IGNORECASE), "HXL hashtag"),
    ("values", re.compile(r"\b(values?|choices?|answers?|options?)\b", re.IGNORECASE),
     "values"),
    ("headers", re.compile(r"\b(headers?|questions?|labels?)\b", re.IGNORECASE),
     "export headers"),
)
_POSITIONAL = {"category": "B", "classification": "C", "kind": "D"}
_SEPARATORS = re.compile(r"[;|\r\n]+")


class DapError(PermanentError, ValueError):
    pass


@dataclass(frozen=True)
class DapRow:
    indicator: str
    category: DisseminationCategory
    classification: Classification | None
    kind: str | None
    headers: tuple[str, ...] = ()
    hxl: str | None = None
    values: tuple[str, ...] = ()
    # Where the row comes from, for messages: "DAP.xlsx: row 5", and field -> column letter.
    where: str = field(default="", compare=False)
    columns: Mapping[str, str] = field(default_factory=dict, compare=False)

    def at(self, name: str) -> str:
        """``DAP.xlsx: row 5, column D`` for the field ``name``."""
        letter = self.columns.get(name) or _POSITIONAL.get(name)
        return f"{self.where}, column {letter}" if letter else self.where


def _show(cell: str, limit: int = 80) -> str:
    """The cell for a message: itself at most (shortened if long)."""
    return repr(cell if len(cell) <= limit else cell[: limit - 1] + "…")


def _split(cell: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in _SEPARATORS.split(cell) if p.strip())


def _optional_columns(path: Path, names: list[object]) -> dict[str, int]:
    """Field -> index of the optional columns (E onwards) whose header names one."""
    found: dict[str, int] = {}
    for index in range(4, len(names)):
        text = str(names[index])
        for name, pattern, what in OPTIONAL_COLUMNS:
            if pattern.search(text):
                if name in found:
                    raise DapError(
                        f"{path}: columns {get_column_letter(found[name] + 1)} and "
                        f"{get_column_letter(index + 1)} both look like the {what} column; "
                        "rename or remove one")
                found[name] = index
                break
    return found


def _hidden_parts(path: Path) -> list[str]:
    """The hidden parts of the sheet the import reads: the first sheet itself, its rows and
    columns that hold something. What a reviewer does not see in Excel must not become policy."""
    workbook = load_workbook(path, data_only=True)  # not read-only: it has no row dimensions
    try:
        sheet = workbook.worksheets[0]
        if sheet.sheet_state != "visible":
            return [f"the first sheet {_show(sheet.title, 40)} is {sheet.sheet_state}"]
        rows = [i for i, d in sorted(sheet.row_dimensions.items())
                if d.hidden and i <= sheet.max_row
                and any(c.value not in (None, "") for c in sheet[i])]
        columns = sorted({i for d in sheet.column_dimensions.values() if d.hidden
                          for i in range(d.min or 1, min(d.max or 0, sheet.max_column) + 1)
                          if any(c.value not in (None, "")
                                 for (c,) in sheet.iter_rows(min_col=i, max_col=i))})
    finally:
        workbook.close()
    return [*([f"row(s) {', '.join(map(str, rows[:20]))} of the first sheet are hidden"]
              if rows else []),
            *([f"column(s) {', '.join(get_column_letter(i) for i in columns[:20])} of the "
               "first sheet are hidden"] if columns else [])]


def read_dap(path: Path) -> list[DapRow]:
    """Read the first sheet (xlsx) or a CSV; the first row is a header.

    Columns A-D by position (indicator, category, classification, kind); headers, HXL and values
    by their header text (see the module's documentation).
    """
    path = Path(path)
    if path.suffix.lower() not in (".xlsx", ".xlsm", ".csv"):
        raise DapError(f"{path}: expected a .xlsx or .csv Data Analysis Plan")
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, header=0, dtype=str, keep_default_na=False,
                                encoding=encoding_of(path))
        else:
            hidden = _hidden_parts(path)
            frame = None if hidden else pd.read_excel(
                path, sheet_name=0, header=0, dtype=str, engine="openpyxl",
                keep_default_na=False)
    except Exception as exc:  # pandas and openpyxl raise many types for a malformed file
        raise DapError(f"{path}: cannot be read as a Data Analysis Plan "
                       f"({type(exc).__name__}: {exc})") from None
    if frame is None:
        raise DapError(f"{path}: " + "; ".join(hidden) + ": unhide what the DAP says (the "
                       "import reads the first sheet, and would read hidden cells nobody "
                       "reviewing the DAP sees), or delete it")
    if frame.shape[1] < 2:
        raise DapError(f"{path}: needs at least columns A (indicator) and B (Dissemination "
                       "Category)")
    optional = _optional_columns(path, list(frame.columns))
    letters = {name: get_column_letter(index + 1) for name, index in optional.items()}
    rows, problems, first = [], [], {}
    for i, values in enumerate(frame.itertuples(index=False), start=2):  # row 1 is the header
        cells = [("" if pd.isna(v) else str(v).strip()) for v in values] + ["", "", ""]
        indicator, category, classification, kind = cells[:4]
        if not indicator:
            continue
        extra = {name: cells[index] for name, index in optional.items()}
        where = f"{path}: row {i}"
        if (before := first.setdefault(normalise.token(indicator), i)) != i:
            problems.append(f"{where}, column A: {_show(indicator)} is also row {before}: one "
                            "row per indicator (which of them would the rules follow?)")
            continue
        problem = _row_problem(where, letters, indicator, category, classification, kind,
                               extra)
        if problem:
            problems.append(problem)
            continue
        rows.append(DapRow(
            indicator, CATEGORY_WORDS[category.lower()],
            Classification(classification.lower()) if classification else None,
            kind.lower() or None,
            headers=_split(extra.get("headers", "")),
            hxl=extra.get("hxl") or None,
            values=_split(extra.get("values", "")),
            where=where, columns=letters,
        ))
    if problems:
        raise DapError("\n".join(problems))
    return rows


def _row_problem(where: str, letters: dict[str, str], indicator: str, category: str,
                 classification: str, kind: str, extra: dict[str, str]) -> str | None:
    """The first problem of one row, naming its column, or None."""
    if category.lower() not in CATEGORY_WORDS:
        return (f"{where}, column B: {_show(category)} for {_show(indicator)} is not a "
                f"dissemination category ({', '.join(sorted(CATEGORY_WORDS))})")
    if classification and classification.lower() not in {c.value for c in Classification}:
        return (f"{where}, column C: {_show(classification)} is not public, confidential or "
                "secret")
    if kind and kind.lower() not in KINDS:
        return f"{where}, column D: {_show(kind)} is not a kind ({', '.join(KINDS)})"
    hxl = extra.get("hxl", "")
    if hxl and not normalise.hxl(hxl):
        return (f"{where}, column {letters['hxl']}: {_show(hxl)} is not an HXL hashtag "
                "(e.g. #affected+idps+ind)")
    values = _split(extra.get("values", ""))
    if values and kind and kind.lower() not in VALUE_KINDS:
        return (f"{where}, column {letters['values']}: values are given but the kind in column D "
                f"is {kind.lower()}; only {', '.join(sorted(VALUE_KINDS))} declare values")
    seen: dict[str, str] = {}
    for value in values:
        if normalise.token(value) in seen:
            return (f"{where}, column {letters['values']}: {_show(value)} and "
                    f"{_show(seen[normalise.token(value)])} are the same value once case and "
                    "spaces are ignored")
        seen[normalise.token(value)] = value
    return None


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)  # the rule files' style: "  - name: ..."
    return yaml


def _text(value: str):
    """``value`` as a YAML string any reader keeps as text: quoted when a YAML 1.1 or 1.2 reader
    would read it as something else (yes, no, on, null, 1, 2026-01-01, #tag, a: b, ...), alone
    or in a flow list."""
    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    reader = YAML(typ="safe", pure=True)
    for version in ("%YAML 1.1\n---\n", ""):
        for text, expected in ((value, value), (f"[{value}]", [value])):
            try:
                if reader.load(version + text) != expected:
                    return DoubleQuotedScalarString(value)
            except Exception:  # not even a plain scalar: quote it
                return DoubleQuotedScalarString(value)
    return value


def _flow(items: tuple[str, ...]):
    from ruamel.yaml.comments import CommentedSeq

    seq = CommentedSeq(_text(v) for v in items)
    seq.fa.set_flow_style()
    return seq


def _same(a, b) -> bool:
    """Two declared texts (or lists of them) are the same once case and spaces are ignored."""
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        return [normalise.token(x) for x in a or ()] == [normalise.token(x) for x in b or ()]
    return a is not None and b is not None and normalise.token(a) == normalise.token(b)


def _changes(row: DapRow, base: Mapping) -> dict[str, object]:
    """The fields the row sets, as a rule file writes them, that differ from ``base`` (what the
    rule files say of the indicator so far)."""
    wanted: dict[str, object] = {"category": row.category.value}
    if row.classification is not None:
        wanted["classification"] = row.classification.value
    if row.kind:
        wanted["kind"] = row.kind
    if row.headers:
        wanted["headers"] = row.headers
    if row.hxl:
        wanted["hxl"] = row.hxl
    if row.values:
        wanted["values"] = row.values
    changed = {}
    for name, value in wanted.items():
        if name == "hxl":
            if normalise.hxl(base.get(name) or "") != normalise.hxl(value):
                changed[name] = _text(value)
        elif isinstance(value, tuple):
            if not _same(base.get(name), value):
                changed[name] = _flow(value)
        elif base.get(name) != value:
            changed[name] = value
    return changed


def _explain(row: DapRow, merged: Mapping, new: bool) -> str | None:
    """Why the loader will reject the row's indicator, in the DAP's terms (or None)."""
    kind = merged.get("kind") or "categorical"
    kind_from = ("column D" if row.kind else
                 "column D is empty, so the default kind" if new else "as the rule files say")
    if kind in SET_KINDS and not merged.get("values"):
        return (f"{row.at('kind')}: {row.indicator!r} is {'a new indicator ' if new else ''}of "
                f"kind {kind} ({kind_from}), which needs its declared values: list them in a "
                f"'Values' column (e.g. yes; no){'' if row.kind else ' or give its kind'}")
    if merged.get("values") and kind not in VALUE_KINDS:
        return (f"{row.at('values' if row.values else 'kind')}: {row.indicator!r} is of kind "
                f"{kind} ({kind_from}), which cannot declare values")
    return None


def _move_blank_lines(mapping, old: str, new: str) -> None:
    """Keep the blank lines that ended the ``old`` last entry after the ``new`` last one (ruamel
    keeps them with the node they followed, so appended entries would come after them)."""
    from ruamel.yaml.comments import CommentedBase, CommentedMap
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString
    from ruamel.yaml.tokens import CommentToken

    node, key = mapping, old
    while True:  # the blank lines follow the deepest last value of the old entry
        item = node.ca.items.get(key) if isinstance(node, CommentedBase) else None
        token = item[2] if item and len(item) > 2 else None
        if isinstance(token, CommentToken) and not token.value.strip():
            break
        value = node[key]
        if not isinstance(value, CommentedMap) or not value:
            return
        node, key = value, list(value)[-1]
    item[2] = None
    # After a block scalar (>- or |) the token holds only the blank lines; after the plain
    # values we write, it also ends the value's own line.
    block = isinstance(node[key], FoldedScalarString | LiteralScalarString)
    target = mapping[new]
    target.ca.items.setdefault(list(target)[-1], [None, None, None, None])[2] = CommentToken(
        ("\n" if block else "") + token.value, CommentMark(0), None)


def _apply(include: Path, country: str, rows: list[DapRow],
           today: date) -> tuple[str, str, list[str]]:
    from ruamel.yaml.comments import CommentedMap

    yaml = _yaml()
    path = Path(include) / "rules" / f"{country}.yaml"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    default_path = Path(include) / "rules" / f"{DEFAULT_RULES}.yaml"
    default_text = default_path.read_text(encoding="utf-8") if default_path.exists() else ""
    for source, text in ((path, old), (default_path, default_text)):
        if problem := alias_problem(text):  # before ruamel builds (or a diff expands) anything
            raise DapError(f"{source}: {problem}")
    doc = yaml.load(old) if old else None
    if doc is None:
        doc = yaml.load(
            f"# Created from a Data Analysis Plan on {today}; review every entry.\n"
            f"country: {country}\nversion: \"dap-{today}\"\nrisk_assessment:\n"
            f"  date: {today}\n  review_every_days: 180\nindicators: {{}}\n"
        )
    if not doc.get("indicators"):  # None or an empty {}: entries are written one per line
        doc["indicators"] = CommentedMap()
    default = (yaml.load(default_text) or {}) if default_text else {}
    inherited = default.get("indicators") or {}
    indicators = doc["indicators"]
    last = list(indicators)[-1] if indicators else None
    notes = []
    for row in rows:
        entry = indicators.get(row.indicator)
        base = inherited.get(row.indicator)
        new = entry is None and base is None
        if new:
            # All a new indicator needs; with no classification it is Secret until someone
            # decides, with no kind categorical (the rules' default: it then needs values).
            changes = _changes(row, {})
            entry = CommentedMap(
                classification=changes.pop("classification", "secret"),
                category=changes.pop("category"),
                kind=changes.pop("kind", "categorical"),
                **changes,
            )
            indicators[row.indicator] = entry
        elif entry is None:
            # An indicator of the default: only what the DAP changes (the loader merges).
            changes = _changes(row, base)
            if not changes:
                continue  # the default already says so
            entry = indicators[row.indicator] = CommentedMap(changes)
        else:
            # The country's entry: what the row sets replaces what it says.
            for name, value in _changes(row, {**(base or {}), **entry}).items():
                entry[name] = value
        note = _explain(row, {**(base or {}), **entry}, new=new)
        if note:
            notes.append(note)
    if last is not None and list(indicators)[-1] != last:
        _move_blank_lines(indicators, last, list(indicators)[-1])
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return old, buf.getvalue(), notes


def import_dap(include: Path, country: str, dap: Path, *, write: bool, today: date) -> str:
    """Show the diff; with ``write``, apply it if the resulting policy still loads."""
    include = Path(include)
    old, new, notes = _apply(include, country, read_dap(dap), today)
    target = include / "rules" / f"{country}.yaml"
    diff = "".join(difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"{target} (now)", tofile=f"{target} (from {Path(dap).name})"))
    with tempfile.TemporaryDirectory() as tmp:
        trial = Path(tmp) / "include"
        shutil.copytree(include, trial)
        (trial / "rules" / f"{country}.yaml").write_text(new, encoding="utf-8")
        try:
            load_policy(trial)
        except PolicyError as exc:
            problems = "\n  ".join(
                [*notes, *(p.replace(str(trial), str(include)) for p in exc.problems)])
            raise DapError(f"the DAP would make the policy invalid; nothing written:\n  "
                           f"{problems}\n{diff}") from None
    if write and new != old:
        target.write_text(new, encoding="utf-8")
    return diff or f"{target}: already matches the DAP\n"
