"""Great Expectations on a round: the raw-partial suite passes good data and names bad data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dissemination.intake.validation import validate_round


@pytest.fixture(scope="module")
def ruleset(policy):
    return policy.rulesets["NGA"]


def test_a_clean_synthetic_round_passes(round_nga, ruleset):
    _, df = round_nga
    report = validate_round(df, ruleset)
    assert report.success, report.summary()
    assert report.evaluated >= 10 and report.failures == ()


def test_a_validation_logs_none_of_gx_bookkeeping(round_nga, ruleset, caplog):
    """A validation's task log keeps GX's warnings, not its INFO chatter (hundreds of lines)."""
    import logging

    caplog.set_level(logging.INFO)
    validate_round(round_nga[1], ruleset)
    assert not [r for r in caplog.records
                if r.name.startswith("great_expectations") and r.levelno < logging.WARNING]


def test_the_checked_columns_alone_give_the_same_verdict(policy, round_nga, ruleset, tmp_path):
    """validate_rounds reads only the columns the suite checks from the stage: the report is
    the one the whole round gives, good or bad."""
    from dissemination.intake import staging
    from dissemination.intake.validation import checked
    from dissemination.runs import stage_round

    meta, df = round_nga
    bad = df.copy()
    bad.loc[3, "unaccompanied_children"] = -2
    bad.loc[9, "site_id"] = bad.loc[10, "site_id"]
    for status in ("partial", "cleaned"):
        whole = validate_round(bad, ruleset, status)
        columns = checked(ruleset, list(bad.columns), status)
        assert {"site_id", "unaccompanied_children", "latitude"} <= set(columns)
        # No expectation on the raw round (the cleaned one's are complete): neither read nor shown.
        assert ("site_name" in columns) == (status == "cleaned")
        assert validate_round(bad[columns], ruleset, status) == whole
    staged = stage_round(meta, df, policy, tmp_path / "round.arrow")
    names = staging.staged_columns(staged["path"])
    columns = checked(ruleset, names, "partial")
    subset = staging.read_staged(staged["path"], columns=columns, categories=True)
    assert list(subset.columns) == columns
    assert isinstance(subset["feeling_of_safety"].dtype, pd.CategoricalDtype)  # never expanded
    assert validate_round(subset, ruleset) == validate_round(staging.read_staged(staged["path"]),
                                                             ruleset)


def test_impossible_values_and_broken_keys_are_named(round_nga, ruleset):
    _, df = round_nga
    bad = df.copy()
    bad.loc[3, "unaccompanied_children"] = -2
    bad.loc[5, "latitude"] = 123.0
    bad.loc[7, "site_id"] = None
    bad.loc[9, "site_id"] = bad.loc[10, "site_id"]
    report = validate_round(bad, ruleset)
    assert not report.success
    text = report.summary()
    assert "expect_column_values_to_be_between on unaccompanied_children: 1 unexpected" in text
    assert "expect_column_values_to_be_between on latitude: 1 unexpected" in text
    assert "expect_column_values_to_not_be_null on site_id: 1 unexpected" in text
    assert "expect_column_values_to_be_unique on site_id" in text
    assert str(bad.loc[5, "latitude"]) not in text  # counts, never values


def test_missing_key_column_fails(round_nga, ruleset):
    _, df = round_nga
    report = validate_round(df.drop(columns=["site_id"]), ruleset)
    assert not report.success
    assert any("expect_column_to_exist on site_id" in f for f in report.failures)


def test_value_failures_block_only_the_low_path(round_nga, ruleset):
    from dissemination.classification import Urgency

    _, df = round_nga
    bad = df.copy()
    bad.loc[3, "unaccompanied_children"] = -2
    report = validate_round(bad, ruleset)
    assert report.failures and not report.structural_failures
    assert not report.blocks(Urgency.MEDIUM) and report.blocks(Urgency.LOW)
    bad.loc[7, "site_id"] = None
    report = validate_round(bad, ruleset)
    assert report.blocks(Urgency.MEDIUM)
    assert report.structural_failures == (
        "expect_column_values_to_not_be_null on site_id: 1 unexpected value(s)",)


def test_the_cleaned_suite_is_stricter(round_nga, ruleset):
    _, df = round_nga
    holes = df.copy()
    holes["idp_households"] = holes["idp_households"].astype("float").mask(holes.index == 4)
    assert validate_round(holes, ruleset, "partial").success
    cleaned = validate_round(holes, ruleset, "cleaned")
    assert not cleaned.success and cleaned.suite == "cleaned_round_NGA"
    assert any("not_be_null on idp_households" in f for f in cleaned.failures)


def test_data_docs_are_written_and_named(round_nga, ruleset, tmp_path):
    _, df = round_nga
    bad = df.copy()
    bad.loc[3, "unaccompanied_children"] = -2
    report = validate_round(bad, ruleset, docs_dir=tmp_path / "docs")
    page = tmp_path / "docs" / report.docs.split("/docs/", 1)[1]
    assert page.is_file() and page.suffix == ".html"
    assert "unaccompanied_children" in page.read_text()
    assert (tmp_path / "docs" / "index.html").is_file()
    assert f"Data Docs: {report.docs}" in report.summary()


DOCS_IN_A_NEW_PROCESS = """
import sys
from pathlib import Path

