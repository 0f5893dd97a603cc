"""Safe dissemination of DTM survey rounds to partners under data-sharing agreements.

This package is the domain: policy models, classification, packaging, delivery and the ledger.
It never imports Airflow, so every rule can be tested by calling plain functions; the DAGs in
``dags/`` only wire these functions together. Each concept is a package whose root declares its
names (``__all__``) and loads a name's module on first use (``_exports.py``), so importing a root
is free; the foundations every package shares (errors, round ids, IOM categories) live here.
"""

from ._exports import lazy_exports

__version__ = "0.1.0"

__getattr__, __all__ = lazy_exports(__name__, {
    "classification": ("CATEGORIES_BY_URGENCY", "Classification", "DisseminationCategory",
                       "Urgency"),
    "errors": ("PermanentError",),
    "ids": ("ROUND_ID_PATTERN", "InvalidRoundId", "check_round_id"),
})
