"""include/focal_points/<id>.yaml and focal_points/dtm/<ISO3>.yaml: Table C, apart from agreements,
so that turnover revises no agreement."""

from __future__ import annotations

from pydantic import Field

from .agreements import SftpDestination
from .base import ColumnName, CountryCode, Identifier, PolicyModel


class Person(PolicyModel):
    name: str = Field(min_length=1)
    title: str = Field(min_length=1)
    mobile: str = Field(pattern=r"^\+?[0-9 ()\-]{6,20}$")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    # false while on leave or during a handover: the secondary stands in.
    available: bool = True


class FocalPoint(Person):
    # Where this person receives packages; default: the agreement's destination.
    destination: SftpDestination | None = None


class FieldFocalPoint(FocalPoint):
    """A location-specific focal point (the guideline's 48-hour example): only their rows."""

    areas: dict[ColumnName, tuple[str, ...]] = Field(min_length=1)  # e.g. admin2_pcode: [...]
    destination: SftpDestination


class FocalPoints(PolicyModel):
    """Table C: each organisation has a primary and a secondary focal point, and may list field
    focal points by area. Replacing a person edits this file only, never the agreement."""

    id: Identifier
    organisation: Identifier  # include/organisations/<id>.yaml, the same as the agreement's
    primary: FocalPoint
    secondary: FocalPoint
    field: tuple[FieldFocalPoint, ...] = ()

    def password_holders(self) -> list[FocalPoint]:
        """Everyone who opens the agreement's packages, so must be told its password: the
        primary, the secondary (who receives them while the primary is away or unreachable)
        and every field focal point; those marked unavailable too, for their return."""
        return [self.primary, self.secondary, *self.field]


class DtmFocalPoints(PolicyModel):
    """Table C, IOM DTM's column: DTM's primary and secondary focal point in one country. They
    receive the pipeline's alerts (urgent signals, deadlines at risk, rotated passwords) and are
    the people partners hear their package passwords from. The primary, or the secondary while the
    primary is unavailable: the same rule as for partners' deliveries."""

    country: CountryCode
    organisation: str = Field(min_length=1)
    primary: Person
    secondary: Person

    def on_duty(self) -> Person:
        return self.primary if self.primary.available else self.secondary

