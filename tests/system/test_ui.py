"""The Dissemination page in a real ``airflow api-server`` with Airflow's own login, read by
Debian's Chromium through Playwright.

The ledger holds a real urgent run's deliveries (``airflow dags test``) plus a refused delivery,
a missed window and a rotated password written the way the pipeline writes them; the page's
figures are checked against ``build_overview`` over the same ledger. The api-server's auth
manager grants rights per DAG and per country (``per_resource_auth_manager``), as FAB or
Keycloak would: SimpleAuthManager lets every reader read everything, so it could not show a
right missing. Set ``DISSEMINATION_SCREENSHOTS=docs`` to refresh the docs' screenshot
(``make screenshots``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from airflow_services import SUPPORT, Service, airflow_path, api_ok, wait_for
from conftest import POLICY_DIR
from per_resource_auth_manager import EVERYTHING, GRANTS_ENV

from dissemination.devkit.local_sftp import free_port
from dissemination.devkit.sandbox import Sandbox
from dissemination.ledger.audit import verify
from dissemination.ledger.records import DeliveryFailure
from dissemination.overview.page import LedgerView, build_overview

# System tier: Airflow runs a DAG, then serves the page to httpx and Chromium.
pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "officer", "officer-password-for-tests"
CONF = {"country": "NGA", "justification": "UI test: a real urgent run fills the ledger"}
PIPELINE = ["urgent_dissemination", "monthly_dissemination"]
ROUTES = ["/dissemination/", "/dissemination/api/overview", "/dissemination/deliveries/1"]
#: What each login may read. The forger reads one other DAG and every country: only the check
#: of the pipeline's own DAGs stands between it and the page.
GRANTS = {
    USER: EVERYTHING,
    "nga": {"dags": PIPELINE, "views": ["Dissemination:NGA"]},
    "ssd": {"dags": PIPELINE, "views": ["Dissemination:SSD"]},
    "forger": {"dags": ["round_intake"], "views": ["Dissemination:NGA", "Dissemination:SSD"]},
    "stranger": {"dags": PIPELINE, "views": []},
}


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A sandbox after one real urgent run, and its api-server with a viewer login."""
    home = tmp_path_factory.mktemp("ui")
    box = Sandbox(home, POLICY_DIR)
    with box:
        box.init(sites=40, seed=5)
        result = box.run_urgent(CONF)
        assert result.returncode == 0, result.stdout[-3000:]
    ledger = box.ledger()
    now = datetime.now(UTC)
    ledger.record_failure(DeliveryFailure(
        "unicef-ssd", "SSD-R001-partial", "medium", "main", "Deng Garang", "manual__ui-test",
        now, True, "AgreementRefused: not uploaded: agreement unicef-ssd expired on 2027-02-28"))
    ledger.alert_once("missed", "NGA-R000-partial/protection-cluster-nga", now)
    ledger.record_rotation("unicef-nga", "package_password_unicef_nga", now,
                           "Aisha Bello (+234 800 000 0001)")
    _hold_a_site(box, ledger, now)
    passwords, grants = home / "passwords.json", home / "grants.json"
    passwords.write_text(json.dumps({user: _password(user) for user in GRANTS}))
    grants.write_text(json.dumps(GRANTS))
    port = free_port()
    env = box.env()
    server = Service(["api-server", "--port", str(port)], {
        **env,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), env["PYTHONPATH"]]),
        "AIRFLOW__CORE__AUTH_MANAGER": "per_resource_auth_manager.PerResourceAuthManager",
        GRANTS_ENV: str(grants),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:viewer" for u in GRANTS),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "PATH": airflow_path(),
    }, home / "api-server.log")
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for("the api-server", lambda: api_ok(httpx.Client(base_url=base, timeout=10),
                                                   "/api/v2/monitor/health"), timeout=180)
        yield box, base
    finally:
        server.stop()
        print(server.tail(4000))


