"""The Dissemination page in the Airflow UI: a FastAPI app mounted by the api-server (see
``dissemination_ui_plugin.py``). Every route requires the right to read DAGs, checked by
Airflow's own auth manager; the figures come from the ledger through ``dissemination.overview``."""
