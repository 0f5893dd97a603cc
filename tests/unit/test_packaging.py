"""The installable domain package and the split of requirements (pyproject.toml, requirements*.txt).

The Airflow image installs requirements.txt alone, so a test tool listed there, or pulled in by
something listed there, would ship to production; the development venv adds
requirements-test.txt. The domain installs as `dissemination` with its own console script.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: What only the tests and the demo's sandbox use: never in the image. (scipy is in the test
#: requirements for the auditor, but Great Expectations requires it: in the image all the same.)
TEST_TOOLS = {"pytest", "hypothesis", "ruff", "moto", "flask", "flask-cors", "playwright",
              "aiosmtpd"}


def requirements(name: str) -> tuple[list[str], dict[str, Requirement]]:
    """(the files it includes with -r, its requirements by canonical name)."""
    included, found = [], {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            included.append(line[3:].strip())
        elif line:
            req = Requirement(line)
            found[canonicalize_name(req.name)] = req
    return included, found


def closure(reqs) -> set[str]:
    """Every distribution pip installs for ``reqs``, read from the venv's installed metadata."""
    seen, todo = set(), [(r, ()) for r in reqs]
    while todo:
        req, wanted = todo.pop()  # wanted: the extras asked of the package that requires req
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (*wanted, "")):
            continue
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        requires = importlib.metadata.requires(key[0]) or []
        todo += [(Requirement(dep), req.extras) for dep in requires]
    return {name for name, _ in seen}


def extra_names(extras: dict[str, list[str]], extra: str) -> set[str]:
    """The names an extra installs, through the extras of this package it names."""
    names = set()
    for dep in map(Requirement, extras[extra]):
        if dep.name == "dissemination":
            names |= set().union(*(extra_names(extras, e) for e in dep.extras))
        else:
            names.add(canonicalize_name(dep.name))
    return names


def test_console_script_runs_the_cli():
    """`dissemination` is declared and resolves to the CLI's main, which parses and runs."""
    target = PYPROJECT["project"]["scripts"]["dissemination"]
    assert target == "dissemination.__main__:main"
    module, _, attr = target.partition(":")
    main = getattr(importlib.import_module(module), attr)
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0


def test_runtime_requirements_hold_no_test_tool():
    """Neither requirements.txt nor anything it pulls in is a test tool; the test file adds them
    on top of the runtime set, and the Dockerfile installs the runtime file only."""
    _, runtime = requirements("requirements.txt")
    included, tests = requirements("requirements-test.txt")
    assert included == ["requirements.txt"]
    assert TEST_TOOLS <= set(tests)
    assert not TEST_TOOLS & closure(runtime.values())
    dockerfile = (REPO / "Dockerfile").read_text()
    installs = re.findall(r"pip install[^\n]*", dockerfile)
    assert installs and all("requirements-test" not in line for line in installs)
    assert not TEST_TOOLS & {canonicalize_name(w) for line in installs for w in line.split()}


def test_pins_match_the_constraints():
    """Each pin in requirements*.txt is the version constraints.txt resolves, and installed."""
    constraints = requirements("constraints.txt")[1]
    for name in ("requirements.txt", "requirements-test.txt"):
        for package, req in requirements(name)[1].items():
            assert str(req.specifier) == str(constraints[package].specifier), (name, package)
            assert req.specifier.contains(importlib.metadata.version(package)), package


def test_declared_dependencies_are_in_the_image():
    """What pyproject.toml says the domain needs, the runtime requirements install; its test
    extra holds the test tools, its main dependencies none."""
    project = PYPROJECT["project"]
    domain = {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}
    assert domain <= closure(requirements("requirements.txt")[1].values())
    assert not domain & TEST_TOOLS
    assert TEST_TOOLS <= extra_names(project["optional-dependencies"], "tests")
    assert set(project["optional-dependencies"]) >= {"tests", "s3", "demo"}


def test_built_package_is_the_domain_with_its_data(tmp_path):
    """What setuptools builds into the wheel: every tracked file of plugins/dissemination (the
    migrations' folder without __init__.py too), data files by pattern, and none of the Airflow
    plugins nor bytecode."""
    tracked = subprocess.run(["git", "ls-files", "plugins"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in ("pyproject.toml", "README.md", *tracked):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    data = tmp_path / "plugins/dissemination/ledger/migrations/script.py.mako"
    data.write_text("a data file a later move may add\n")
    (tmp_path / "plugins/dissemination/__pycache__").mkdir(exist_ok=True)
    (tmp_path / "plugins/dissemination/__pycache__/ids.cpython-311.pyc").write_bytes(b"")
    # build_py is the wheel's package step; run offline with the venv's own setuptools.
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q",
                    "build_py", "--build-lib", str(tmp_path / "out")], cwd=tmp_path,
                   capture_output=True, check=True)
    built = {p.relative_to(tmp_path / "out").as_posix()
             for p in (tmp_path / "out").rglob("*") if p.is_file()}
    expected = {f.removeprefix("plugins/") for f in tracked
                if f.startswith("plugins/dissemination/")}
    assert built == expected | {"dissemination/ledger/migrations/script.py.mako"}
    assert any(f.startswith("dissemination/ledger/migrations/versions/") for f in built)
