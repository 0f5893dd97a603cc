"""include/agreements/<id>.yaml: what an organisation may receive, on which tier, where to."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from ..classification import Classification, Urgency
from .base import ColumnName, CountryCode, Identifier, PolicyModel

# --- agreements --------------------------------------------------------------------------------


class Tier(PolicyModel):
    indicators: tuple[ColumnName, ...] = Field(min_length=1)
    # Share counts per admin area (e.g. admin1) instead of per site.
    aggregate_to: Identifier | None = None
    # Count indicators shared exactly, without small-cell suppression (e.g. for the follow-up of
    # each unaccompanied child); Confidential agreements only.
    exact_counts: tuple[ColumnName, ...] = ()

    @model_validator(mode="after")
    def _exact_counts_are_requested(self) -> Tier:
        extra = sorted(set(self.exact_counts) - set(self.indicators))
        if extra:
            raise ValueError(f"exact_counts {extra} are not among the tier's indicators")
        return self


class MediumTier(Tier):
    """Raw partial data, shared before cleaning, within ``window_hours`` of collection."""

    window_hours: PositiveInt


class LowTier(Tier):
    """Cleaned data, on a schedule."""

    schedule: Literal["monthly"] = "monthly"


class Tiers(PolicyModel):
    medium: MediumTier | None = None
    low: LowTier | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Tiers:
        if self.medium is None and self.low is None:
            raise ValueError("an agreement needs at least one tier (medium or low)")
        return self

    def get(self, urgency: Urgency) -> Tier | None:
        return self.medium if urgency is Urgency.MEDIUM else self.low


class SftpDestination(PolicyModel):
    """An Airflow connection id (host, login, key and pinned host key live there) and a folder."""

    sftp_conn_id: Identifier
    # Path segments may not start with a dot: no "..", no hidden folders.
    remote_dir: str = Field(pattern=r"^/?[\w\-][\w.\-]*(/[\w\-][\w.\-]*)*/?$")


class PasswordPlan(PolicyModel):
    """Where the package password is kept (an Airflow Variable) and how often it changes."""

    variable: Identifier
    rotate_every_days: PositiveInt


class Organisation(PolicyModel):
    """include/organisations/<id>.yaml: who holds the data. Every agreement names one, and all
    disclosure history is keyed by this id: an organisation with several agreements (or tiers)
    is judged on everything it holds, and renaming it (``name``) changes nothing."""

    id: Identifier
    name: str = Field(min_length=1, max_length=200)
    # Organisations that are one holder with this one (e.g. a sector and its lead agency
    # sharing staff): a person may be a focal point of both, and everything either holds is
    # judged together. Declared in either file.
    same_holder_as: tuple[Identifier, ...] = ()


class Agreement(PolicyModel):
    id: Identifier
    organisation: Identifier  # include/organisations/<id>.yaml
    focal_points: Identifier
    purpose: str = Field(min_length=1)
    valid_from: date
    valid_until: date
    countries: tuple[CountryCode, ...] = Field(min_length=1)
    # Secret is not a choice: the type itself makes "agreement allows Secret" unrepresentable.
    max_classification: Literal[Classification.PUBLIC, Classification.CONFIDENTIAL]
    tiers: Tiers
    destination: SftpDestination
    password: PasswordPlan

    @model_validator(mode="after")
    def _dates_in_order(self) -> Agreement:
        if self.valid_until < self.valid_from:
            raise ValueError(
                f"valid_until {self.valid_until} is before valid_from {self.valid_from}"
            )
        return self

    def is_active(self, on: date) -> bool:
        return self.valid_from <= on <= self.valid_until

    def covers(self, country: str, urgency: Urgency) -> bool:
        return country in self.countries and self.tiers.get(urgency) is not None


# --- focal points ------------------------------------------------------------------------------

