"""How long protection takes in a run: the round's shared decisions, then each holder's tables.

``runs.packaging`` first decides every cell once for all holders of the round
(``shared_decisions``: pooled protection, then each holder alone, until stable), then builds
each holder's tables with those decisions. Both are timed here, per country, summed, for two
ways of counting holders:

- **each**: every organisation its own holder, as if no two received the same tables (one more
  protection per organisation in every round of ``shared_decisions``). The copies' pooled
  tables are still one template's each, so truly distinct organisations would cost more;
- **grouped**: as packaging calls it, organisations alike one holder. The benches' policy grows
  by copying three agreements, so this stays at two holders in NGA and one in SSD.

The issue's target (1M sites, 1,000 agreements) is over what two shared cores measure in a
bench's time. So the timing runs at a sweep of sizes up to ``--sites`` and ``--agreements``,
fits ``seconds ~ sites^a`` and ``seconds ~ agreements^b`` (least squares in log-log), and
extrapolates from the largest point measured: an estimate, said so wherever it is printed.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from disclosure_rounds import countries, holders, prepared, tables_of
from policies import build_policy
from summary import Figure, median_seconds


@dataclass(frozen=True)
class Point:
    """Seconds at one size: shared decisions and the whole (shared, then every holder's
    tables), for each way of counting holders; and how many holders each way counts."""

    sites: int
    agreements: int
    shared_each: float
    total_each: float
    shared_grouped: float
    total_grouped: float
    holders_each: int
    holders_grouped: int


def protect(df, ruleset, held: list) -> tuple[float, float]:
    """Seconds for ``shared_decisions`` over ``held``, and for it then each holder's tables."""
    from dissemination.disclosure.engine import build_contents
    from dissemination.disclosure.pooling import shared_decisions

    start = time.perf_counter()
    shared = shared_decisions(df, held, ruleset)
    decided = time.perf_counter()
    for parts, tables in held:
        build_contents(df, parts, ruleset, tables, shared)
    return decided - start, time.perf_counter() - start


class Rounds:
    """Synthetic rounds, each country and size prepared once for the whole sweep."""

    def __init__(self) -> None:
        self._rounds: dict = {}

    def get(self, ruleset, sites: int):
        key = (ruleset.country, sites)
        if key not in self._rounds:
            self._rounds[key] = prepared(ruleset, sites)
        return self._rounds[key]


def point(policy, sites: int, rounds: Rounds, repeat: int = 3) -> Point:
    """Both ways of counting holders, every country of ``policy``, ``sites``-site rounds: each
    time the median of ``repeat`` runs (the machine's two cores are shared), after one."""
    held = {}
    for country in countries(policy):
        ruleset = policy.rulesets[country]
        df, base, active = rounds.get(ruleset, sites)
        tables = tables_of(policy, country, base, active)
        held[country] = (df, ruleset, {g: holders(tables, g) for g in (False, True)})
    # Untimed: the first runs on a policy or round were up to twice as slow as the next ones.
    for df, ruleset, by in held.values():
        protect(df, ruleset, by[True])
    runs = []
    for _ in range(repeat):
        run = []
        for grouped in (False, True):
            took = [protect(df, ruleset, by[grouped]) for df, ruleset, by in held.values()]
            run += [sum(shared for shared, _ in took), sum(total for _, total in took)]
        runs.append(run)
    medians = [statistics.median(run[i] for run in runs) for i in range(4)]
    counts = [sum(len(by[g]) for _, _, by in held.values()) for g in (False, True)]
    return Point(sites, len(policy.agreements), *medians, *counts)


def slowest_alone(policy, sites: int, rounds: Rounds) -> tuple[float, str]:
    """The slowest organisation's tables built jointly, alone (median of three), and its name."""
    from dissemination.disclosure.engine import build_contents

    slowest = (0.0, None)
    for country in countries(policy):
        ruleset = policy.rulesets[country]
        df, base, active = rounds.get(ruleset, sites)
        for name, selections in tables_of(policy, country, base, active).items():
            parts = [(s, None) for s in selections]
            start = time.perf_counter()
            build_contents(df, parts, ruleset)
            took = time.perf_counter() - start
            if took > slowest[0]:
                slowest = (took, (df, parts, ruleset, name))
    df, parts, ruleset, name = slowest[1]
    return median_seconds(lambda: build_contents(df, parts, ruleset)), name


def sizes(largest: int, floor: int, steps: int = 4) -> list[int]:
    """``steps`` sizes halving down from ``largest`` (none under ``floor``), smallest first."""
    return sorted({max(floor, largest >> k) for k in range(steps)})


def sweep(folder: Path, sites: int, agreements: int, rounds: Rounds
          ) -> tuple[list[Point], list[Point]]:
    """Points over sites at ``agreements``, and over agreements at ``sites``: both end at the
    largest point, measured once and shared."""
    from dissemination.policy import load_policy

    policies = {n: load_policy(build_policy(folder / str(n), n)) for n in sizes(agreements, 3)}
    largest = point(policies[agreements], sites, rounds)
    over_sites = [point(policies[agreements], s, rounds) for s in sizes(sites, 100)[:-1]]
    over_agreements = [point(policies[n], sites, rounds) for n in sorted(policies)[:-1]]
    return [*over_sites, largest], [*over_agreements, largest]


