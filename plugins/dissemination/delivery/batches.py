"""Deliveries in batches of whole organisations: what one mapped task instance delivers.

Airflow pays seconds per task instance, so a run of 1,000 agreements cannot have one per
delivery. A batch holds whole organisations (an organisation's packages are judged together and
should land together) and about ``size`` deliveries; a run with few organisations still gets one
batch each, so the grid shows one line per organisation where that is readable. A failure in a
batch stops none of its other deliveries: they are all tried, then the batch reports every
failure at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import PermanentError

#: Up to this many organisations, each gets its own batch (its own line in the grid).
ONE_EACH_UP_TO = 16
LABEL_LENGTH = 200  # Airflow keeps the rendered map index in a 250-character column


@dataclass(frozen=True)
class Batch:
    index: int
    organisations: tuple[str, ...]  # display names, sorted
    members: tuple[int, ...]  # positions in the run's list of deliveries

    @property
    def label(self) -> str:
        """The batch's line in the grid: its organisations, then how many deliveries."""
        tail = f" ({len(self.members)} deliver{'y' if len(self.members) == 1 else 'ies'})"
        names = list(self.organisations)
        for shown in range(len(names), 0, -1):
            more = len(names) - shown
            text = ", ".join(names[:shown]) + (f" +{more} more" if more else "") + tail
            if len(text) <= LABEL_LENGTH:
                return text
        return f"{len(names)} organisations{tail}"


def batch_deliveries(organisations: Sequence[tuple[str, str]], size: int) -> list[Batch]:
    """Group deliveries given as ``(organisation_id, display name)`` in run order.

    The number of batches is ``ceil(deliveries / size)``, at least one per organisation up to
    ``ONE_EACH_UP_TO``, never more than the organisations. Organisations go largest first to the
    lightest batch, so batches stay even; the result is deterministic.
    """
    if size < 1:
        raise ValueError("a batch holds at least one delivery")
    by_org: dict[str, list[int]] = {}
    names: dict[str, str] = {}
    for position, (org_id, name) in enumerate(organisations):
        by_org.setdefault(org_id, []).append(position)
        names.setdefault(org_id, name)
    if not by_org:
        return []
    count = min(len(by_org), max(min(len(by_org), ONE_EACH_UP_TO),
                                 math.ceil(len(organisations) / size)))
    bins: list[list[str]] = [[] for _ in range(count)]
    loads = [0] * count
    for org_id in sorted(by_org, key=lambda o: (-len(by_org[o]), names[o], o)):
        lightest = min(range(count), key=lambda b: (loads[b], b))
        bins[lightest].append(org_id)
        loads[lightest] += len(by_org[org_id])
    ordered = sorted(bins, key=lambda orgs: min(names[o] for o in orgs))
    return [Batch(i, tuple(sorted(names[o] for o in orgs)),
                  tuple(sorted(p for o in orgs for p in by_org[o])))
            for i, orgs in enumerate(ordered)]


class DeliveriesFailed(RuntimeError):
    """Some deliveries of a batch failed and at least one may succeed on a retry (the others
    are recorded and are not sent again)."""

    def __init__(self, failures: Sequence[str]):
        self.failures = list(failures)
        super().__init__(f"{len(self.failures)} deliver{'y' if len(failures) == 1 else 'ies'} "
                         "of this batch failed:\n  " + "\n  ".join(self.failures))


class DeliveriesRefused(PermanentError, DeliveriesFailed):
    """Every failure of the batch is permanent: a retry would fail alike."""


def failed(failures: Sequence[tuple[str, BaseException]]) -> DeliveriesFailed:
    """One error for a batch's failures, permanent only if each of them is."""
    lines = [f"{label}: {type(exc).__name__}: {exc}" for label, exc in failures]
    if all(isinstance(exc, PermanentError) for _, exc in failures):
        return DeliveriesRefused(lines)
    return DeliveriesFailed(lines)
