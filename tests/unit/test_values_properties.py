"""Property: random exports with random junk in their values (contacts in any separator and
script, phone numbers in counts, spreadsheet formulas) and odd headers (contacts, formulas,
free text, near misses of declared ones) are blocked by the contract, or every package made
from them is free of contacts, phone-shaped numbers, formula cells and undeclared header text.

The export goes the way a dropped file does (written as the country exports it, read by the
intake, conformed and staged) and out through planning and packaging; what is checked is
``data.csv`` as a partner's spreadsheet program reads it.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest
import pyzipper
import sqlalchemy as sa
import yaml
from conftest import POLICY_DIR
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from test_values import spreadsheet_formulas

from dissemination.classification import Urgency
from dissemination.devkit.synthetic import generate_round, write_export
from dissemination.intake import contacts, staging
from dissemination.intake.contract import ContractBroken
from dissemination.intake.fresh import read_export
from dissemination.intake.source import RoundMeta
from dissemination.ledger.migrations import open_upgraded
from dissemination.ledger.store import Ledger
from dissemination.package.archive import DATA_FILE, MANIFEST_FILE
from dissemination.policy import Policy, load_policy
from dissemination.runs import (
    Findings,
    PackagingRun,
    package_deliveries,
    plan_deliveries,
    stage_round,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
PASSWORD = "Vq7#pX2!mZ9$kL4@wR8%tB6^"
#: (country, urgency): NGA per site on the urgent path and per state monthly; SSD monthly per
#: site with its free-text comments (the agreement is widened for this test).
PATHS = [("NGA", Urgency.MEDIUM), ("NGA", Urgency.LOW), ("SSD", Urgency.LOW)]
_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_SCRIPTS = [0x30, 0xFF10, 0x0660, 0x0966]  # ASCII, full-width, Arabic-Indic, Devanagari


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tests' policy with SSD's monthly agreement per site, and a ledger."""
    root = tmp_path_factory.mktemp("values")
    shutil.copytree(POLICY_DIR, root / "include")
    path = root / "include" / "agreements" / "unicef-ssd.yaml"
    agreement = yaml.safe_load(path.read_text())
    agreement["tiers"]["low"].pop("aggregate_to")
    agreement["tiers"]["low"]["indicators"] = [
        "round_id", "site_id", "site_name", "admin1_pcode", "idp_individuals",
        "unaccompanied_children", "enumerator_comments"]
    path.write_text(yaml.safe_dump(agreement, sort_keys=False))
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{root / 'ledger.db'}"))
    return _World(load_policy(root / "include"), ledger, root, itertools.count(1))


@dataclass(frozen=True)
class _World:
    policy: Policy
    ledger: Ledger
    root: Path
    numbers: itertools.count  # a round number of its own per example

    def __repr__(self) -> str:  # (hypothesis prints the arguments of a failing example)
        return f"world({self.root})"


@st.composite
def phones(draw) -> tuple[str, str]:
    """(as written, its digits): any script, spelled out or not, any separators."""
    digits = draw(st.text("0123456789", min_size=7, max_size=13))
    script = draw(st.sampled_from(_SCRIPTS))
    spelled = draw(st.booleans())
    separator = draw(st.sampled_from([" ", "-", " - ", "_", "*", ":", ";", ".", "/", "",
                                      " . ", "\u2013", "\u00a0", "\u200b"]))
    written = [_NAMES[int(d)] if spelled else chr(script + int(d)) for d in digits]
    groups = draw(st.integers(1, 4))
    size = -(-len(written) // groups)
    parts = ["".join(written[i:i + size]) if not spelled else " ".join(written[i:i + size])
             for i in range(0, len(written), size)]
    return draw(st.sampled_from(["", "+"])) + separator.join(parts), digits


@st.composite
def emails(draw) -> tuple[str, str]:
    """(as written, its letters): @, ＠ or 'at', spaced out or full width."""
    local = draw(st.text("qxzjkv", min_size=4, max_size=8))
    domain = draw(st.text("qxzjkv", min_size=3, max_size=6))
    at = draw(st.sampled_from(["@", "＠", " at ", " (at) ", "[at]", " @ "]))
    dot = draw(st.sampled_from([".", " dot ", " . ", "[dot]"]))
    written = f"{local}{at}{domain}{dot}org"
    if draw(st.booleans()):
        written = " ".join(written)
    if draw(st.booleans()):
        written = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in written)
    return written, local + domain


FORMULAS = st.sampled_from(['=HYPERLINK("http://x.example","a")', '=WEBSERVICE("x")',
                            "+SUM(1,2)", "-2+3+cmd|' /C calc'!A0", "@SUM(1,2)", "=1+1",
                            "-", "+", "@home", "=A1"])
COUNTS = st.one_of(st.text("0123456789", min_size=9, max_size=13),
                   st.text("0123456789", min_size=6, max_size=10).map(lambda d: "0" + d),
                   st.integers(1_000_001, 99_999_999).map(str))


@st.composite
def junk(draw, columns: list[str]) -> tuple[list[tuple[int, str, str]], list[tuple[str, str]]]:
    """Cells to overwrite (row, column, text), and each contact among them: as written, and
    what it must not give away (its digits, or its letters)."""
    cells, secrets = [], []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["phone", "email", "formula", "count"]))
        if kind == "phone":
            value, secret = draw(phones())
        elif kind == "email":
            value, secret = draw(emails())
        elif kind == "formula":
            value, secret = draw(FORMULAS), ""
        else:
            value, secret = draw(COUNTS), ""
        if kind in ("phone", "email"):
            secrets.append((value, secret))
            value = draw(st.sampled_from(["", "KI ", "call "])) + value + draw(
                st.sampled_from(["", " now", ", camp"]))
        # Mostly where junk gets past the contract: shared text, free text, dropped columns.
        likely = [c for c in columns if c in ("site_name", "enumerator_comments", "ki_phone")]
        column = draw(st.sampled_from(likely) if likely and draw(st.integers(0, 3)) else
                      st.sampled_from(columns))
        cells.append((draw(st.integers(0, 7)), column, value))
    return cells, secrets


