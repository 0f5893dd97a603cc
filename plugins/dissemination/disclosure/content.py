"""What a step of disclosure control hands the next: the partner's table and its columns.

Kept apart from the steps so that packaging, the ledger and the page can name a table's parts
without loading the engine.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd

from ..classification import Classification
from ..errors import PermanentError

SITES = "sites"
RELATIONAL_ZERO = "0 or every site (relational member)"
#: Why cells are hidden, as the package says it: never which reason hid which cell.
SUPPRESSED = ("small counts, areas of too few sites, a relational member's 0 or every site, "
              "and cells that would give them away or narrow them, judged with every table "
              "this or any partner of the run receives, and those held of the round's other "
              "versions and neighbouring rounds; which is which is not said; no cell is "
              "perturbed")



class UndeclaredValue(PermanentError, AssertionError):
    """A value outside its declared set reached a package: a bug (rounds are conformed first),
    never a policy outcome. Column names of aggregated packages come from declared values only."""


@dataclass(frozen=True)
class OutputColumn:
    name: str
    source: str  # the round's column it comes from ("" for the computed ``sites``)
    classification: Classification
    rule: str


@dataclass
class Content:
    """The partner's table, where each column comes from, and what was done to it."""

    frame: pd.DataFrame
    columns: list[OutputColumn]
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    suppressed: dict[str, int] = field(default_factory=dict)  # output column -> cells
    groups: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (total, parts)
    # Its blank count cells as the round's shared decisions name them: (quantity, support)
    blank_keys: frozenset = frozenset()
