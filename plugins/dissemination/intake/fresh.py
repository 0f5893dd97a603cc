"""Fresh rounds: from the survey database (a watermark) and from a file drop (CSV/XLSX).

Each round version is registered once by content hash in the ledger database, so a round that was
already processed is not processed again, and a corrected re-export of a round (same id, other
content) is recognised as such and routed again, explicitly, as a correction.

File drop: files named ``<ISO3>-R<nnn>-<partial|cleaned>.csv`` (or ``.xlsx``), exactly as exported:
human headers, an HXL row or not; the country's contract maps them. Each file is checked on its
own (name, country, size and shape limits, then every value against the contract), its Secret
columns are dropped unread (only their names are kept, for the explanation), the rest is written
to the survey database (one way into the pipeline) and the file moves to ``processed/``. A file
that fails any check, or that the survey database refuses (a constraint), goes to ``rejected/``
with a ``.error`` file naming the problem (file, column, rule, rows; never a value), nothing of
it is used, and the other files go on.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import shutil
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..errors import PermanentError
from ..ids import InvalidRoundId, check_round_id
from ..ledger.connection import require_schema
from ..ledger.rows import insert_chained
from ..ledger.tables import intake_log
from ..policy import IntakeLimits, Policy
from .contract import ConformedRound, conform, is_hxl_row
from .headers import not_found
from .reading import read_round
from .source import RoundMeta, RoundNotWritten, exported_since, write_round
from .textfiles import NotText, legacy_encoding
from .workbook import WorkbookRefused, read_first_sheet

log = logging.getLogger(__name__)

#: A dropped file is named after its round: ``<round id>.csv`` or ``.xlsx`` (``ids.ROUND_ID``).
FILE_NAME = re.compile(r"(?P<round_id>.+)\.(?P<ext>csv|xlsx)")


class DropFileRejected(PermanentError, ValueError):
    pass


@dataclass(frozen=True)
class NewRound:
    round_id: str
    country: str
    status: str
    content_sha256: str
    version: int  # 1 for a new round; 2, 3... for corrected re-exports
    replaces: str = ""  # content hash of the version it corrects

    @property
    def corrected(self) -> bool:
        return self.version > 1


def content_hash(df: pd.DataFrame) -> str:
    """Order-independent hash of a round's content (columns and rows)."""
    ordered = df[sorted(df.columns)]
    ordered = ordered.sort_values(list(ordered.columns)).reset_index(drop=True)
    h = hashlib.sha256(",".join(ordered.columns).encode())
    h.update(pd.util.hash_pandas_object(ordered.astype("string"), index=False).to_numpy()
             .tobytes())
    return h.hexdigest()


def import_drop(folder: Path, survey: sa.Engine, now: datetime, policy: Policy) -> list[str]:
    """Move every file of the drop that passes its checks into the survey database; reject the
    others, each with its reason, without stopping at the first."""
    folder = Path(folder)
    imported = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            meta, df = read_drop_file(path, policy)
            write_round(survey, meta, df, exported_at=now)
        except (DropFileRejected, RoundNotWritten) as exc:  # neither quotes a value
            reason = str(exc) if isinstance(exc, DropFileRejected) else f"{path.name}: {exc}"
            _move(path, folder / "rejected")
            (folder / "rejected" / f"{path.name}.error").write_text(f"{reason}\n")
            log.warning(f"rejected {reason}")
            continue
        _move(path, folder / "processed")
        log.info(f"imported {path.name} as {meta.round_id}: {len(df)} sites; dropped unread as "
                 f"Secret: {', '.join(meta.dropped) or 'nothing'}")
        for line in not_found([*df.columns, *meta.dropped], policy.rulesets[meta.country]):
            log.info(f"{path.name}: {line}")
        imported.append(meta.round_id)
    return imported


def read_drop_file(path: Path, policy: Policy) -> tuple[RoundMeta, pd.DataFrame]:
    """The round in a dropped file, conformed to its country's contract, without its Secret
    columns. Raises ``DropFileRejected`` naming the file and the problem."""
    match = FILE_NAME.fullmatch(path.name)
    try:
        round_id = check_round_id(match["round_id"] if match else path.name, "file drop")
    except InvalidRoundId as exc:
        raise DropFileRejected(f"{path.name}: name must look like NGA-R004-partial.csv or "
                               f"SSD-R012-cleaned.xlsx ({exc})") from None
    country, _, status = round_id.split("-")
    ruleset = policy.rulesets.get(country)
    if ruleset is None:
        raise DropFileRejected(f"{path.name}: no rule set for country {country}: add "
                               f"include/rules/{country}.yaml (run check-round on this file first)")
    raw = read_export(path, policy.intake)
    conformed = conform(raw, ruleset, first_row=2)
    if conformed.violations:
        raise DropFileRejected(f"{path.name}: {len(conformed.violations)} contract violation(s) "
                               f"against rules/{country} v{ruleset.version}:\n  "
                               + "\n  ".join(v.line() for v in conformed.violations))
    meta = RoundMeta(round_id, country, status, _collected_at(path, conformed, ruleset),
                     tuple(conformed.dropped))
    return meta, conformed.frame


