"""The Dissemination page: per country and agreement, what was delivered to whom and when, how
fresh each tier is, which urgent windows were met or missed, what awaits a retry or was refused,
which passwords await a phone call, which risk assessments are due, and whether the ledger's
hash chain holds. Each delivery links to its DAG run and to its manifest explanation.

Never a data value, never a password: the ledger holds neither. Plugin routes get no auth unless
they ask for it, so every route asks Airflow's auth manager twice. First for the right to read
the runs of the pipeline's own DAGs, named here: never a DAG id the request carries (Airflow's
``requires_access_dag`` without one takes ``dag_id`` from the query string, the caller's pick).
Then, per country, for the custom view ``Dissemination:<ISO3>``: a reader sees only the
countries granted. Anonymous: 401; a forged token or a right missing: 403.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from dissemination.ledger import (
    ChainKeyError,
    Ledger,
    LedgerNeedsUpgrade,
    LedgerUnavailable,
    parse_anchor,
    verify,
    verify_since,
)
from dissemination.overview import LedgerView, build_overview, countries_of
from dissemination_airflow import (
    LEDGER_DB_CONN_ID,
    audit_anchor,
    audit_failure,
    current_policy,
    engine,
)
from dissemination_ui.dissemination_ui_plugin import URL_PREFIX

#: The DAG whose runs deliver each tier (the ledger keeps the run id).
DAG_FOR_URGENCY = {"medium": "urgent_dissemination", "low": "monthly_dissemination"}
#: The custom view a country's page is, to the auth manager: ``Dissemination:NGA``.
PAGE_RESOURCE = "Dissemination"
TEMPLATES = Path(__file__).resolve().parent / "templates"
ISO3 = re.compile(r"[A-Z]{3}")

app = FastAPI(title="Dissemination", docs_url=None, redoc_url=None, openapi_url=None,
              dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN,
                                                        param_dag_id=dag_id))
                            for dag_id in DAG_FOR_URGENCY.values()])


def page_resource(country: str) -> str:
    """The auth manager's name for one country's page, e.g. ``Dissemination:NGA``.

    One resource per country, so that FAB roles or Keycloak policies grant countries one by one
    (FAB: the permission ``can_read`` on it)."""
    return f"{PAGE_RESOURCE}:{country}"


class Reader:
    """The caller, and which countries' pages the auth manager lets them read.

    Each country is asked once per request: with Keycloak a check is a round trip."""

    def __init__(self, user) -> None:
        self.user = user
        self._granted: dict[str, bool] = {}

    def may_read(self, country: str) -> bool:
        if country not in self._granted:
            self._granted[country] = get_auth_manager().is_authorized_custom_view(
                method="GET", resource_name=page_resource(country), user=self.user)
        return self._granted[country]

    def require(self, country: str) -> None:
        """403 unless the caller may read ``country``'s page."""
        if not self.may_read(country):
            raise HTTPException(status_code=403, detail=(
                f"you may not read country {country}: the auth manager does not grant you "
                f"{page_resource(country)!r}"))


def _reader(user: GetUserDep) -> Reader:
    return Reader(user)


ReaderDep = Annotated[Reader, Depends(_reader)]


class LedgerNotReadable(HTTPException):
    def __init__(self, why: str):
        super().__init__(status_code=503, detail=f"the ledger cannot be read: {why}")


def read_overview(reader: Reader, country: str | None = None):
    """What the page shows ``reader``: every country granted, or ``country`` alone.

    Policy, ledger and audit are read through the same helpers as the DAGs' tasks; for one
    country only its deliveries are read. The hash chain is checked from the head the last
    passing daily audit verified (years of history take seconds to hash, on every load); the
    whole of it before any audit has passed, or while the last one stands failed. A country not
    granted is a 403 before it is looked up (whether it exists is not the reader's to learn);
    an unknown one a 404 naming those the reader has."""
    policy = current_policy()
    readable = [c for c in countries_of(policy) if reader.may_read(c)]
    if country is not None:
        _check_country(reader, country, readable)
    elif not readable:
        raise HTTPException(status_code=403, detail=(
            "no country's page is granted to you: the auth manager grants each as the custom "
            f"view {page_resource('<ISO3>')!r}"))
    ledger_engine = engine(LEDGER_DB_CONN_ID)
    now = datetime.now(UTC)
    alone = country or (readable[0] if len(readable) == 1 else None)
    try:
        view = LedgerView.read(Ledger(ledger_engine), now, policy, alone)
        anchor = audit_anchor()
        if anchor and not audit_failure():
            audit = verify_since(ledger_engine, parse_anchor(anchor))
        else:
            audit = verify(ledger_engine, parse_anchor(anchor) if anchor else None)
    except (LedgerNeedsUpgrade, LedgerUnavailable, ChainKeyError) as exc:  # (never the key)
        raise LedgerNotReadable(str(exc)) from None
    return build_overview(policy, view, now, audit, country, readable)


def _check_country(reader: Reader, country: str, readable: list[str]) -> None:
    if not ISO3.fullmatch(country):  # never echoed: it is the caller's text
        raise HTTPException(status_code=404, detail="a country is its ISO3 code, e.g. NGA")
    reader.require(country)
    if country not in readable:
        raise HTTPException(status_code=404, detail=(
            f"no rule set or agreement names country {country!r}; yours: "
            f"{', '.join(readable) or 'none'}"))


def _templates():
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
def page(request: Request, reader: ReaderDep, country: str | None = None) -> HTMLResponse:
    """Every country the reader may read, or ``?country=NGA`` alone.

    A country's coordinators read theirs, and at a thousand agreements one country's page reads
    a twentieth of the ledger."""
    return HTMLResponse(render_page(read_overview(reader, country), _airflow_root(request)))


@app.get("/api/overview")
def overview_json(reader: ReaderDep, country: str | None = None) -> dict:
    """The page's figures as JSON (for scripts and the tests), ``?country=`` as the page."""
    return asdict(read_overview(reader, country))


@app.get("/deliveries/{delivery_id}", response_class=HTMLResponse)
def delivery(delivery_id: int, request: Request, reader: ReaderDep) -> HTMLResponse:
    """One delivery's manifest explanation, to a reader of its country only.

    Every column shared, its classification and the rule that decided it, row count and hashes:
    what the package's manifest.json says."""
    found = Ledger(engine(LEDGER_DB_CONN_ID)).numbered(delivery_id)
    if not found:
        raise HTTPException(status_code=404, detail=f"no delivery {delivery_id} in the ledger")
    _, record = found[0]
    reader.require(record.country)
    return HTMLResponse(_templates().get_template("delivery.html").render(
        d=record, delivery_id=delivery_id, columns=json.loads(record.columns),
        root=_airflow_root(request), dag_id=DAG_FOR_URGENCY.get(record.urgency)))
