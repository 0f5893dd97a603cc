"""Team rules, enforced on the DagBag: DAGs import cleanly, parse fast and stay thin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
POLICY_DIR = Path(__file__).resolve().parents[1] / "support" / "policy"
HEAVY = ["pandas", "great_expectations", "paramiko", "pyzipper", "pyarrow",
         "airflow.providers.sftp", "dissemination.delivery.sftp", "dissemination.intake.validation"]

_PROBE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - t
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {d.dag_id: {"tags": sorted(d.tags), "doc_md": bool(d.doc_md),
                        "catchup": d.catchup,
                        "fileloc": d.fileloc,
                        "tasks": {t.task_id: {"retries": t.retries,
                                              "has_retry_policy": t.retry_policy is not None}
                                  for t in d.tasks}}
             for d in bag.dags.values()},
    "new_modules": sorted(set(sys.modules) - before),
    "seconds": elapsed,
}))
"""


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow_home")),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "DISSEMINATION_INCLUDE_DIR": str(POLICY_DIR),
           "PYTHONPATH": str(REPO / "plugins")}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(REPO / "dags")], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_import_errors(dagbag):
    assert dagbag["errors"] == {}
    assert {"urgent_dissemination", "ledger_audit"} <= set(dagbag["dags"])


def test_every_dag_is_documented_tagged_and_not_catching_up(dagbag):
    for dag_id, dag in dagbag["dags"].items():
        assert dag["doc_md"], f"{dag_id}: doc_md missing"
        assert "dissemination" in dag["tags"], f"{dag_id}: tag 'dissemination' missing"
        assert dag["catchup"] is False, f"{dag_id}: catchup must be off"


def test_the_ledger_audit_only_verifies(dagbag):
    """An audit must not change what it audits: one task, which reads the ledger."""
    audit = dagbag["dags"]["ledger_audit"]
    assert list(audit["tasks"]) == ["verify_ledger"]
    assert {"dissemination", "security"} <= set(audit["tags"])


def test_every_task_retries_transient_but_not_permanent_errors(dagbag):
    for dag_id, dag in dagbag["dags"].items():
        for task_id, task in dag["tasks"].items():
            assert task["retries"] >= 1, f"{dag_id}.{task_id}"
            assert task["has_retry_policy"], f"{dag_id}.{task_id}: no retry policy"


def test_parsing_imports_nothing_heavy(dagbag):
    """pandas, GX, paramiko and friends are imported inside tasks, never at parse time."""
    loaded = [m for m in HEAVY if m in dagbag["new_modules"]]
    assert loaded == [], f"DAG parsing imported {loaded}"


def test_domain_package_does_not_import_airflow():
    code = ("import sys, pkgutil, importlib, dissemination\n"
            "for m in pkgutil.iter_modules(dissemination.__path__):\n"
            "    importlib.import_module('dissemination.' + m.name)\n"
            "print(sorted(n for n in sys.modules if n == 'airflow' or n.startswith('airflow.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(REPO / "plugins")})
    assert out.stdout.strip() == "[]"


def _form_schema(include: Path) -> dict:
    """The urgent DAG's trigger form, field by field, as a fresh DagBag parses it with the
    policy in ``include``."""
    code = ("import json, sys\n"
            "from airflow.dag_processing.dagbag import DagBag\n"
            "p = DagBag(dag_folder=sys.argv[1]).dags['urgent_dissemination'].params\n"
            "print(json.dumps({k: p.get_param(k).schema for k in p}))")
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "DISSEMINATION_INCLUDE_DIR": str(include), "PYTHONPATH": str(REPO / "plugins")}
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "dags" /
                          "urgent_dissemination.py")], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_trigger_form_offers_the_policy_files_choices():
    schema = _form_schema(POLICY_DIR)
    assert schema["country"]["enum"] == sorted(p.stem for p in (POLICY_DIR / "rules")
                                               .glob("*.yaml") if p.stem != "default")
    assert schema["agreements"]["examples"] == sorted(
        p.stem for p in (POLICY_DIR / "agreements").glob("*.yaml"))
    assert schema["justification"]["minLength"] == 10


