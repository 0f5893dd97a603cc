"""Registers the Dissemination page: the app under /dissemination and a "Dissemination" entry in
the UI's navigation that shows it inside Airflow (an iframe on the same origin, so the browser's
Airflow session cookie authenticates it).

Every Airflow process loads every plugin (each task does, for macros), so this module imports
nothing heavy: the FastAPI app, Airflow's API security and Jinja are imported by the first
request to the page, in the api-server only.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/dissemination"


class LazyPage:
    """An ASGI app that imports and builds the page's FastAPI app on its first request."""

    def __init__(self) -> None:
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            from dissemination_ui.app import app

            self._app = app
        await self._app(scope, receive, send)


class DisseminationPagePlugin(AirflowPlugin):
    name = "dissemination_page"
    fastapi_apps = [{"app": LazyPage(), "url_prefix": URL_PREFIX, "name": "Dissemination"}]
    external_views = [{
        "name": "Dissemination",
        "href": f"{URL_PREFIX.lstrip('/')}/",
        "url_route": "dissemination",
        "destination": "nav",
        "category": "browse",
    }]
