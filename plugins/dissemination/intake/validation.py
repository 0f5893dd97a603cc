"""Validate a round with Great Expectations before anything of it is shared.

The suite is derived from the country's rule set and contract (each indicator's kind, bounds and
declared values), so adding an indicator to the rules also adds its checks. It runs on the
conformed round: ``contract.conform`` has already blocked any value outside its type or set, so
these checks are the round's documented record (Data Docs) and the cleaned path's completeness. The
raw-partial suite checks structure, keys and impossible values only: partial data is by definition
not yet cleaned. The cleaned suite adds completeness. Structural failures (no rows, a key column
missing, null or duplicated keys) block every path; the others block the low-urgency path only,
because urgent raw data is shared before cleaning by design.

``great_expectations`` takes ~2 s to import: it is imported here, inside the function, and this
module is only imported inside tasks.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import logging
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import pyarrow.compute as pc

from ..classification import Urgency
from ..errors import PermanentError
from ..policy import RuleSet
from ..runs import memory
from .columns import as_arrow, repeats
from .staging import private_dir

#: Counts, never values: Data Docs otherwise list sample unexpected values (a site's name, a
#: phone) and the rows holding them, in HTML that outlives the run.
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0,
                 "exclude_unexpected_values": True, "include_unexpected_rows": False,
                 "return_unexpected_index_query": False}

SOURCE = "survey_round"  # the data source a validation adds to its context, and removes


@dataclass(frozen=True)
class ValidationReport:
    suite: str
    success: bool
    evaluated: int
    failures: tuple[str, ...] = field(default_factory=tuple)
    structural_failures: tuple[str, ...] = field(default_factory=tuple)
    docs: str = ""  # the Data Docs page of this validation, when written

    def summary(self) -> str:
        head = f"{self.suite}: {self.evaluated - len(self.failures)}/{self.evaluated} passed"
        if self.docs:
            head += f" (Data Docs: {self.docs})"
        return "\n  ".join([head, *self.failures])

    def blocks(self, urgency: Urgency) -> bool:
        """Medium urgency is blocked by structural failures only; low urgency by any."""
        return bool(self.structural_failures if urgency is Urgency.MEDIUM else self.failures)


class RoundsStopped(PermanentError, ValueError):
    """Raised at the end of a run: these rounds were stopped (validation, overdue review);
    the others went on."""

    def __init__(self, summaries: list[str]):
        self.summaries = summaries
        super().__init__(f"{len(summaries)} round(s) were stopped and not shared:\n  "
                         + "\n  ".join(summaries))


def round_suite(ruleset: RuleSet, columns: list[str], status: str):
    """Expectations for a round; ``status`` "partial" (raw) or "cleaned" (stricter)."""
    import great_expectations as gx
    from great_expectations import expectations as gxe

    structural = {"structural": True}
    suite = gx.ExpectationSuite(name=f"{status}_round_{ruleset.country}")
    keys = [ruleset.site_key]
    identifiers = [*(c for c, r in ruleset.indicators.items() if r.kind == "round"), *keys]
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=structural))
    for column in identifiers:
        suite.add_expectation(gxe.ExpectColumnToExist(column=column, meta=structural))
        if column in columns:
            suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column,
                                                                    meta=structural))
    if len(keys) == 1 and keys[0] in columns:
        suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=keys[0], meta=structural))
    elif len(keys) > 1 and all(k in columns for k in keys):
        suite.add_expectation(gxe.ExpectCompoundColumnsToBeUnique(column_list=keys,
                                                                  meta=structural))
    for column, rule in ruleset.indicators.items():
        if column not in columns:
            continue
        if rule.kind in ("count", "coordinate"):
            low, high = rule.bounds or (0, None)
            suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(
                column=column, min_value=low, max_value=high))
        elif rule.values:
            suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(
                column=column, value_set=list(rule.values)))
        if status == "cleaned" and rule.kind in ("count", "admin", "coordinate", "date"):
            suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    return suite


def checked(ruleset: RuleSet, columns: list[str], status: str = "partial") -> list[str]:
    """Of a round's ``columns``, those its suite checks: all ``validate_round`` reads of a
    staged round (the others are neither checked nor shown in Data Docs)."""
    _context()  # GX builds a suite only inside a context
    named = _named(round_suite(ruleset, columns, status))
    return [c for c in columns if c in named]


def import_great_expectations():
    """Great Expectations as validation imports it: no analytics, its INFO bookkeeping kept out
    of task logs, and the modules no suite here uses loaded only if used (``bench/urgent.py``
    imports it this way too, to measure what the library alone costs)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # GX's INFO records are its own bookkeeping (200 lines of "Skipping registering function"
    # per import): a validation's task log keeps GX's warnings, unless a level was configured.
    if (gx_log := logging.getLogger("great_expectations")).level == logging.NOTSET:
        gx_log.setLevel(logging.WARNING)
    _defer("scipy.stats")
    _defer("altair")
    import great_expectations

    return great_expectations


def _context():
    """A new in-memory GX context: nothing of a validation outlives it but its Data Docs."""
    gx = import_great_expectations()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every pandas batch under 1 GB (an MD5 of a hash of every cell: 0.7 s of
    # 2 at a million sites). The frame it is given is derived (the checked columns, categories),
    # so its fingerprint identifies nothing anyone holds: rounds are named by their id, and
    # what was shared by the ledger's hashes.
    pandas_execution_engine.HASH_THRESHOLD = 0
    _cache_data_docs_templates()

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),  # no tqdm noise in task logs
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _cache_data_docs_templates() -> None:
    """GX's Data Docs views each make a jinja Environment, so every validation compiled the same
    51 templates again (0.45 s of its 0.6 s of Data Docs). Their compiled code is kept in
    jinja's own file cache (a folder of this user's, mode 0700, that jinja checks is theirs):
    compiled once per machine, reloaded while a template's source is unchanged."""
    from great_expectations.render.view import view

    if view.Environment is jinja2.Environment:  # once per process, and only what it expects
        view.Environment = functools.partial(
            jinja2.Environment, bytecode_cache=jinja2.FileSystemBytecodeCache())