#: The collection dates a round's file may hold: a plausibility range, not a policy.
COLLECTED_SINCE, COLLECTED_UNTIL = pd.Timestamp("2000-01-01"), pd.Timestamp("2099-12-31")


def _collected_at(path: Path, conformed: ConformedRound, ruleset) -> datetime:
    """The window of an urgent delivery runs from the first day of collection: conservative."""
    column = ruleset.collection_date
    if column not in conformed.frame:
        headers = ", ".join(repr(h) for h in (column, *ruleset.indicators[column].headers))
        raise DropFileRejected(f"{path.name}: no column is the collection date {column} "
                               f"(headers {headers})")
    dates = pd.to_datetime(conformed.frame[column], errors="coerce", format="%Y-%m-%d")
    if dates.isna().all():
        raise DropFileRejected(f"{path.name}: column {column!r} has no date")
    # 0001-01-01 or 1900-01-01, typed for a day of this round, would date its urgent window a
    # century ago (missed at once); 9999-12-31 is no collection either.
    wrong = ((dates < COLLECTED_SINCE) | (dates > COLLECTED_UNTIL)).fillna(False).to_numpy()
    if wrong.any():
        rows = np.flatnonzero(wrong) + 2 + conformed.hxl_row  # as the file numbers them
        raise DropFileRejected(
            f"{path.name}: column {column!r}: {int(wrong.sum())} collection date(s) outside "
            f"{COLLECTED_SINCE.date()}..{COLLECTED_UNTIL.date()} in row(s): "
            f"{', '.join(map(str, rows[:10]))}")
    return datetime.combine(dates.min().date(), time(0, 0), tzinfo=UTC)


def read_export(path: Path, limits: IntakeLimits) -> pd.DataFrame:
    """A CSV or XLSX export: every cell as exported (text in a CSV; text, numbers, booleans or
    dates in an XLSX), with the headers exactly as written, duplicates included: nothing is read
    as missing but empty cells, so an answer such as "None" stays an answer."""
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise DropFileRejected(f"{path.name}: {size} bytes, above the intake limit of "
                               f"{limits.max_bytes} (include/intake.yaml: max_bytes)")
    try:
        if path.suffix.lower() == ".csv":
            cells = _read_csv(path, limits.max_rows + 3)
        else:
            cells = read_first_sheet(path, limits, limits.max_rows + 3)
    except DropFileRejected:
        raise
    except WorkbookRefused as exc:
        raise DropFileRejected(f"{path.name}: {exc}") from None
    except zipfile.BadZipFile:
        raise DropFileRejected(f"{path.name}: cannot be read (not an XLSX workbook)") from None
    except Exception as exc:  # pandas and openpyxl raise many types for a malformed file
        # Named by type only: their messages quote cells ("could not convert string to float:
        # '+234 803 ...'"), and a cell may be the phone number that made the file unreadable.
        raise DropFileRejected(f"{path.name}: cannot be read ({type(exc).__name__}; its "
                               "message is not shown, as it may quote a cell)") from None
    if cells.empty:
        raise DropFileRejected(f"{path.name}: empty file")
    if cells.shape[1] > limits.max_columns:
        raise DropFileRejected(f"{path.name}: {cells.shape[1]} columns, above the intake limit "
                               f"of {limits.max_columns} (include/intake.yaml: max_columns)")
    rows = len(cells) - 1 - (len(cells) > 1 and is_hxl_row(cells.iloc[1]))
    if rows > limits.max_rows:  # read a row more than allowed, so this tells
        raise DropFileRejected(f"{path.name}: more than {limits.max_rows} rows, above the "
                               "intake limit (include/intake.yaml: max_rows)")
    headers = [str(h).strip() if str(h).strip() else f"(column {i} has no header)"
               for i, h in enumerate(cells.iloc[0], start=1)]
    raw = cells.iloc[1:].reset_index(drop=True)
    raw.columns = headers
    return raw


