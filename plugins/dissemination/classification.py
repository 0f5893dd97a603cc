"""IOM data classification categories (Table A) and the dissemination categories of the DAP."""

from __future__ import annotations

from enum import Enum


class Classification(str, Enum):
    """IOM Table A. Ordered: public < confidential < secret."""

    PUBLIC = "public"
    CONFIDENTIAL = "confidential"
    SECRET = "secret"

    @property
    def rank(self) -> int:
        return _RANK[self]

    # All four: as a ``str`` subclass it would otherwise compare names alphabetically.
    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank < _rank(other)

    def __le__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank <= _rank(other)

    def __gt__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank > _rank(other)

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank >= _rank(other)


def _rank(other: object) -> int:
    if not isinstance(other, Classification):
        raise TypeError(f"cannot compare a Classification with {type(other).__name__}")
    return other.rank


_RANK = {Classification.PUBLIC: 0, Classification.CONFIDENTIAL: 1, Classification.SECRET: 2}


class DisseminationCategory(str, Enum):
    """Column B of the Data Analysis Plan, filled in with partners.

    ``urgent`` indicators may travel on the medium-urgency path (raw partial data, within the
    agreement's window) as well as monthly; ``monthly`` ones only once cleaned; ``internal`` ones
    never leave DTM, whatever their classification.
    """

    PUBLIC = "public"
    URGENT = "urgent"
    MONTHLY = "monthly"
    INTERNAL = "internal"

    @property
    def strictness(self) -> int:
        """public < urgent < monthly < internal: each shares on fewer paths than the one before."""
        return list(DisseminationCategory).index(self)


class Urgency(str, Enum):
    """Table B. High urgency (individual referrals) is Secret and out of scope by design."""

    LOW = "low"  # cleaned data, monthly
    MEDIUM = "medium"  # raw partial data, within the agreement's window


#: Which dissemination categories each urgency tier may carry.
CATEGORIES_BY_URGENCY = {
    Urgency.MEDIUM: frozenset({DisseminationCategory.PUBLIC, DisseminationCategory.URGENT}),
    Urgency.LOW: frozenset(
        {DisseminationCategory.PUBLIC, DisseminationCategory.URGENT, DisseminationCategory.MONTHLY}
    ),
}
