"""The site registry: each site's Public text and admin codes as its coordinators accepted them.

No pattern tells a key informant's name typed into ``site_name`` from a site's name, but DTM
keeps a master list of its sites. A round's site whose Public text differs from the registered
one, or a site never registered, is held out of every package of the round (the rest goes on)
until a coordinator accepts it (``python -m dissemination sites accept``).

What is compared (``columns_of``), decided by the country's rule set as it classifies columns:
its Public text (indicators of kind ``text`` classified Public, and ``admin`` indicators with no
declared values that are not an admin level: ``site_name``), which must match; and its admin
levels' columns, compared where the registry holds them. Values are kept as SHA-256 digests of
their normal form, never as text. Pure: frames and mappings in, a verdict out; storage is
``registry_ledger``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..classification import Classification
from ..classify.sensitivity import classify_round
from ..errors import PermanentError
from ..intake.contract import conform
from ..intake.fresh import DropFileRejected, read_export
from ..policy import IntakeLimits, RuleSet

#: The digest of an empty cell: a site registered without a name stays without one.
EMPTY = "-"
_NONE = ""  # no digest registered for a column
#: How many held site keys one log line names (the page and ``sites held`` list them all).
NAMED_IN_LOG = 20


class MasterListInvalid(PermanentError, ValueError):
    """A master list that cannot register its sites: nothing of it is loaded."""


@dataclass(frozen=True)
class Columns:
    """What the registry compares for a country: ``text`` must match the registered value;
    ``codes`` (admin levels) match where the registry holds them (a master list may omit them)."""

    text: tuple[str, ...]
    codes: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.text + tuple(c for c in self.codes if c not in self.text)


def columns_of(ruleset: RuleSet) -> Columns:
    """The country's Public text columns and its admin levels' columns."""
    levels = {c for columns in ruleset.admin_levels.values() for c in columns}
    base = classify_round(list(ruleset.indicators), ruleset)
    text = tuple(
        name for name, rule in ruleset.indicators.items()
        if name != ruleset.site_key and base[name].classification is Classification.PUBLIC
        and (rule.kind == "text" or (rule.kind == "admin" and not rule.values
                                     and name not in levels)))
    codes = tuple(c for c in ruleset.indicators if c in levels)
    return Columns(text, codes)


def read_columns(ruleset: RuleSet, staged: list[str]) -> list[str]:
    """Of a staged round's columns, those a review reads (none with the registry off)."""
    if not ruleset.site_registry.hold:
        return []
    wanted = {ruleset.site_key, *columns_of(ruleset).all}
    return [c for c in staged if c in wanted]


def digest(normal: str) -> str:
    """What the registry keeps of a value: the SHA-256 of its normal form (``normal_forms``).

    Enough to tell the same name from another, and no name in the ledger (which never held a
    round's value)."""
    return hashlib.sha256(normal.encode()).hexdigest()


def normal_forms(values) -> list[str]:
    """Site keys and values as the registry compares them: Unicode NFKC, runs of spaces as
    one, trimmed, lower case (as ``normalise.token``, but in Arrow: a Python call per site
    costs a second per 100k). Keys match whatever their case, as the contract compares them."""
    text = pa.array(pd.Series(values, dtype=object).astype(str), pa.string())
    text = pc.utf8_normalize(text, form="NFKC")
    text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))
    return pc.utf8_lower(text).to_pylist()


def _digests(values: pd.Series) -> np.ndarray:
    """One digest per row, hashed once per distinct value."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.array([digest(u) for u in normal_forms(uniques)] + [EMPTY], dtype=object)
    return table[codes]


def site_records(frame: pd.DataFrame, ruleset: RuleSet) -> tuple[list[str], dict[str, np.ndarray]]:
    """The site keys of a conformed frame and, per compared column it has, each row's digest."""
    present = [c for c in columns_of(ruleset).all if c in frame]
    keys = frame[ruleset.site_key].astype("string").fillna("").tolist()
    return keys, {c: _digests(frame[c]) for c in present}


@dataclass(frozen=True)
class HeldSite:
    """A site held out of a round's packages: its key, why (column names, never a value) and
    the digests a coordinator's acceptance registers."""

    site_key: str
    reason: str
    digests: dict[str, str]


