# The two commands of the README: `make demo` and `make test`. Everything else supports them
# (`make ui` and `make serve` keep the demo's sandbox running for a look around).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/plugins
export GX_ANALYTICS_ENABLED := false

.PHONY: demo ui serve test test-fast test-services check bench constraints clean screenshots

# The development venv: runtime, demo and test requirements (the Docker image takes runtime only),
# then the domain itself, editable, for the `dissemination` command and imports from anywhere.
$(VENV)/.installed: requirements.txt requirements-test.txt constraints.txt pyproject.toml
	@sh scripts/prerequisites.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt -c constraints.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

## Run the urgent dissemination DAG end to end on embedded defaults (SQLite, local SFTP: OpenSSH
## sshd when installed, else pure Python).
demo: $(VENV)/.installed
	$(PY) -m dissemination.devkit.sandbox --home .demo

## The same sandbox under Airflow's UI (api-server, scheduler, dag-processor) until Ctrl-C.
ui: $(VENV)/.installed
	$(PY) -m dissemination.devkit.sandbox --home .demo --ui

## The sandbox's SFTP and SMTP servers only, until Ctrl-C: for `airflow dags test` by hand.
serve: $(VENV)/.installed
	$(PY) -m dissemination.devkit.sandbox --home .demo --serve

## Lint, validate the policy files, check the docs' house limits, then run every test.
test: test-services $(VENV)/.installed check
	$(PY) -m ruff check .
	$(PY) scripts/doc_limits.py
	$(PY) -m pytest

## What the whole suite needs: OpenSSH, 7-Zip, Chromium, Redis installed (when root) and
## PostgreSQL and Redis started when down; otherwise one line naming what to install.
test-services:
	@bash scripts/test-services.sh

## Lint, check the docs' house limits, then every test that needs no service, tool or Airflow run
## (not marked integration or system): no sshd, PostgreSQL, Redis, 7z or Chromium needed. One
## pytest worker per core (pytest-xdist), each property on a quarter of its examples (the
## `fast` Hypothesis profile; `make test` runs them all): under a minute on two idle cores.
test-fast: export HYPOTHESIS_PROFILE ?= fast
test-fast: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) scripts/doc_limits.py
	$(PY) -m pytest -m "not integration and not system" -q -n auto

## Validate every policy file under include/.
check: $(VENV)/.installed
	$(VENV)/bin/dissemination check

## Benchmarks (ratios against references measured in the same run); then the committed summary
## (bench/results/) and the table of docs/benchmarks.md rendered from it.
bench: $(VENV)/.installed
	AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING $(PY) bench/dag_parse.py
	$(PY) bench/engine.py
	$(PY) bench/disclosure_cost.py
	$(PY) bench/policy_load.py
	$(PY) bench/sftp.py
	$(PY) bench/package.py
	$(PY) bench/notify.py
	$(PY) bench/deliver.py
	$(PY) bench/overview.py
	$(PY) bench/urgent.py --quick
	$(PY) bench/pull.py
	$(PY) bench/monthly.py
	mkdir -p bench/results
	cp bench/out/summary.json bench/results/summary.json
	$(PY) scripts/bench_table.py bench/results/summary.json

## Refresh the screenshot of the Dissemination page in docs/operations.md (the browser test, saving it to docs/).
screenshots: $(VENV)/.installed
	DISSEMINATION_SCREENSHOTS=docs $(PY) -m pytest -q tests/system/test_ui.py -k chromium

constraints:
	$(PY) -m pip freeze --exclude-editable | sed '1i # Full resolved dependency set (pip freeze of a working install). Regenerate after changing\n# requirements.txt or requirements-test.txt: make constraints' > constraints.txt

clean:
	rm -rf .demo .pytest_cache