def _read_csv(path: Path, nrows: int) -> pd.DataFrame:
    """UTF-8 (with or without a BOM), else Windows-1252: what spreadsheet exports write. Every
    record is checked first (``_check_records``), as pandas reads what it can: it pads a short
    record with empty cells and skips blank lines, so a file cut off mid-row would be read as
    answers missing, and every row after a blank line would be named one row too early."""
    encoding, error = "utf-8-sig", None
    try:
        _check_records(path, encoding, nrows)
    except UnicodeDecodeError as exc:
        error = exc
    if error is not None:
        try:
            encoding = legacy_encoding(path, error)
        except NotText as exc:
            raise DropFileRejected(f"{path.name}: {exc}") from None
        try:
            _check_records(path, encoding, nrows)
        except UnicodeDecodeError:
            raise DropFileRejected(f"{path.name}: neither UTF-8 nor Windows-1252 text") from None
    return pd.read_csv(path, header=None, dtype=str, keep_default_na=False, na_filter=False,
                       encoding=encoding, nrows=nrows)


def _check_records(path: Path, encoding: str, nrows: int) -> None:
    """Every record has the header's number of fields, and no blank line comes between rows
    (trailing ones are fine): otherwise refused, naming the line, never a cell."""
    with open(path, encoding=encoding, newline="") as f:
        reader = csv.reader(f)
        width, blank = None, None
        try:
            for number, record in enumerate(reader):
                if not record:
                    blank = blank or reader.line_num
                    continue
                if blank is not None:
                    raise DropFileRejected(
                        f"{path.name}: line {blank} is blank, between rows (remove it: the rows "
                        "after it would be misnumbered)")
                if width is None:
                    _check_delimiter(path, record)
                    width = len(record)
                elif len(record) != width:
                    raise DropFileRejected(
                        f"{path.name}: line {reader.line_num} has {len(record)} field(s), the "
                        f"header {width} (a file cut short, or a row that lost or gained "
                        "cells)")
                if number > nrows:
                    return
        except csv.Error as exc:  # its messages name the problem, never a cell
            raise DropFileRejected(f"{path.name}: line {reader.line_num} is not CSV "
                                   f"({exc})") from None


#: Separators spreadsheet programs write in place of commas (a locale whose decimal mark is a
#: comma writes semicolons): named, as the file is otherwise refused for what follows from them.
_OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _check_delimiter(path: Path, header: list[str]) -> None:
    """A header line read with commas whose fields hold another separator more often than
    commas separate them is a file separated by that one: refused, naming it."""
    for sign, called in _OTHER_SEPARATORS.items():
        if sum(field.count(sign) for field in header) >= len(header):
            raise DropFileRejected(
                f"{path.name}: its fields are separated by {sign!r} ({called}), not commas: "
                "save it again as CSV with commas (in Excel: CSV UTF-8 (Comma delimited))")


def _move(path: Path, target: Path) -> None:
    target.mkdir(exist_ok=True)
    shutil.move(str(path), target / path.name)


def new_rounds(survey: sa.Engine, ledger: sa.Engine, now: datetime) -> list[NewRound]:
    """Rounds exported since the last intake whose content is new; registers them (chained in
    the ledger's audit trail)."""
    require_schema(ledger)
    with ledger.connect() as conn:
        watermark = conn.execute(sa.select(sa.func.max(intake_log.c.exported_at))).scalar()
    watermark = watermark.replace(tzinfo=UTC) if watermark and watermark.tzinfo is None \
        else watermark
    found = []
    for round_id, exported_at in exported_since(survey, watermark):
        meta, df = read_round(survey, round_id)
        digest = content_hash(df)
        with ledger.begin() as conn:
            versions = conn.execute(
                sa.select(intake_log.c.content_sha256, intake_log.c.version)
                .where(intake_log.c.round_id == round_id)
                .order_by(intake_log.c.version.desc())).all()
            if any(v.content_sha256 == digest for v in versions):
                # Same content exported again: nothing new; only the watermark moves.
                conn.execute(intake_log.update().where(
                    intake_log.c.round_id == round_id, intake_log.c.content_sha256 == digest)
                    .values(exported_at=exported_at))
                continue
            version = versions[0].version + 1 if versions else 1
            insert_chained(conn, intake_log, dict(
                round_id=round_id, content_sha256=digest, country=meta.country,
                status=meta.status, exported_at=exported_at, seen_at=now, version=version))
        found.append(NewRound(round_id, meta.country, meta.status, digest, version,
                              versions[0].content_sha256 if versions else ""))
    return found
