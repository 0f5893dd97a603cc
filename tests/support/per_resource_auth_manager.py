"""An Airflow auth manager that grants read rights per DAG and per custom view, for the tests.

SimpleAuthManager lets every reader read every DAG and every custom view, so it cannot show a
right that is missing. FAB and Keycloak grant per resource, as this does without their database
or server: SimpleAuthManager's users, logins and tokens, and a table (JSON, named by
``GRANTS_ENV``) of what each user may read. The api-server loads it from
``AIRFLOW__CORE__AUTH_MANAGER=per_resource_auth_manager.PerResourceAuthManager`` with tests/ on
its PYTHONPATH.

    {"nga": {"dags": ["urgent_dissemination"], "views": ["Dissemination:NGA"]}, "admin": "*"}

``"*"`` grants everything, as FAB's Admin role; anyone else reads only what is listed, and
writes nothing. A DAG check without a DAG id asks for every DAG (FAB's "DAGs" resource).
"""

from __future__ import annotations

import json
import os

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

GRANTS_ENV = "DISSEMINATION_TEST_GRANTS"
EVERYTHING = "*"


class PerResourceAuthManager(SimpleAuthManager):
    """SimpleAuthManager's logins, with DAGs and custom views granted one by one."""

    @staticmethod
    def _grants(user) -> dict | str:
        """Read on every check, so that a test may change a right without a restart."""
        with open(os.environ[GRANTS_ENV], encoding="utf-8") as table:
            return json.load(table).get(user.get_name(), {})

    def _reads(self, user, method: str, kind: str, name: str | None) -> bool:
        grants = self._grants(user)
        if grants == EVERYTHING:
            return True
        return method == "GET" and name is not None and name in grants.get(kind, ())

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        return self._reads(user, method, "dags", details.id if details else None)

    def is_authorized_custom_view(self, *, method, resource_name, user) -> bool:
        return self._reads(user, method, "views", resource_name)