#: Letters no declared header, indicator or manifest word holds: a header's own mark, to find
#: it again wherever it might travel.
_MARK = "qxzjkv"


@st.composite
def odd_headers(draw, declared: list[str]) -> tuple[list[str], list[str]]:
    """(extra headers, their marks): typed by a person, each holding text the contract never
    declared: a contact, a formula, free text, or a declared header misspelt."""
    headers, marks = [], []
    for _ in range(draw(st.integers(0, 3))):
        mark = draw(st.text(_MARK, min_size=6, max_size=8))
        kind = draw(st.sampled_from(["phone", "email", "formula", "text", "near"]))
        if kind == "phone":
            stem = draw(phones())[0]
        elif kind == "email":
            stem = draw(emails())[0]
        elif kind == "formula":
            stem = draw(FORMULAS)
        elif kind == "text":
            stem = draw(st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]),
                                max_size=20))
        else:
            name = draw(st.sampled_from(declared)) if declared else "Site name"
            stem = name.replace(" ", "-") if " " in name else name + "s"
        headers.append(f"{stem} {mark}" if draw(st.booleans()) else f"{mark} {stem}")
        marks.append(mark)
    return headers, marks


def _with_columns(export: Path, headers: list[str]) -> None:
    """Append columns headed ``headers`` to the CSV export, each cell a plain word."""
    rows = list(csv.reader(io.StringIO(export.read_text(encoding="utf-8"), newline="")))
    rows[0] += headers
    for row in rows[1:]:
        row += ["noted"] * len(headers)
    out = io.StringIO(newline="")
    csv.writer(out).writerows(rows)
    export.write_text(out.getvalue(), encoding="utf-8")


def _cells(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    return rows[0], rows[1:]


def _check_package(data: bytes, ruleset, secrets: list[str]) -> None:
    assert spreadsheet_formulas(data) == []
    header, rows = _cells(data)
    for name in header:  # headers come from the contract only
        indicator, _, value = name.partition("=")
        assert indicator == "sites" or indicator in ruleset.indicators, name
        assert not value or value in ruleset.indicators[indicator].values, name
    for row in rows:
        for name, cell in zip(header, row, strict=True):
            kind = ruleset.indicators[name.partition("=")[0]].kind \
                if name.partition("=")[0] in ruleset.indicators else "count"
            if kind in ("count", "coordinate") or name == "sites":
                assert not cell or abs(float(cell)) < 1e8, name
                assert not re.match(r"[+-]?0[0-9]", cell), name
            elif kind != "date":  # a date's eight digits are no phone number
                assert not contacts.found(pa.array([cell]))[0], name
                folded = contacts.fold_text(cell).lower()
                for secret in secrets:
                    kept = re.sub(r"[^0-9]", "", folded) if secret.isdigit() \
                        else re.sub(r"[^a-z]", "", folded)
                    assert secret not in kept, name


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(PATHS), st.data())
def test_junk_in_values_is_blocked_or_never_reaches_a_partner(world, path, data):
    policy, ledger, root, numbers = world.policy, world.ledger, world.root, world.numbers
    country, urgency = path
    ruleset = policy.rulesets[country]
    number = next(numbers)
    meta, df = generate_round(ruleset, number, 8, seed=number,
                              status="partial" if urgency is Urgency.MEDIUM else "cleaned")
    cells, secrets = data.draw(junk(list(df.columns)))
    dirty = df.astype(object)
    for row, column, value in cells:
        dirty.at[row, column] = value
    note(f"junk: {cells!r}")
    export = write_export(dirty, ruleset, root / f"{meta.round_id}.csv")
    declared = [h for rule in ruleset.indicators.values() for h in rule.headers]
    headers, marks = data.draw(odd_headers(declared))
    note(f"odd headers: {headers!r}")
    _with_columns(export, headers)
    raw = read_export(export, policy.intake)
    try:
        staged = stage_round(meta, raw, policy, root / f"{number}.arrow")
    except ContractBroken as exc:
        event("blocked by the contract")
        for written, _ in secrets:  # blocked, and the message quotes none of it
            assert written not in str(exc)
        assert not [m for m in marks if m in str(exc)]  # nor any header it did not declare
        return
    assert not [m for m in marks if m in repr(staged)]  # round_columns, XCom
    plans = plan_deliveries(policy, RoundMeta.from_xcom(staged), staged["columns"],
                                  urgency, today=date(2026, 11, 21),
                                  found=Findings(active=staged["active_relational"]))
    packaged = package_deliveries(staging.read_staged(staged["path"]), meta, plans,
                                        policy, root / f"pk{number}", lambda v: PASSWORD,
                                        ledger, PackagingRun(NOW, workers=1))
    for delivery in packaged:
        if delivery.status != "packaged":
            continue
        event("packaged")
        with pyzipper.AESZipFile(delivery.package_path) as zf:
            zf.setpassword(PASSWORD.encode())
            _check_package(zf.read(DATA_FILE), ruleset, [s for _, s in secrets])
            manifest = zf.read(MANIFEST_FILE).decode()
        assert not [m for m in marks if m in manifest], "an undeclared header in the manifest"
        assert not [v for _, _, v in cells if len(v) > 4 and json.dumps(v)[1:-1] in manifest]