def exponent(sizes_: list[float], seconds: list[float]) -> float:
    """The slope of log(seconds) on log(size), least squares: seconds ~ size^slope."""
    if len(sizes_) < 3:
        raise ValueError(f"an exponent needs at least three sizes, not {len(sizes_)}")
    return float(np.polyfit(np.log(sizes_), np.log(seconds), 1)[0])


def extrapolated(seconds: float, at: tuple[float, float], to: tuple[float, float],
                 exponents: tuple[float, float]) -> float:
    """``seconds`` measured at (sites, agreements) ``at``, carried to ``to`` by the exponents."""
    return seconds * math.prod((t / a) ** e for a, t, e in zip(at, to, exponents, strict=True))


def _step(points: list, way: str, size: str) -> float:
    """The exponent between the two largest points alone: a check on the fit."""
    (a, b), total = points[-2:], f"total_{way}"
    return math.log(getattr(b, total) / getattr(a, total)) / math.log(
        getattr(b, size) / getattr(a, size))


def _size(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 and not n % 1_000_000 else \
        f"{n // 1000}k" if n >= 1000 and not n % 1000 else str(n)


#: The issue's target, extrapolated to: one round of 1M sites, 1,000 agreements.
TARGET = (1_000_000, 1000)


def timing_report(over_sites: list, over_agreements: list, slowest: tuple[float, str]
                  ) -> dict[str, Figure]:
    """The sweep printed, its exponents fitted, the target extrapolated; the figures."""
    largest = over_sites[-1]
    print("protection in a run (seconds, median of 3): shared decisions, then every holder's "
          "tables; every organisation its own holder | as packaging groups alike ones")
    for p in dict.fromkeys([*over_sites, *over_agreements]):
        print(f"  {p.sites:>9,} sites {p.agreements:>5,} agreements | {p.holders_each:4d} "
              f"holders: {p.shared_each:7.2f} shared {p.total_each:7.2f} in all | "
              f"{p.holders_grouped:2d} holders: {p.shared_grouped:6.2f} shared "
              f"{p.total_grouped:6.2f} in all")
    fits, out = {}, {}
    for way in ("each", "grouped"):
        fits[way] = (exponent([p.sites for p in over_sites],
                              [getattr(p, f"total_{way}") for p in over_sites]),
                     exponent([p.agreements for p in over_agreements],
                              [getattr(p, f"total_{way}") for p in over_agreements]))
        guess = extrapolated(getattr(largest, f"total_{way}"),
                             (largest.sites, largest.agreements), TARGET, fits[way])
        print(f"  {way}: seconds ~ sites^{fits[way][0]:.2f} (from {len(over_sites)} sizes), "
              f"~ agreements^{fits[way][1]:.2f} (from {len(over_agreements)}); EXTRAPOLATED, "
              f"not measured, to {TARGET[0]:,} sites and {TARGET[1]:,} agreements: {guess:.1f} s")
        print(f"    the two largest sizes alone: sites^{_step(over_sites, way, 'sites'):.2f}, "
              f"agreements^{_step(over_agreements, way, 'agreements'):.2f} (fixed costs weigh "
              f"on the smaller ones)")
        ways = "every organisation its own holder" if way == "each" else "alike ones one holder"
        span = f"{over_sites[0].sites:,}-{largest.sites:,} sites"
        prefix = "disclosure_" if way == "each" else "disclosure_grouped_"
        out[f"{prefix}sites_exponent"] = Figure(
            round(fits[way][0], 2), f"fitted: protection seconds ~ sites^this, {ways}, {span}")
        out[f"{prefix}agreements_exponent"] = Figure(
            round(fits[way][1], 2), f"fitted: seconds ~ agreements^this, {ways}, "
            f"{over_agreements[0].agreements}-{largest.agreements} agreements")
        out[f"{prefix}1m_1000_extrapolated_s"] = Figure(
            round(guess, 1), f"seconds, EXTRAPOLATED (not measured) to 1M sites, 1,000 agreements, "
            f"{ways}", "<= 600 s")
    size, n = _size(largest.sites), largest.agreements
    print(f"  slowest organisation alone ({slowest[1]}), {largest.sites:,} sites: "
          f"{slowest[0]:.2f} s")
    return {
        f"disclosure_joint_{size}_s": Figure(
            round(slowest[0], 2), f"seconds, joint protection of the slowest organisation's "
            f"tables, alone, {largest.sites:,}-site round", _goal(largest.sites >= TARGET[0])),
        f"disclosure_{n}_agreements_{size}_s": Figure(
            round(largest.total_each, 1), f"seconds, shared decisions then every holder's "
            f"tables, {n:,} organisations each its own holder, {size}-site rounds",
            _goal(n >= TARGET[1] or largest.sites >= TARGET[0])),
        f"disclosure_shared_{n}_agreements_{size}_s": Figure(
            round(largest.shared_each, 1), f"seconds, of which shared decisions "
            f"(`shared_decisions`), {n:,} holders, {size}-site rounds"),
        f"disclosure_grouped_{n}_agreements_{size}_s": Figure(
            round(largest.total_grouped, 1), f"seconds, the same as packaging groups alike "
            f"organisations: {largest.holders_grouped} holders, {size}-site rounds"),
        **out}


def _goal(at_target: bool) -> str:
    return "<= 600 s" if at_target else ""
