"""``python -m dissemination sites load-master | accept | held``: the site registry by hand.

A coordinator loads a country's master list (the first round's bootstrap, or a revised list),
lists the sites held for review, and accepts one after looking at it in the survey database
(the pipeline never shows a site's name). Each registration is a chained ledger row naming who
and why. Output names site keys, columns and counts, never a value.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path

#: A reason shorter than this says nothing (as an urgent request's justification).
MIN_REASON = 10


def register(sub, include: Path, ledger_url: str) -> None:
    """Add ``sites`` to the CLI's subcommands (``include``, ``ledger_url``: its defaults)."""
    sites = sub.add_parser("sites", help="the site registry: load a master list, list the "
                           "sites held for review, accept one")
    sites.add_argument("action", choices=["load-master", "accept", "held"])
    sites.add_argument("file", nargs="?", type=Path, help="load-master: the master list (CSV "
                       "or XLSX: site key, Public text such as site_name, admin codes)")
    sites.add_argument("--country", help="ISO3 code (held: optional)")
    sites.add_argument("--site", help="accept: the site key, as the page lists it")
    sites.add_argument("--round", dest="round_id", help="accept: the round whose value you "
                       "reviewed (the one the page names)")
    sites.add_argument("--by", help="load-master, accept: who registers (recorded)")
    sites.add_argument("--reason", help="accept: why the value may ship (recorded)")
    sites.add_argument("--include", type=Path, default=include)
    sites.add_argument("--url", default=ledger_url, help="SQLAlchemy URL of the ledger")
    sites.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from ..ledger.records import LedgerNeedsUpgrade
    from ..ledger.store import Ledger

    missing = [f"--{name}" for name, needed in (
        ("country", args.action != "held"), ("by", args.action != "held"),
        ("site", args.action == "accept"), ("round", args.action == "accept"),
        ("reason", args.action == "accept")) if needed and not getattr(
            args, "round_id" if name == "round" else name)]
    if args.action == "load-master" and args.file is None:
        missing.insert(0, "FILE")
    if missing:
        print(f"sites {args.action} needs {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        ledger = Ledger(sa.create_engine(args.url, hide_parameters=True))
    except LedgerNeedsUpgrade as exc:
        print(exc, file=sys.stderr)
        return 1
    return {"load-master": _load_master, "accept": _accept, "held": _held}[args.action](
        args, ledger.engine)


def _load_master(args: argparse.Namespace, engine) -> int:
    from ..policy import PolicyError, load_policy
    from .sites import MasterListInvalid, columns_of, read_master_list
    from .store import load_master

    try:
        policy = load_policy(args.include)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    ruleset = policy.rulesets.get(args.country)
    if ruleset is None:
        print(f"no rule set for country {args.country!r} in {args.include / 'rules'}",
              file=sys.stderr)
        return 1
    try:
        sites = read_master_list(args.file, ruleset, policy.intake)
    except MasterListInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    sha = hashlib.sha256(args.file.read_bytes()).hexdigest()
    added, unchanged = load_master(engine, args.country, sites,
                                   f"master list {args.file.name} sha256 {sha[:16]}", args.by,
                                   datetime.now(UTC))
    print(f"{args.country}: master list {args.file.name}: {added} site(s) registered, "
          f"{unchanged} already registered as listed (by {args.by}; chained in the ledger)")
    listed = next(iter(sites.values()), ("", {}))[1]
    absent = [c for c in columns_of(ruleset).text if c not in listed]
    if absent:
        print(f"  not in the list: {', '.join(absent)}; a round that has it holds its sites "
              "until they are accepted")
    return 0


def _accept(args: argparse.Namespace, engine) -> int:
    from .store import NotHeld, accept

    reason = args.reason.strip()
    if len(reason) < MIN_REASON:
        print(f"sites accept needs --reason of at least {MIN_REASON} characters: why this "
              "site's Public text may ship (recorded)", file=sys.stderr)
        return 2
    try:
        entry = accept(engine, args.country, args.site, args.round_id, args.by, reason,
                       datetime.now(UTC))
    except NotHeld as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.country} site {args.site}: accepted as {args.round_id} holds it, by "
          f"{args.by} (site_registry id {entry}, chained in the ledger). Its next package "
          f"includes it: trigger {args.round_id} again to deliver it now")
    return 0


def _held(args: argparse.Namespace, engine) -> int:
    from .store import held_sites

    held = held_sites(engine, args.country)
    print(f"{len(held)} site(s) held for review" + (f" in {args.country}" if args.country
                                                     else ""))
    for h in held:
        print(f"  {h.country} {h.site_key}: {h.round_id}, {h.reason} (held since "
              f"{h.first_held_at:%Y-%m-%d %H:%M} UTC)")
    return 0
