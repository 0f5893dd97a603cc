"""The delivery ledger: deliveries, claims, rotations and alerts, the page's reads, the
keyed hash chain with its audit, and the schema's migrations.
"""

from .._exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "audit": ("LedgerAuditFailed", "Verified", "parse_anchor", "verify", "verify_since",),
    "chain": ("ChainKey", "ChainKeyError", "Head", "keyed", "newest_head",),
    "connection": ("require_schema",),
    "holdings": ("DisclosureState", "Held", "Holdings",),
    "migrations": ("upgrade",),
    "records": (
        "ClaimKey", "DeliveryFailure", "DeliveryRecord", "DeliverySummary",
        "LedgerNeedsUpgrade", "LedgerUnavailable", "MAIN_RECIPIENTS", "OpenClaim",
        "Rotation", "slot_of", "utc",
    ),
    "rows": ("insert_chained",),
    "store": ("Ledger",),
    "tables": ("intake_log", "site_registry", "sites_held",),
})