def _hold_a_site(box, ledger, now) -> None:
    """A site the registry holds for review, as a run's package step holds it (the registry
    on, as shipped): its key informant's name where its name goes."""
    import pandas as pd

    from dissemination.policy.sites import SiteRegistry
    from dissemination.registry.store import hold_out

    ruleset = box.policy.rulesets["NGA"].model_copy(update={"site_registry": SiteRegistry()})
    hold_out(pd.DataFrame({"site_id": ["NGA-S09999"], "site_name": ["Musa Bello"]}),
             "NGA-R001-partial", ruleset, ledger, now)


def _password(user: str) -> str:
    return PASSWORD if user == USER else f"{user}-password-for-tests"


def _token(base: str, user: str = USER) -> str:
    reply = httpx.post(f"{base}/auth/token", json={"username": user, "password": _password(user)})
    reply.raise_for_status()
    return reply.json()["access_token"]


def _as(base: str, user: str) -> httpx.Client:
    """A client that reads as ``user`` (a bearer token from Airflow's own login)."""
    return httpx.Client(base_url=base, timeout=30,
                        headers={"Authorization": f"Bearer {_token(base, user)}"})


@pytest.mark.parametrize("path", ROUTES)
def test_every_route_refuses_anonymous_and_forged_requests(ui, path):
    _, base = ui
    assert httpx.get(base + path).status_code == 401
    forged = httpx.get(base + path, headers={"Authorization": "Bearer not.a.token"})
    assert forged.status_code == 403
    ok = httpx.get(base + path, headers={"Authorization": f"Bearer {_token(base)}"})
    assert ok.status_code == 200, ok.text[:500]


def test_the_figures_are_the_ledgers(ui):
    box, base = ui
    got = httpx.get(f"{base}/dissemination/api/overview",
                    headers={"Authorization": f"Bearer {_token(base)}"}).json()
    ledger, now = box.ledger(), datetime.now(UTC)
    expected = build_overview(box.policy, LedgerView.read(ledger, now), now, verify(ledger.engine))
    assert got["totals"] == expected.totals
    assert got["audit"]["ok"] is True
    pages = {(c["country"], a["agreement_id"]): a
             for c in got["countries"] for a in c["agreements"]}
    for country in expected.countries:
        for a in country.agreements:
            page = pages[(country.country, a.agreement_id)]
            assert [(d["delivery_id"], d["round_id"]) for t in page["tiers"] for d in t["last"]] \
                == [(d.delivery_id, d.round_id) for t in a.tiers for d in t.last]
    unicef = pages[("NGA", "unicef-nga")]
    assert {d["recipient"].split(":")[0] for t in unicef["tiers"] for d in t["last"]} == {
        "primary", "field"}
    assert [r["focal_point_to_tell"] for r in unicef["awaiting_call"]] == [
        "Aisha Bello (+234 800 000 0001)"]
    assert [p["state"] for p in pages[("SSD", "unicef-ssd")]["problems"]] == ["refused"]
    held = [h for c in got["countries"] for h in c["held_sites"]]
    assert [(h["country"], h["site_key"], h["reason"]) for h in held] == [
        ("NGA", "NGA-S09999", "not in the registry")]
    text = json.dumps(got)
    assert "Musa Bello" not in text  # the registry's sites by key only
    password = box.password("package_password_unicef_nga")
    assert password not in text  # nor any value of the round: the ledger holds none


def test_a_page_per_country(ui):
    """``?country=NGA``: the same section as on the whole page, links to every country; an
    unknown one is a 404 naming it."""
    box, base = ui
    auth = {"Authorization": f"Bearer {_token(base)}"}
    url = f"{base}/dissemination/api/overview"
    whole = httpx.get(url, headers=auth).json()
    nga = httpx.get(url, params={"country": "NGA"}, headers=auth).json()
    assert [c["country"] for c in nga["countries"]] == ["NGA"]
    assert nga["countries"] == [c for c in whole["countries"] if c["country"] == "NGA"]
    assert nga["all_countries"] == [c["country"] for c in whole["countries"]]
    unknown = httpx.get(url, params={"country": "XYZ"}, headers=auth)
    assert unknown.status_code == 404 and "'XYZ'" in unknown.json()["detail"]
    page = httpx.get(f"{base}/dissemination/", params={"country": "NGA"}, headers=auth).text
    assert 'data-country="NGA"' in page and 'data-country="SSD"' not in page
    assert 'data-site="NGA-S09999"' in page and "Musa Bello" not in page
    assert 'href="./?country=SSD"' in page and 'href="./"' in page


