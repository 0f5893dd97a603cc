"""The declared API: every package names its public names, and the Airflow side uses only those.

A successor changing a module inside a package should only have to keep its package's
``__all__`` working; the DAGs, the Airflow bridge and the page must not reach past it.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOMAIN = REPO / "plugins" / "dissemination"
PACKAGES = sorted(p.parent.relative_to(DOMAIN.parent).as_posix().replace("/", ".")
                  for p in DOMAIN.rglob("__init__.py"))
ROOTS = {"dissemination", *(p for p in PACKAGES if p.count(".") == 1)}
AIRFLOW_SIDE = [*REPO.glob("dags/*.py"),
                *(REPO / "plugins" / "dissemination_airflow").rglob("*.py"),
                *(REPO / "plugins" / "dissemination_ui").rglob("*.py")]
HEAVY = ("pandas", "pyarrow", "numpy", "sqlalchemy", "great_expectations", "paramiko", "pyzipper",
         "scipy", "alembic")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_declares_names_that_resolve(package):
    module = importlib.import_module(package)
    assert module.__all__, f"{package}: no __all__"
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    with pytest.raises(AttributeError):
        _ = module.no_such_name


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def test_the_airflow_side_imports_package_roots_only():
    reached = []
    for path in AIRFLOW_SIDE:
        for line, module, names in _imports(path):
            if module.split(".")[0] != "dissemination":
                continue
            if module not in ROOTS:
                reached.append(f"{path.relative_to(REPO)}:{line}: {module}")
                continue
            exported = importlib.import_module(module).__all__
            reached += [f"{path.relative_to(REPO)}:{line}: {module}.{n} is not in __all__"
                        for n in names if n not in exported]
    assert reached == []


def test_the_rule_catches_an_import_past_a_root(tmp_path):
    dag = tmp_path / "dag.py"
    dag.write_text("def t():\n    from dissemination.runs.plan import plan_deliveries\n")
    assert [m for _, m, _ in _imports(dag)] == ["dissemination.runs.plan"]
    assert "dissemination.runs.plan" not in ROOTS and "dissemination.runs" in ROOTS


def test_importing_every_root_loads_nothing_heavy():
    """Roots load a name's module on first use: a DAG file or the page importing a root pays
    for what it uses only."""
    code = (f"import importlib, json, sys\n"
            f"for p in {sorted(ROOTS)!r}: importlib.import_module(p)\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "plugins")})
    assert json.loads(out.stdout) == []


def test_a_name_exported_twice_is_refused():
    from dissemination._exports import lazy_exports

    with pytest.raises(ImportError, match="Delivery is exported from both a and b"):
        lazy_exports("dissemination.x", {"a": ("Delivery",), "b": ("Delivery",)})
