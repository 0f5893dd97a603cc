"""Registers the Dissemination page: the app under /dissemination and a "Dissemination" entry in
the UI's navigation that shows it inside Airflow (an iframe on the same origin, so the browser's
Airflow session cookie authenticates it)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from dissemination_ui.app import URL_PREFIX, app


class DisseminationPagePlugin(AirflowPlugin):
    name = "dissemination_page"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Dissemination"}]
    external_views = [{
        "name": "Dissemination",
        "href": f"{URL_PREFIX.lstrip('/')}/",
        "url_route": "dissemination",
        "destination": "nav",
        "category": "browse",
    }]