import jinja2

from conftest import POLICY_DIR
from dissemination.devkit.synthetic import generate_round
from dissemination.policy import load_policy
from dissemination.intake.validation import validate_round

compiled = []
compile_ = jinja2.Environment._compile
jinja2.Environment._compile = lambda env, *a, **k: compiled.append(1) or compile_(env, *a, **k)
ruleset = load_policy(POLICY_DIR).rulesets["NGA"]
report = validate_round(generate_round(ruleset, 1, 50, seed=1)[1], ruleset,
                        docs_dir=Path(sys.argv[1]))
print(len(compiled), Path(report.docs.split("/docs/", 1)[1]).suffix)
"""


def test_data_docs_templates_are_compiled_once_per_machine_not_per_validation(tmp_path):
    import os
    import subprocess
    import sys

    tests = str(Path(__file__).parents[1])  # conftest's POLICY_DIR
    env = {**os.environ, "TMPDIR": str(tmp_path),  # jinja's cache folder: a new one
           "PYTHONPATH": os.pathsep.join([tests, os.environ["PYTHONPATH"]])}
    runs = [subprocess.run([sys.executable, "-c", DOCS_IN_A_NEW_PROCESS, str(tmp_path / "docs")],
                           capture_output=True, text=True, env=env) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]
    (first, suffix), (second, _) = (r.stdout.split() for r in runs)
    assert int(first) > 20 and suffix == ".html"  # every Data Docs template, compiled
    assert second == "0"  # a second task on this machine: none
    cache = next(tmp_path.glob("_jinja2-cache-*"))
    assert oct(cache.stat().st_mode & 0o777) == "0o700"


def test_data_docs_count_unexpected_values_and_never_show_them(round_nga, ruleset, tmp_path):
    """Data Docs outlive the run: they say how many values failed, never which (a site's name,
    a duplicated key, an impossible count), and only their owner can open them."""
    import re

    _, df = round_nga
    bad = df.copy()
    bad.loc[3, "admin2_name"] = "Zz-LEAK-7731"
    bad.loc[5, "unaccompanied_children"] = -7731
    bad.loc[9, "site_id"] = "NGA-DUP-5521"
    bad.loc[10, "site_id"] = "NGA-DUP-5521"
    docs = tmp_path / "docs"
    report = validate_round(bad, ruleset, docs_dir=docs)
    assert "expect_column_values_to_be_in_set on admin2_name: 1 unexpected" in report.summary()
    written = [p for p in docs.rglob("*") if p.is_file()]
    assert written and docs.stat().st_mode & 0o777 == 0o700
    for path in written:
        content = path.read_bytes()
        for value in (b"Zz-LEAK-7731", b"-7731", b"NGA-DUP-5521"):
            assert value not in content, f"{value!r} in {path.relative_to(docs)}"
    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", Path(report.docs).read_text()))
    assert re.search(r"admin2_name .*? 1 unexpected values? found", page)
    assert re.search(r"unaccompanied_children .*? 1 unexpected values? found", page)


@pytest.mark.parametrize("docs", [False, True])
def test_nothing_of_the_round_outlives_its_validation(round_nga, ruleset, tmp_path, docs):
    """Neither reachable (GX keeps its last context alive, and a context its data source's last
    frame) nor garbage waiting for a full collection (GX leaves the exceptions it caught in
    reference cycles, whose tracebacks hold this call's frames and the round in them): at a
    million sites 150 MB held into the next task of ``airflow dags test``."""
    import gc

    _, df = round_nga

    def frames_of_the_round() -> int:  # every tracked object, garbage included
        return sum(type(o) is pd.DataFrame and len(o) == len(df) for o in gc.get_objects())

    gc.collect()
    gc.disable()  # only the collection validate_round makes itself
    try:
        before = frames_of_the_round()
        assert validate_round(df, ruleset, docs_dir=tmp_path if docs else None).success
        assert frames_of_the_round() == before
    finally:
        gc.enable()


def test_scipy_stats_and_altair_are_loaded_only_when_an_expectation_uses_them():
    """Imported by GX for expectations no suite here runs: deferred, then whole on first use,
    each alone."""
    import subprocess
    import sys

    code = ("import sys; from dissemination.intake.validation import _context; _context(); "
            "kinds = lambda: [type(sys.modules[m]).__name__ for m in ('scipy.stats', 'altair')]; "
            "print(*kinds(), 'narwhals' in sys.modules); "
            "from great_expectations.expectations.core import "
            "expect_column_kl_divergence_to_be_less_than as kl; "
            "print(round(kl.stats.entropy([0.5, 0.5], [0.9, 0.1]), 4), *kinds()); "
            "print(type(kl.alt.Chart).__name__, *kinds(), 'narwhals' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["_Deferred _Deferred False", "0.5108 module _Deferred",
                                       "type module module True"]
