"""What the ledger keeps of a delivered package."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..ledger.records import (
    DeliveryRecord,
)
from .planned import Delivery


def delivery_record(delivery: Delivery, delivered_at: datetime, run_id: str) -> DeliveryRecord:
    deadline = datetime.fromisoformat(delivery.deadline) if delivery.deadline else None
    shared = [{k: c[k] for k in ("name", "source", "classification", "rule")}
              for c in delivery.columns]
    return DeliveryRecord(
        agreement_id=delivery.agreement_id,
        organisation=delivery.organisation,
        organisation_id=delivery.organisation_id,
        recipient=delivery.recipient,
        focal_point_name=delivery.recipient_name,
        focal_point_email=delivery.recipient_email,
        round_id=delivery.round_id,
        country=delivery.country,
        urgency=delivery.urgency,
        level=delivery.level,
        rules_version=delivery.rules_version,
        columns=DeliveryRecord.columns_json(shared),
        row_count=delivery.row_count,
        content_sha256=delivery.content_sha256,
        package_sha256=delivery.package_sha256,
        package_name=Path(delivery.package_path).name,
        destination=delivery.destination,
        remote_path=delivery.remote_path,
        delivered_at=delivered_at,
        run_id=run_id,
        deadline=deadline,
        deadline_met=None if deadline is None else delivered_at <= deadline,
    )
