"""Safe dissemination of DTM survey rounds to partners under data-sharing agreements.

This package is the domain: policy models, classification, packaging, delivery and the ledger.
It never imports Airflow, so every rule can be tested by calling plain functions; the DAGs in
``dags/`` only wire these functions together.
"""

__version__ = "0.1.0"