def test_the_page_checks_the_chain_from_the_last_passing_audits_head(ui):
    """After a passing daily audit the page hashes only what was chained since its head; while
    the last audit stands failed, the whole chain again."""
    import sqlalchemy as sa

    from dissemination.ledger.tables import audit_chain

    box, base = ui
    engine = box.ledger().engine
    seq = verify(engine).head_seq - 2  # as if the audit had run two entries ago
    with engine.connect() as conn:
        digest = conn.execute(sa.select(audit_chain.c.chain_sha256)
                              .where(audit_chain.c.seq == seq)).scalar_one()

    def audit() -> dict:
        return httpx.get(f"{base}/dissemination/api/overview",
                         headers={"Authorization": f"Bearer {_token(base)}"}).json()["audit"]

    try:
        box.airflow("variables", "set", "ledger_audit_anchor", f"{seq}:{digest[:16]}")
        since = audit()
        assert since["ok"] and f"2 chained row(s) since seq {seq} " in since["line"], since
        box.airflow("variables", "set", "ledger_audit_failed", "ledger verify FAILED at ...")
        whole = audit()
        assert whole["ok"] and whole["line"] == verify(engine, (seq, digest)).line(), whole
        assert "since seq" not in whole["line"]
    finally:
        for variable in ("ledger_audit_anchor", "ledger_audit_failed"):
            box.airflow("variables", "delete", variable, check=False)


@pytest.mark.parametrize("path", ROUTES)
def test_a_dag_id_in_the_query_string_grants_nothing(ui, path):
    """The page asks for the pipeline's own DAGs, whatever the request names.

    Airflow's ``requires_access_dag`` without a DAG id checks the one in ``?dag_id=``: a reader
    of any one DAG would read the page."""
    box, base = ui
    assert box.ledger().numbered(1)[0][1].country == "NGA"
    with _as(base, "forger") as forger, _as(base, "nga") as nga:
        for query in ({"dag_id": "round_intake"}, {}):
            refused = forger.get(path, params=query)  # Airflow's own refusal of the DAGs
            assert (refused.status_code, refused.json()) == (403, {"detail": "Forbidden"}), query
            assert nga.get(path, params=query).status_code == 200, query


def test_a_coordinator_reads_their_country_and_nothing_of_another(ui):
    """NGA's coordinator reads NGA alone, and gets 403 for any other country's page or delivery.

    Countries are rights, not a filter: the whole page shows NGA only, and a country that does
    not exist is a 403 too (its 404 would list the countries)."""
    box, base = ui
    ledger, now = box.ledger(), datetime.now(UTC)
    with _as(base, "nga") as nga, _as(base, "ssd") as ssd, _as(base, USER) as officer:
        whole = nga.get("/dissemination/api/overview").json()
        assert [c["country"] for c in whole["countries"]] == whole["all_countries"] == ["NGA"]
        everyone = officer.get("/dissemination/api/overview").json()
        assert whole["countries"] == [c for c in everyone["countries"] if c["country"] == "NGA"]
        assert everyone["totals"]["refused"] == 1 and whole["totals"] == build_overview(
            box.policy, LedgerView.read(ledger, now), now, readable=["NGA"]).totals
        alone = nga.get("/dissemination/api/overview", params={"country": "NGA"}).json()
        assert alone["countries"] == whole["countries"]
        page = nga.get("/dissemination/").text
        assert 'data-country="NGA"' in page
        for shown in (json.dumps(whole), page):  # SSD's refusal, its focal point, its name
            assert "SSD" not in shown and "Deng Garang" not in shown
        for other in ("SSD", "BFA", "XYZ"):  # XYZ's 404 would list every country
            for path in ROUTES[:2]:
                refused = nga.get(path, params={"country": other})
                assert refused.status_code == 403, (other, path, refused.text[:300])
                assert f"'Dissemination:{other}'" in refused.json()["detail"]
        assert "SSD" not in nga.get(ROUTES[1], params={"country": "XYZ"}).text
        delivery = next(i for i, d in ledger.numbered() if d.country == "NGA")
        assert nga.get(f"/dissemination/deliveries/{delivery}").status_code == 200
        assert ssd.get(f"/dissemination/deliveries/{delivery}").status_code == 403
        assert ssd.get("/dissemination/api/overview").json()["totals"]["refused"] == 1