def _defer(name: str) -> None:
    """Import ``name`` on its first use, unless already imported. GX imports, when it is
    imported, ``scipy.stats`` (a second of every validation task, 57 MB) and ``altair`` (a third
    of a second) for expectations no suite here uses (KL divergence, KS tests, their charts).
    Used, the module loads then, whole."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _Deferred
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:  # as an import binds it: ``from scipy import stats``
        setattr(sys.modules[parent], child, module)


class _Deferred(types.ModuleType):
    """A module whose code runs on the first use of a name it does not have yet. Unlike
    ``importlib.util.LazyLoader``'s, importing it by name (``import altair``) does not load it:
    Python 3.11 reads the module's ``__spec__`` then, which a lazy module loads on."""

    def __getattr__(self, attr: str):
        self.__class__ = types.ModuleType  # its own code, running, sees a plain module
        try:
            self.__spec__.loader.exec_module(self)
        except BaseException:
            sys.modules.pop(self.__name__, None)  # as a failed import leaves it: not imported
            raise
        return getattr(self, attr)


def _named(suite) -> set[str]:
    return {getattr(e, "column", None) for e in suite.expectations} | {
        c for e in suite.expectations for c in getattr(e, "column_list", None) or ()}


def checked_columns(df: pd.DataFrame, suite) -> pd.DataFrame:
    """Only the columns the suite checks, in the dtypes GX is fast on. GX fingerprints every
    column it is given (a hash of the whole frame: repeated texts hash once per distinct value
    as categories), and compares Arrow-backed numbers one Python call per value, NumPy floats
    in one vectorised step (4.8 s against 0.05 s at a million sites)."""
    named = _named(suite)
    return pd.DataFrame({c: _fast(df[c]) for c in df.columns if c in named}, index=df.index)


def _fast(column: pd.Series):
    kind = column.dtype
    if pd.api.types.is_bool_dtype(kind):
        return column
    if pd.api.types.is_numeric_dtype(kind):
        return column.to_numpy(dtype="float64", na_value=np.nan)
    if isinstance(kind, pd.ArrowDtype | pd.StringDtype) and pd.api.types.is_string_dtype(kind):
        if repeats(cells := as_arrow(column)):
            return pd.Categorical(pc.dictionary_encode(cells).to_pandas())
    return column


def validate_round(df: pd.DataFrame, ruleset: RuleSet, status: str = "partial",
                   docs_dir: Path | None = None) -> ValidationReport:
    """Run the round's suite; with ``docs_dir``, also write Great Expectations Data Docs (HTML)
    there and name the validation's page in the report."""
    context = _context()
    with memory.frozen():  # what exists already is none of GX's garbage: collected below
        try:
            return _validate(context, df, ruleset, status, docs_dir)
        finally:  # GX keeps its last context alive, and the context keeps the round (all of it)
            if SOURCE in context.data_sources.all():
                context.data_sources.delete(SOURCE)
            # GX leaves exceptions it caught in reference cycles, and their tracebacks hold the
            # frames of this call with their locals: the round, until a full collection.
            gc.collect()


def _validate(context, df, ruleset, status, docs_dir) -> ValidationReport:
    import great_expectations as gx

    batch = (
        context.data_sources.add_pandas(SOURCE)
        .add_dataframe_asset("site_assessments")
        .add_batch_definition_whole_dataframe("whole_round")
    )
    suite = context.suites.add(round_suite(ruleset, list(df.columns), status))
    df = checked_columns(df, suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=suite)
    )
    docs_page = ""
    if docs_dir is None:
        result = definition.run(batch_parameters={"dataframe": df}, result_format=RESULT_FORMAT)
    else:
        docs_dir = private_dir(docs_dir)
        context.add_data_docs_site(site_name="dissemination", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
        before = set(docs_dir.glob("validations/**/*.html"))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=suite.name, validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format=RESULT_FORMAT))
        run = checkpoint.run(batch_parameters={"dataframe": df})
        (result,) = run.run_results.values()
        pages = sorted(set(docs_dir.glob("validations/**/*.html")) - before)
        docs_page = str(pages[-1]) if pages else str(docs_dir / "index.html")
    failures, structural = [], []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        column = cfg.kwargs.get("column") or cfg.kwargs.get("column_list") or "table"
        detail = r.result or {}
        count = detail.get("unexpected_count")  # counts only: logs never carry values
        if r.exception_info and r.exception_info.get("raised_exception"):
            what = "could not be checked (an error; its message may quote values)"
        elif count is not None:
            what = f"{count} unexpected value(s)"
        else:
            what = f"observed {detail.get('observed_value')!r}"
        failures.append(f"{cfg.type} on {column}: {what}")
        if (cfg.meta or {}).get("structural"):
            structural.append(failures[-1])
    return ValidationReport(
        suite=suite.name,
        success=bool(result.success),
        evaluated=len(result.results),
        failures=tuple(failures),
        structural_failures=tuple(structural),
        docs=docs_page,
    )
