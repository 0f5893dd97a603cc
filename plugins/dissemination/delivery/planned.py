"""A delivery as it moves from plan to ledger: small, JSON-friendly, free of values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..classification import Classification, Urgency
from ..classify.sensitivity import (
    ColumnDecision,
    Selection,
)
from ..policy import SITE


@dataclass(frozen=True)
class Delivery:
    """One agreement's share of one round, as it moves from plan to ledger."""

    agreement_id: str
    organisation: str  # display name, for people; history is keyed by organisation_id
    round_id: str
    country: str
    urgency: str
    decisions: tuple[dict, ...]
    organisation_id: str = ""
    # The policy the plan was made under: later steps refuse to act under another one.
    policy_sha256: str = ""
    rules_version: str = ""
    # planned -> packaged -> recorded; or refused, already_delivered, in_progress (another run)
    status: str = "planned"
    reason: str = ""
    package_path: str = ""
    content_sha256: str = ""
    package_sha256: str = ""
    row_count: int = 0
    remote_path: str = ""
    destination: str = ""  # "<sftp_conn_id>:<remote_dir>"
    explanation: tuple[str, ...] = field(default_factory=tuple)
    # Who receives it (Table C): "primary", "secondary" or "field:<name>" with their areas.
    recipient: str = "primary"
    recipient_name: str = ""
    recipient_email: str = ""
    areas: dict = field(default_factory=dict)
    # The secondary focal point, used if delivery to the primary fails permanently.
    fallback: dict = field(default_factory=dict)
    # Medium urgency: collection time + the agreement's window (ISO 8601), and whether kept.
    deadline: str = ""
    deadline_met: bool | None = None
    level: str = SITE
    exact_counts: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)
    columns: tuple[dict, ...] = field(default_factory=tuple)  # the package's output columns
    claim_id: int = 0  # the ledger's claim once recorded: its notice goes out once

    def to_xcom(self) -> dict:
        return asdict(self)

    @classmethod
    def from_xcom(cls, data: dict) -> Delivery:
        tuples = ("decisions", "explanation", "exact_counts", "warnings", "columns")
        return cls(**{**data, **{k: tuple(data.get(k, ())) for k in tuples}})

    @property
    def selection(self) -> Selection:
        decisions = tuple(
            ColumnDecision(**{**d, "classification": Classification(d["classification"]),
                              "notes": tuple(d.get("notes", ()))})
            for d in self.decisions
        )
        return Selection(self.agreement_id, Urgency(self.urgency), decisions, self.level,
                         self.exact_counts)
