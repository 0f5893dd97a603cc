"""Import the Data Analysis Plan's "Dissemination Category" (column B) into a country rule file.

The DAP is filled in with partners when the questionnaire is designed. Its sheet has, per row,
the indicator (column A: the variable name, as in the round) and the dissemination category
(column B); optional column C gives the classification and column D the kind. The importer
updates ``include/rules/<ISO3>.yaml`` in place, keeping its comments, shows the diff, and refuses
to write a file the policy loader would reject (for example a category that loosens the default
without a reason).

    python -m dissemination dap --country NGA DAP_NGA.xlsx           # show the diff
    python -m dissemination dap --country NGA DAP_NGA.xlsx --write   # apply it
"""

from __future__ import annotations

import difflib
import io
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from .classification import Classification, DisseminationCategory
from .errors import PermanentError
from .policy import DEFAULT_RULES, PolicyError, load_policy

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


class DapError(PermanentError, ValueError):
    pass


@dataclass(frozen=True)
class DapRow:
    indicator: str
    category: DisseminationCategory
    classification: Classification | None
    kind: str | None


def read_dap(path: Path) -> list[DapRow]:
    """Read columns A-D of the first sheet (xlsx) or of a CSV; the first row is a header."""
    path = Path(path)
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        frame = pd.read_excel(path, sheet_name=0, header=0, dtype=str, engine="openpyxl")
    elif path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, header=0, dtype=str, keep_default_na=False)
    else:
        raise DapError(f"{path}: expected a .xlsx or .csv Data Analysis Plan")
    if frame.shape[1] < 2:
        raise DapError(f"{path}: needs at least columns A (indicator) and B (Dissemination "
                       "Category)")
    rows, problems = [], []
    for i, values in enumerate(frame.itertuples(index=False), start=2):  # row 1 is the header
        cells = [("" if pd.isna(v) else str(v).strip()) for v in values] + ["", ""]
        indicator, category, classification, kind = cells[:4]
        if not indicator:
            continue
        word = CATEGORY_WORDS.get(category.lower())
        if word is None:
            problems.append(f"{path}: row {i}, column B: {category!r} for {indicator!r} is not a "
                            f"dissemination category ({', '.join(sorted(CATEGORY_WORDS))})")
            continue
        try:
            level = Classification(classification.lower()) if classification else None
        except ValueError:
            problems.append(f"{path}: row {i}, column C: {classification!r} is not public, "
                            "confidential or secret")
            continue
        rows.append(DapRow(indicator, word, level, kind or None))
    if problems:
        raise DapError("\n".join(problems))
    return rows


def apply_dap(include: Path, country: str, rows: list[DapRow], today: date) -> tuple[str, str]:
    """Return (old text, new text) of the country's rule file with the DAP applied."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 100
    path = Path(include) / "rules" / f"{country}.yaml"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = yaml.load(old) if old else None
    if doc is None:
        doc = yaml.load(
            f"# Created from a Data Analysis Plan on {today}; review every entry.\n"
            f"country: {country}\nversion: \"dap-{today}\"\nrisk_assessment:\n"
            f"  date: {today}\n  review_every_days: 180\nindicators: {{}}\n"
        )
    if doc.get("indicators") is None:
        doc["indicators"] = {}
    default_path = Path(include) / "rules" / f"{DEFAULT_RULES}.yaml"
    default = (yaml.load(default_path.read_text()) or {}) if default_path.exists() else {}
    inherited = default.get("indicators") or {}
    indicators = doc["indicators"]
    for row in rows:
        entry = indicators.get(row.indicator)
        base = inherited.get(row.indicator) or {}
        if entry is None:
            same = (base.get("category") == row.category.value
                    and (row.classification is None
                         or base.get("classification") == row.classification.value))
            if same:
                continue  # the default already says so
            entry = {
                # A new indicator with no classification is Secret until someone decides.
                "classification": (row.classification.value if row.classification
                                   else base.get("classification", "secret")),
                "category": row.category.value,
                "kind": row.kind or base.get("kind", "categorical"),
            }
            indicators[row.indicator] = entry
            continue
        entry["category"] = row.category.value
        if row.classification is not None:
            entry["classification"] = row.classification.value
        if row.kind:
            entry["kind"] = row.kind
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return old, buf.getvalue()


def import_dap(include: Path, country: str, dap: Path, *, write: bool, today: date) -> str:
    """Show the diff; with ``write``, apply it if the resulting policy still loads."""
    include = Path(include)
    old, new = apply_dap(include, country, read_dap(dap), today)
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
            problems = "\n  ".join(p.replace(str(trial), str(include)) for p in exc.problems)
            raise DapError(f"the DAP would make the policy invalid; nothing written:\n  "
                           f"{problems}\n{diff}") from None
    if write and new != old:
        target.write_text(new, encoding="utf-8")
    return diff or f"{target}: already matches the DAP\n"
