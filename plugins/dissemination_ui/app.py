"""The Dissemination page: per country and agreement, what was delivered to whom and when, how
fresh each tier is, which urgent windows were met or missed, what awaits a retry or was refused,
which passwords await a phone call, which risk assessments are due, and whether the ledger's
hash chain holds. Each delivery links to its DAG run and to its manifest explanation.

Never a data value, never a password: the ledger holds neither. Every route requires the right
to read DAGs through Airflow's auth manager (plugin routes get no auth unless they ask for it):
an anonymous request gets 401, a forged token 403.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from dissemination_ui.dissemination_ui_plugin import URL_PREFIX

#: The DAG whose runs deliver each tier (the ledger keeps the run id).
DAG_FOR_URGENCY = {"medium": "urgent_dissemination", "low": "monthly_dissemination"}
TEMPLATES = Path(__file__).resolve().parent / "templates"

app = FastAPI(title="Dissemination", dependencies=[Depends(requires_access_dag(method="GET"))],
              docs_url=None, redoc_url=None, openapi_url=None)


class LedgerNotReadable(HTTPException):
    def __init__(self, why: str):
        super().__init__(status_code=503, detail=f"the ledger cannot be read: {why}")


def read_overview(country: str | None = None):
    """Policy, ledger and audit, read through the same helpers as the DAGs' tasks: every
    country, or ``country`` alone (its deliveries only are read). The hash chain is checked
    from the head the last passing daily audit verified (years of history take seconds to
    hash, on every load); the whole of it before any audit has passed, or while the last one
    stands failed. An unknown country is a 404 naming it."""
    from dissemination.audit import parse_anchor, verify, verify_since
    from dissemination.chain import ChainKeyError
    from dissemination.ledger import Ledger, LedgerNeedsUpgrade, LedgerUnavailable
    from dissemination.overview import LedgerView, build_overview, countries_of
    from dissemination_airflow import (
        LEDGER_DB_CONN_ID,
        audit_anchor,
        audit_failure,
        current_policy,
        engine,
    )

    policy = current_policy()
    if country is not None and country not in countries_of(policy):
        raise HTTPException(status_code=404, detail=(
            f"no rule set or agreement names country {country!r}; known: "
            f"{', '.join(countries_of(policy))}"))
    ledger_engine = engine(LEDGER_DB_CONN_ID)
    now = datetime.now(UTC)
    try:
        view = LedgerView.read(Ledger(ledger_engine), now, policy, country)
        anchor = audit_anchor()
        if anchor and not audit_failure():
            audit = verify_since(ledger_engine, parse_anchor(anchor))
        else:
            audit = verify(ledger_engine, parse_anchor(anchor) if anchor else None)
    except (LedgerNeedsUpgrade, LedgerUnavailable, ChainKeyError) as exc:  # (never the key)
        raise LedgerNotReadable(str(exc)) from None
    return build_overview(policy, view, now, audit, country)


def _templates():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = lambda d: "" if d is None else f"{d:%Y-%m-%d %H:%M} UTC"
    env.filters["q"] = lambda s: quote(str(s), safe="")
    return env


def _airflow_root(request: Request) -> str:
    """The UI's root as the browser sees it (behind a base URL too): links leave the iframe."""
    return request.scope.get("root_path", "").removesuffix(URL_PREFIX)


def render_page(overview, root: str) -> str:
    return _templates().get_template("page.html").render(o=overview, root=root,
                                                         dag_for=DAG_FOR_URGENCY)


@app.get("/", response_class=HTMLResponse)
def page(request: Request, country: str | None = None) -> HTMLResponse:
    """Every country, or ``?country=NGA`` alone: a country's coordinators read theirs, and
    at a thousand agreements one country's page reads a twentieth of the ledger."""
    return HTMLResponse(render_page(read_overview(country), _airflow_root(request)))


@app.get("/api/overview")
def overview_json(country: str | None = None) -> dict:
    """The page's figures as JSON (for scripts and the tests), ``?country=`` as the page."""
    return asdict(read_overview(country))


@app.get("/deliveries/{delivery_id}", response_class=HTMLResponse)
def delivery(delivery_id: int, request: Request) -> HTMLResponse:
    """One delivery's manifest explanation: every column shared, its classification and the
    rule that decided it, row count and hashes (what the package's manifest.json says)."""
    import json

    from dissemination.ledger import Ledger
    from dissemination_airflow import LEDGER_DB_CONN_ID, engine

    found = Ledger(engine(LEDGER_DB_CONN_ID)).numbered(delivery_id)
    if not found:
        raise HTTPException(status_code=404, detail=f"no delivery {delivery_id} in the ledger")
    _, record = found[0]
    return HTMLResponse(_templates().get_template("delivery.html").render(
        d=record, delivery_id=delivery_id, columns=json.loads(record.columns),
        root=_airflow_root(request), dag_id=DAG_FOR_URGENCY.get(record.urgency)))