@pytest.mark.parametrize("path", ROUTES[:2])
def test_a_reader_of_no_country_reads_no_page(ui, path):
    """Reading the pipeline's DAGs is not enough: an empty page would still show the audit."""
    _, base = ui
    with _as(base, "stranger") as stranger:
        for query in ({}, {"dag_id": "urgent_dissemination"}):
            refused = stranger.get(path, params=query)
            assert refused.status_code == 403 and "no country" in refused.json()["detail"]
    assert httpx.get(base + path).status_code == 401


def test_an_officer_logs_in_and_reads_the_page_in_chromium(ui, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    box, base = ui
    ledger, now = box.ledger(), datetime.now(UTC)
    rows = ledger.numbered()
    expected = build_overview(box.policy, LedgerView.read(ledger, now), now)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{base}/plugin/dissemination")
            page.locator("input[name=username]").fill(USER)
            page.locator("input[name=password]").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r".*/plugin/dissemination$"))
            frame = page.frame_locator("iframe")
            for key in ("windows_met", "windows_missed", "refused", "awaiting_call"):
                expect(frame.locator(f"[data-total='{key}'] b")).to_have_text(
                    str(expected.totals[key]))
            agreement = frame.locator("[data-agreement='unicef-nga']").first
            for _, record in rows:
                if record.agreement_id == "unicef-nga":
                    expect(agreement).to_contain_text(record.focal_point_name)
            expect(frame.locator("#audit")).to_contain_text("ok")
            run_link = agreement.locator("a.run").first
            run_id = next(r.run_id for _, r in rows if r.agreement_id == "unicef-nga")
            assert run_link.get_attribute("href") == \
                f"/dags/urgent_dissemination/runs/{quote(run_id, safe='')}"
            page.screenshot(path=str(tmp_path / "dissemination-page.png"), full_page=True)
            agreement.locator("a.manifest").first.click()
            expect(frame.locator("#columns")).to_contain_text("Classification")
            expect(frame.locator("#columns")).not_to_contain_text("ki_phone")
        finally:
            browser.close()
    if os.environ.get("DISSEMINATION_SCREENSHOTS"):
        target = REPO / os.environ["DISSEMINATION_SCREENSHOTS"] / "dissemination-page.png"
        shutil.copyfile(tmp_path / "dissemination-page.png", target)


def test_the_page_lists_where_a_country_departs_from_the_default_with_its_reason(ui):
    """The tests' NGA rules make primary_need urgent, against the default, with a reason: the
    country's section says so, as ``check`` does."""
    box, base = ui
    auth = {"Authorization": f"Bearer {_token(base)}"}
    page = httpx.get(f"{base}/dissemination/", params={"country": "NGA"}, headers=auth).text
    (listed,) = re.findall(r'<ul class="small overrides">(.*?)</ul>', page, re.S)
    assert "<li>NGA: primary_need: public/monthly -&gt; public/urgent (The food" in listed
    ssd = httpx.get(f"{base}/dissemination/", params={"country": "SSD"}, headers=auth).text
    assert "NGA: primary_need" not in ssd