@dataclass(frozen=True)
class Review:
    """A round's sites against the registry: ``keep`` (None: every site ships) and the held."""

    keep: np.ndarray | None = None
    held: tuple[HeldSite, ...] = ()

    @property
    def everything(self) -> bool:
        return self.keep is not None and not self.keep.any()

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(h.site_key for h in self.held)

    def covering(self, rows: np.ndarray | None) -> np.ndarray | None:
        """The rows a package covers (``rows``: a field focal point's, None for all), less the
        sites held out: its tables, site or area, are made of the rows that ship."""
        if self.keep is None:
            return rows
        return self.keep if rows is None else rows & self.keep

    def held_back(self, plans: Sequence, round_id: str, country: str) -> list:
        """Planned deliveries (``delivery.Delivery``), told in their manifest that sites were held
        out; or withheld, saying why, when every site of the round is."""
        if not self.held:
            return list(plans)
        if self.everything:
            return [replace(p, status="refused", reason=self.refusal(round_id, country))
                    if p.status == "planned" else p for p in plans]
        return [replace(p, warnings=(*p.warnings, self.warning())) if p.status == "planned"
                else p for p in plans]

    def warning(self) -> str:
        """For the manifest: how many, never which (the ledger and the page name them)."""
        return (f"site registry: {len(self.held)} site(s) held out for review (never "
                "registered, or their Public text is not the registered one); the other sites "
                "are here")

    def log_line(self, round_id: str) -> str:
        named = ", ".join(f"{h.site_key} ({h.reason})" for h in self.held[:NAMED_IN_LOG])
        more = f" and {len(self.held) - NAMED_IN_LOG} more" if len(self.held) > NAMED_IN_LOG \
            else ""
        return (f"HELD for review {round_id}: {len(self.held)} site(s) by the site registry: "
                f"{named}{more}; `python -m dissemination sites held` lists them, "
                "`sites accept` releases one")

    def refusal(self, round_id: str, country: str) -> str:
        return (f"withheld: every site of {round_id} is held for review by the site registry "
                f"(never registered, or Public text not the registered one): load {country}'s "
                f"master list (`python -m dissemination sites load-master FILE --country "
                f"{country}`) or accept its sites, then run the round again")


def review(frame: pd.DataFrame, ruleset: RuleSet,
           registered: Mapping[str, Mapping[str, str]]) -> Review:
    """Which sites of a conformed round ship: those registered whose compared columns match
    (``registered``: normal-form site key -> column -> digest)."""
    keys, digests = site_records(frame, ruleset)
    text = set(columns_of(ruleset).text)
    known = list(registered)
    at = pd.Index(known).get_indexer(normal_forms(keys))  # each row's registration; -1: none
    unknown = at < 0
    changed = {}
    for column, values in digests.items():  # one pass per column, not per site
        stored = np.array([r.get(column, _NONE) for r in registered.values()] + [_NONE],
                          dtype=object)[at]  # (in ``known``'s order)
        compared = ~unknown if column in text else ~unknown & (stored != _NONE)
        changed[column] = compared & (stored != values)
    held_rows = np.flatnonzero(np.logical_or.reduce([unknown, *changed.values()]))
    if not len(held_rows):
        return Review()
    held = []
    for i in held_rows:
        differ = [c for c, mask in changed.items() if mask[i]]
        reason = "not in the registry" if unknown[i] else \
            f"{', '.join(differ)} not the registered one"
        held.append(HeldSite(keys[i], reason, {c: str(v[i]) for c, v in digests.items()}))
    keep = np.ones(len(keys), dtype=bool)
    keep[held_rows] = False
    return Review(keep, tuple(held))


def read_master_list(path: Path, ruleset: RuleSet, limits: IntakeLimits
                     ) -> dict[str, tuple[str, dict[str, str]]]:
    """A master list (CSV or XLSX: the site key, each Public text column, optionally the admin
    levels' columns, headed as the country's exports head them or by indicator name), checked
    by the country's round contract: normal-form key -> (key as written, digests). A Public
    text column it lacks is registered as unknown: a round that has it holds the site."""
    try:
        raw = read_export(Path(path), limits)
    except DropFileRejected as exc:
        raise MasterListInvalid(f"master list {exc}") from None
    conformed = conform(raw, ruleset, first_row=2)
    if conformed.violations:
        raise MasterListInvalid(
            f"master list {Path(path).name}: {len(conformed.violations)} problem(s) under "
            f"rules/{ruleset.country}'s contract, nothing loaded:\n  "
            + "\n  ".join(v.line() for v in conformed.violations))
    frame = conformed.frame
    keys, digests = site_records(frame, ruleset)
    return {folded: (k, {c: str(v[i]) for c, v in digests.items()})
            for i, (k, folded) in enumerate(zip(keys, normal_forms(keys), strict=True))}
