"""The site registry in the ledger database: what is registered, what is held, and the steps'
and the CLI's ways in (``registry`` decides; this keeps).

Registering (a master list's sites, a coordinator's acceptance) appends chained rows to
``site_registry``, so ``ledger verify`` finds one changed or removed; a round's review records
its held sites in ``sites_held`` for the task log, the Dissemination page and ``sites accept``.
Site keys, column names and digests only: never a site's name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..errors import PermanentError
from ..ledger.records import utc as _utc
from ..ledger.rows import insert_chained
from ..ledger.store import Ledger
from ..ledger.tables import site_registry, sites_held

# ``sites`` (pandas) is imported where it is used: the page reads held sites through here
if TYPE_CHECKING:
    import pandas as pd

    from ..policy import RuleSet
    from ..registry import sites as registry


class NotHeld(PermanentError, LookupError):
    """``sites accept`` of a site no round holds (or held in another round than reviewed)."""


@dataclass(frozen=True)
class Held:
    """A site waiting for review, as the page and ``sites held`` show it."""

    country: str
    site_key: str
    round_id: str
    reason: str
    first_held_at: datetime
    held_at: datetime


def registered(engine: sa.Engine, country: str) -> dict[str, dict[str, str]]:
    """The country's registrations: normal-form site key -> its newest row's digests."""
    from .sites import normal_forms

    with engine.connect() as conn:
        rows = conn.execute(sa.select(site_registry.c.site_key, site_registry.c.registered)
                            .where(site_registry.c.country == country)
                            .order_by(site_registry.c.id)).all()
    return dict(zip(normal_forms([key for key, _ in rows]),
                    (json.loads(digests) for _, digests in rows), strict=True))


def hold_out(round_df: pd.DataFrame, round_id: str, ruleset: RuleSet, ledger: Ledger,
             now: datetime) -> registry.Review:
    """Review a round's sites against the registry (``registry.review``) and keep the verdict:
    its held sites wait in ``sites_held``, and those of its sites that ship wait no longer.
    With the country's registry off, every site ships and nothing is read."""
    from ..registry import sites as registry

    if not ruleset.site_registry.hold:
        return registry.Review()
    country = ruleset.country
    verdict = registry.review(round_df, ruleset, registered(ledger.engine, country))
    keys = set(round_df[ruleset.site_key].astype("string").dropna()) - set(verdict.keys)
    with ledger.engine.begin() as conn:
        _release(conn, country, keys)
        first = dict(conn.execute(
            sa.select(sites_held.c.site_key, sites_held.c.first_held_at)
            .where(sites_held.c.country == country)).all())
        _release(conn, country, verdict.keys)
        if verdict.held:
            conn.execute(sites_held.insert(), [dict(
                country=country, site_key=h.site_key, round_id=round_id, reason=h.reason,
                held=json.dumps(h.digests, sort_keys=True),
                first_held_at=first.get(h.site_key, now), held_at=now) for h in verdict.held])
    return verdict


def _release(conn: sa.Connection, country: str, keys) -> None:
    keys = list(keys)
    for start in range(0, len(keys), 500):
        conn.execute(sites_held.delete().where(sites_held.c.country == country,
                                               sites_held.c.site_key.in_(keys[start:start + 500])))


def held_sites(engine: sa.Engine, country: str | None = None, limit: int | None = None
               ) -> list[Held]:
    """Sites waiting for review (of ``country``, or every one), by country and site key (the
    first ``limit``)."""
    query = sa.select(sites_held.c.country, sites_held.c.site_key, sites_held.c.round_id,
                      sites_held.c.reason, sites_held.c.first_held_at, sites_held.c.held_at)
    if country is not None:
        query = query.where(sites_held.c.country == country)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(sites_held.c.country, sites_held.c.site_key)
                            .limit(limit)).all()
    return [Held(r.country, r.site_key, r.round_id, r.reason, _utc(r.first_held_at),
                 _utc(r.held_at)) for r in rows]


#: How many held sites the page lists (per load); ``sites held`` lists every one.
PAGE_LISTS = 200


def held_for_page(engine: sa.Engine, country: str | None = None
                  ) -> tuple[dict[str, int], list[Held]]:
    """How many sites each country holds, and the first ``PAGE_LISTS`` of them: a first round
    loaded without its master list holds every site, and the page must not read them all."""
    query = sa.select(sites_held.c.country, sa.func.count()).group_by(sites_held.c.country)
    if country is not None:
        query = query.where(sites_held.c.country == country)
    with engine.connect() as conn:
        counts = dict(conn.execute(query).all())
    return counts, held_sites(engine, country, PAGE_LISTS) if counts else []


def load_master(engine: sa.Engine, country: str,
                sites: Mapping[str, tuple[str, dict[str, str]]], source: str, by: str,
                now: datetime) -> tuple[int, int]:
    """Register a master list's sites (``registry.read_master_list``): a site registered as it
    is already adds nothing. Sites held with what the list now registers are released.
    (registered, unchanged)."""
    from .sites import normal_forms

    known = registered(engine, country)
    new = {k: v for k, v in sites.items() if known.get(k) != v[1]}
    with engine.begin() as conn:
        for key, digests in new.values():
            insert_chained(conn, site_registry, dict(
                country=country, site_key=key, registered=json.dumps(digests, sort_keys=True),
                source=source[:255], accepted_by=by[:200], reason="master list",
                recorded_at=now))
        waiting = conn.execute(sa.select(sites_held.c.site_key, sites_held.c.held)
                               .where(sites_held.c.country == country)).all()
        _release(conn, country, [key for (key, held), folded in zip(
            waiting, normal_forms([key for key, _ in waiting]), strict=True)
            if sites.get(folded, ("", None))[1] == json.loads(held)])
    return len(new), len(sites) - len(new)


def accept(engine: sa.Engine, country: str, site_key: str, round_id: str, by: str,
           reason: str, now: datetime) -> int:
    """Register a held site as ``round_id`` held it (what the coordinator reviewed) and release
    it; the registry row's id. Refused when the site is not held, or held in another round
    (its value there was not the one reviewed)."""
    with engine.begin() as conn:
        row = conn.execute(sa.select(sites_held).where(
            sites_held.c.country == country,
            sites_held.c.site_key == site_key)).first()
        if row is None:
            raise NotHeld(f"{country} site {site_key} is not held for review (`python -m "
                          "dissemination sites held` lists those that are)")
        if row.round_id != round_id:
            raise NotHeld(f"{country} site {site_key} is held as {row.round_id} has it, not "
                          f"{round_id}: review it in {row.round_id}, then accept that round")
        (entry,) = insert_chained(conn, site_registry, dict(
            country=country, site_key=site_key, registered=row.held,
            source=f"accepted as held in {round_id}"[:255], accepted_by=by[:200],
            reason=reason, recorded_at=now))
        _release(conn, country, [site_key])
    return entry


def held_line(engine: sa.Engine, country: str, round_id: str) -> str | None:
    """The task log's line naming the sites ``round_id`` holds (keys and why), if any."""
    from ..registry import sites as registry

    held = [h for h in held_sites(engine, country) if h.round_id == round_id]
    return registry.Review(held=tuple(registry.HeldSite(h.site_key, h.reason, {})
                                      for h in held)).log_line(round_id) if held else None
