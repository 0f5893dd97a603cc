"""Classify a round's columns (IOM Table A) and select what each agreement may receive.

Contextual, temporal and relational rules; a column no rule covers is Secret.
"""

from .._exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "sensitivity": (
        "ColumnDecision", "SecretLeak", "Selection", "active_relational", "classify_round",
        "select_for_agreement",
    ),
})
