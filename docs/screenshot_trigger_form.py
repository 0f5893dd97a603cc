"""Regenerate docs/trigger-form.png: the urgent DAG's trigger form in the Airflow UI.

Needs Debian's chromium and `pip install playwright` (not a project dependency: docs only).

    PYTHONPATH=plugins .venv/bin/python docs/screenshot_trigger_form.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    import httpx
    from airflow_services import api_ok, wait_for
    from playwright.sync_api import sync_playwright
    from test_scheduler import Standalone

    from dissemination.devkit.local_sftp import free_port
    from dissemination.devkit.sandbox import Sandbox

    with tempfile.TemporaryDirectory() as tmp, Sandbox(Path(tmp)) as box:
        box.init(sites=30)
        server = Standalone(box, free_port())
        server.start()
        try:
            base = f"http://127.0.0.1:{server.port}"
            api = httpx.Client(base_url=f"{base}/api/v2", timeout=30)
            wait_for("api-server", lambda: api_ok(api, "/monitor/health"), timeout=180)
            wait_for("the DAG", lambda: api_ok(api, "/dags/urgent_dissemination"))
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{base}/dags/urgent_dissemination")
                page.get_by_role("button", name="Trigger").first.click()
                page.get_by_text("Justification").first.wait_for()
                page.wait_for_timeout(1500)  # let the modal finish its animation
                page.screenshot(path=str(REPO / "docs" / "trigger-form.png"))
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