def test_the_pick_list_stops_where_it_would_slow_every_parse(tmp_path):
    """Every task carries the form: beyond PICK_LIST_MAX ids are typed, and still checked."""
    from airflow.sdk.definitions.param import ParamValidationError

    from dissemination_airflow import PICK_LIST_MAX, form_param

    include = tmp_path / "include"
    (include / "rules").mkdir(parents=True)
    (include / "agreements").mkdir()
    (include / "rules" / "NGA.yaml").touch()  # the form lists names; the files are read later
    for i in range(PICK_LIST_MAX + 1):
        (include / "agreements" / f"partner-{i:04d}.yaml").touch()
    schema = _form_schema(include)
    assert "examples" not in schema["agreements"]  # typed, one id per line
    assert {s["$schema"] for s in schema.values()} == {form_param(1).schema["$schema"]}
    # The form's dialect still validates: a bad round id is refused by the form itself.
    field = form_param(None, type=["null", "string"], pattern="^[A-Z]{3}$")
    assert field.resolve("NGA") == "NGA" and field.resolve(None) is None
    with pytest.raises(ParamValidationError):
        field.resolve("../etc")


_FORM_PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.definitions.param import ParamValidationError
dag = DagBag(dag_folder=sys.argv[1]).dags['urgent_dissemination']
out = {}
for value in json.loads(sys.argv[2]):
    try:
        dag.params.get_param('round_id').resolve(value)
        form = 'accepted'
    except ParamValidationError:
        form = 'refused'
    request = {'round_id': value, 'country': 'NGA', 'agreements': [], 'justification': 'x' * 10}
    if isinstance(value, list):  # a list probes the agreements field instead
        request.update(round_id=None, agreements=value)
    try:
        dag.get_task('resolve_request').python_callable(params=request)
        task = 'accepted'
    except Exception as exc:
        task = f'{type(exc).__name__}: {exc}'
    out[repr(value)] = [form, task]
print(json.dumps(out))
"""


def test_the_trigger_form_and_its_task_refuse_a_bad_round_id_or_agreement():
    """The form (and a REST/CLI conf, validated against the same Params) refuses a path as round
    id; the task checks again with the domain's pattern, which also refuses what JSON Schema's
    ``$`` lets through (a trailing newline), and an agreement id no policy file has."""
    values = ["../../tmp/evil-R001-partial", "NGA-R001-partial\n", "NGA-R001-partial",
              ["unicef-nga", "no-such-agreement"]]
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "DISSEMINATION_INCLUDE_DIR": str(POLICY_DIR), "PYTHONPATH": str(REPO / "plugins"),
           "AIRFLOW_CONN_SURVEY_DB": json.dumps({"conn_type": "sqlite", "host": "/nonexistent"})}
    out = subprocess.run([sys.executable, "-c", _FORM_PROBE,
                          str(REPO / "dags" / "urgent_dissemination.py"), json.dumps(values)],
                         env=env, capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    form, task = seen["'../../tmp/evil-R001-partial'"]
    assert form == "refused"
    assert task.startswith("InvalidRoundId: trigger form (round_id): refused round id")
    form, task = seen[repr("NGA-R001-partial\n")]
    assert task.startswith("InvalidRoundId: trigger form (round_id): refused round id")
    form, task = seen["'NGA-R001-partial'"]
    assert form == "accepted" and not task.startswith("InvalidRoundId")
    # The form lists agreements without enforcing them (an enum of 1,000 costs every parse):
    # the task refuses an unknown one before it reads the survey database.
    form, task = seen[repr(["unicef-nga", "no-such-agreement"])]
    assert task.startswith("UnknownAgreement: trigger form (agreements): no agreement file for "
                           "['no-such-agreement']")


def test_every_engine_hides_bound_parameters():
    """Team rule: SQLAlchemy puts bound parameters (a round's values) into its error text unless
    the engine hides them; every create_engine in plugins/ and dags/ passes
    hide_parameters=True."""
    import ast

    calls, bare = 0, []
    for path in sorted([*(REPO / "plugins").rglob("*.py"), *(REPO / "dags").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name != "create_engine":
                continue
            calls += 1
            if not any(k.arg == "hide_parameters" and isinstance(k.value, ast.Constant)
                       and k.value.value is True for k in node.keywords):
                bare.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert calls >= 4 and bare == []


def test_plugins_load_only_the_page_and_nothing_heavy():
    """Every task loads every plugin (for macros): the plugins folder registers the page alone
    (.airflowignore keeps the plain packages out) and imports neither the page's app nor
    Airflow's API security until the page is requested."""
    code = ("import json, sys\n"
            "from airflow import plugins_manager\n"
            "apps, _ = plugins_manager.get_fastapi_plugins()\n"
            "print(json.dumps({'apps': [a['url_prefix'] for a in apps],\n"
            "  'heavy': [m for m in ('dissemination_ui.app', 'airflow.api_fastapi.core_api."
            "security', 'pandas', 'tasks', 'store') if m in sys.modules]}))")
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "PYTHONPATH": str(REPO / "plugins")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "apps": ["/dissemination"], "heavy": []}
