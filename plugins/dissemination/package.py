"""A package: the shared columns as CSV plus a manifest, in an AES-256 zip.

The zip is WinZip-AES (pyzipper), which 7-Zip, p7zip, WinZip and Python open; Info-ZIP's ``unzip``
does not. The password is an argument, never part of the package, its manifest or its name.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyzipper

from .classification import Classification, Urgency
from .digests import file_sha256
from .disclosure import Content, explain
from .errors import PermanentError
from .ids import check_round_id
from .ledger import MAIN_RECIPIENTS
from .policy import Agreement, RuleSet
from .sensitivity import SecretLeak, Selection
from .source import RoundMeta

DATA_FILE = "data.csv"
MANIFEST_FILE = "manifest.json"
MIN_PASSWORD_LENGTH = 16
MANIFEST_VERSION = 1


class WeakPassword(PermanentError, ValueError):
    pass


@dataclass(frozen=True)
class Package:
    path: Path
    content_sha256: str  # of data.csv: the same data is never delivered twice
    package_sha256: str  # of the zip as uploaded
    row_count: int
    manifest: dict

    @property
    def name(self) -> str:
        return self.path.name


def csv_bytes(df: pd.DataFrame) -> bytes:
    """CSV via pyarrow: about 8x faster than ``DataFrame.to_csv`` on large rounds."""
    buf = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


def build_package(
    content: Content,
    meta: RoundMeta,
    selection: Selection,
    ruleset: RuleSet,
    agreement: Agreement,
    out_dir: Path,
    password: str,
    created_at: datetime,
    warnings: tuple[str, ...] = (),
    recipient: str = "primary",
    organisation: str = "",
) -> Package:
    """Write the partner's table and its manifest into an AES-256 zip under ``out_dir``."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(
            f"the package password for agreement {agreement.id} (variable "
            f"{agreement.password.variable}) is shorter than {MIN_PASSWORD_LENGTH} characters"
        )
    if any(c.classification is Classification.SECRET for c in content.columns):
        raise SecretLeak(f"a Secret column reached the package for {agreement.id}")
    data = csv_bytes(content.frame)
    content_sha256 = hashlib.sha256(data).hexdigest()
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "round": {
            "id": meta.round_id,
            "country": meta.country,
            "status": meta.status,
            "collected_at": meta.collected_at.isoformat(),
        },
        "agreement": {
            "id": agreement.id,
            "organisation": organisation or agreement.organisation,
            "organisation_id": agreement.organisation,
            "purpose": agreement.purpose,
        },
        "recipient": recipient,
        "urgency": selection.urgency.value,
        "level": selection.level,
        "rules": {
            "country": ruleset.country,
            "version": ruleset.version,
            "default_version": ruleset.default_version,
            "risk_assessment_date": ruleset.risk_assessment.date.isoformat(),
            "review_due": ruleset.risk_assessment.review_due.isoformat(),
            "small_cell_threshold": ruleset.small_cells.threshold,
        },
        "warnings": list(warnings),
        "columns": [
            {"name": c.name, "source": c.source, "classification": c.classification.value,
             "rule": c.rule, "suppressed_cells": content.suppressed.get(c.name, 0)}
            for c in content.columns
        ],
        "explanation": explain(selection, content),
        "empty_cells": "an empty count is suppressed (small cell) or was missing in the round",
        "row_count": len(content.frame),
        "data_file": DATA_FILE,
        "data_sha256": content_sha256,
        "created_at": created_at.isoformat(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / package_name(meta.round_id, agreement.id, selection.urgency, content_sha256,
                                  recipient)
    tmp = path.with_name(path.name + ".tmp")
    with pyzipper.AESZipFile(
        tmp, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as zf:
        zf.setpassword(password.encode("utf-8"))
        zf.setencryption(pyzipper.WZ_AES, nbits=256)
        zf.writestr(MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True))
        zf.writestr(DATA_FILE, data)
    tmp.chmod(0o600)
    tmp.replace(path)
    return Package(path, content_sha256, file_sha256(path), len(content.frame), manifest)


def package_name(round_id: str, agreement_id: str, urgency: Urgency, content_sha256: str,
                 recipient: str = "primary") -> str:
    """The organisation's package, or a field focal point's (named after them)."""
    check_round_id(round_id, "package name")
    who = "" if recipient in MAIN_RECIPIENTS else \
        "_" + re.sub(r"[^a-z0-9]+", "-", recipient.removeprefix("field:").lower()).strip("-")
    return f"{round_id}_{agreement_id}_{urgency.value}{who}_{content_sha256[:12]}.zip"


def open_package(path: Path, password: str) -> tuple[dict, pd.DataFrame]:
    """What a partner does: decrypt, read the manifest, check the data against its hash."""
    with pyzipper.AESZipFile(path) as zf:
        zf.setpassword(password.encode("utf-8"))
        manifest = json.loads(zf.read(MANIFEST_FILE))
        data = zf.read(DATA_FILE)
    if hashlib.sha256(data).hexdigest() != manifest["data_sha256"]:
        raise ValueError(f"{path}: {DATA_FILE} does not match the manifest's data_sha256")
    return manifest, pd.read_csv(io.BytesIO(data), engine="pyarrow", dtype_backend="pyarrow")
