"""Small inputs several test files build the same way: a round as exported, a ledger row.

Kept here rather than imported from one test module into another, so each test file runs alone.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from dissemination.intake.source import RoundMeta
from dissemination.ledger.records import DeliveryRecord

META = RoundMeta("NGA-R007-partial", "NGA", "partial", datetime(2026, 11, 20, tzinfo=UTC))


PHONE = "+234 803 555 0199"


def contract_round(n: int = 6, **columns) -> pd.DataFrame:
    """A small NGA round as an export would hold it (text cells); ``columns`` override."""
    base = {
        "round_id": [META.round_id] * n,
        "site_id": [f"NGA-S{i:05d}" for i in range(1, n + 1)],
        "site_name": [f"Bakassi camp {i}" for i in range(1, n + 1)],
        "admin1_pcode": ["NG008"] * n,
        "admin2_pcode": ["NG008001"] * n,
        "collected_on": ["2026-11-20"] * n,
        "idp_individuals": [str(100 + i) for i in range(n)],
        "feeling_of_safety": ["some_feel_safe"] * n,
        "armed_actors_military": ["no"] * n,
        "ki_phone": [PHONE] * n,
    }
    return pd.DataFrame({**base, **columns})


def delivery_record(**overrides) -> DeliveryRecord:
    values = dict(
        agreement_id="unicef-nga", organisation="UNICEF Nigeria", recipient="primary",
        focal_point_name="Aisha Bello",
        focal_point_email="cp@unicef.example.org", round_id="NGA-R001-partial", country="NGA",
        urgency="medium", level="site", rules_version="2026.11",
        columns=DeliveryRecord.columns_json([{"name": "site_id", "source": "site_id",
                                              "classification": "public", "rule": "r"}]),
        row_count=10, content_sha256="a" * 64, package_sha256="b" * 64, package_name="p.zip",
        destination="sftp_unicef_nga:in", remote_path="in/p.zip",
        delivered_at=datetime(2026, 11, 2, 9, 30, tzinfo=UTC), run_id="run-1",
    )
    values.update(overrides)
    return DeliveryRecord(**values)
