"""Command line: ``python -m dissemination check | check-round | synth | dap | ledger | sites``.

Installed as the ``dissemination`` console script (``pip install -e .``; the Makefile's venv
has it); ``PYTHONPATH=plugins`` from the repository root works without installing.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path

# The DAGs' variable first: an installed copy (a wheel in site-packages) has no repository
# beside it.
DEFAULT_INCLUDE = Path(os.environ.get("DISSEMINATION_INCLUDE_DIR")
                       or Path(__file__).resolve().parents[2] / "include")
DEFAULT_LEDGER = f"sqlite:///{Path(__file__).resolve().parents[2] / '.demo' / 'ledger.db'}"


def _check(args: argparse.Namespace) -> int:
    from .policy import PolicyError, load_policy

    try:
        policy = load_policy(args.include, today=args.today)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"policy OK ({args.include}): {len(policy.rulesets)} rule set(s), "
        f"{len(policy.agreements)} agreement(s), {len(policy.focal_points)} focal point file(s)"
    )
    for ruleset in policy.rulesets.values():
        due = ruleset.risk_assessment.review_due
        state = "OVERDUE" if due < args.today else "due"
        if ruleset.risk_assessment.date > args.today:
            state = f"NOT YET MADE (dated {ruleset.risk_assessment.date}), stopping the low path;"
        print(f"  rules {ruleset.country} v{ruleset.version}: risk assessment review {state} {due}")
        for line in ruleset.loosened:
            print(f"    loosens the default on purpose: {line}")
        dtm = policy.dtm[ruleset.country]
        duty = dtm.on_duty()
        standing_in = "" if duty is dtm.primary else " (secondary: the primary is unavailable)"
        print(f"    DTM focal point on duty: {duty.name}, {duty.title}{standing_in}")
    return 0


def _country(args: argparse.Namespace):
    """(policy, the country's rule set), or None after saying why on stderr."""
    from .policy import PolicyError, load_policy

    try:
        policy = load_policy(args.include)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return None
    ruleset = policy.rulesets.get(args.country)
    if ruleset is None:
        print(f"no rule set for country {args.country!r} in {args.include / 'rules'} (have: "
              f"{', '.join(sorted(policy.rulesets)) or 'none'})", file=sys.stderr)
        return None
    return policy, ruleset


def _synth(args: argparse.Namespace) -> int:
    from .devkit.synthetic import generate_round, write_export

    found = _country(args)
    if found is None:
        return 1
    _, ruleset = found
    meta, df = generate_round(ruleset, args.round, args.sites, seed=args.seed, status=args.status)
    if args.out:
        write_export(df, ruleset, args.out)
        target = f"{args.out} (export headers of rules/{args.country})"
    else:
        import sqlalchemy as sa

        from .intake.source import write_round

        write_round(sa.create_engine(args.db, hide_parameters=True), meta, df)
        target = args.db
    print(f"wrote round {meta.round_id} ({len(df)} sites, {df.shape[1]} columns) to {target}")
    return 0


def _export_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in (".csv", ".xlsx"):
        raise argparse.ArgumentTypeError(f"{text!r}: an export is a .csv or .xlsx file")
    return path


def _check_round(args: argparse.Namespace) -> int:
    """An export, exactly as exported, against a country's contract: what each header is, and
    every violation (names and rows, never values). Exit 1 if the round would be blocked."""
    from .intake.contract import conform
    from .intake.fresh import DropFileRejected, read_export
    from .intake.headers import describe, not_found
    from .package.formulas import report as formula_report

    found = _country(args)
    if found is None:
        return 2  # not the round's fault: 1 is kept for "the round would be blocked"
    policy, ruleset = found
    try:
        raw = read_export(args.file, policy.intake)
    except DropFileRejected as exc:
        print(f"blocked: {exc}")
        return 1
    conformed = conform(raw, ruleset, first_row=2)
    print(f"{args.file}: {len(raw) - conformed.hxl_row} row(s), {raw.shape[1]} column(s)"
          f"{', an HXL row under the headers' if conformed.hxl_row else ''}; contract: "
          f"rules/{ruleset.country} v{ruleset.version}")
    print("  " + "\n  ".join(describe(conformed.headers, conformed.dropped)))
    for line in not_found(conformed.columns, ruleset):
        print(line)
    for line in formula_report(conformed.frame):
        print(f"  neutralised when delivered: {line}")
    dated = ruleset.collection_date
    missing = [] if dated in conformed.frame or any(
        v.indicator == dated for v in conformed.violations) else [
        f"no column is the collection date {dated} (headers "
        f"{', '.join(repr(h) for h in (dated, *ruleset.indicators[dated].headers))})"]
    if conformed.violations or missing:
        print(f"blocked: {len(conformed.violations) + len(missing)} problem(s); rows are "
              "numbered as in the file (header = row 1):")
        print("  " + "\n  ".join([*(v.line() for v in conformed.violations), *missing]))
        return 1
    print(f"conforms: {len(conformed.frame.columns)} column(s) checked value by value; "
          f"{len(conformed.dropped)} Secret column(s) would be dropped unread")
    return 0


def _dap(args: argparse.Namespace) -> int:
    from .intake.dap import DapError, import_dap

    try:
        print(import_dap(args.include, args.country, args.file, write=args.write,
                         today=date.today()), end="")
    except DapError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.write:
        print(f"written: {args.include / 'rules' / (args.country + '.yaml')}")
    return 0


def _ledger(args: argparse.Namespace) -> int:
    """``ledger status``: is it initialised, and how; ``ledger init --fresh-start WHY``:
    declare that this ledger starts empty on purpose (recorded with the reason);
    ``ledger upgrade``: migrate its schema in place; ``ledger verify``: check its hash chain
    (exit 1 naming the first row changed, deleted or reordered); ``ledger called --agreement
    ID``: the agreement's new package password was passed on by phone."""
    import sqlalchemy as sa

    from .ledger.records import LedgerNeedsUpgrade, LedgerUnavailable
    from .ledger.store import Ledger

    engine = sa.create_engine(args.url, hide_parameters=True)
    url = engine.url.render_as_string(hide_password=True)
    if args.action == "upgrade":
        from .ledger.migrations import upgrade

        print(upgrade(engine).line(url))
        return 0
    if args.action == "verify":
        return _verify(engine, args, url)
    try:
        ledger = Ledger(engine)
    except LedgerNeedsUpgrade as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.action == "called":
        if not args.agreement:
            print("ledger called needs --agreement ID: whose new password was passed on by "
                  "phone", file=sys.stderr)
            return 2
        try:
            marked = ledger.mark_rotation_called(args.agreement, datetime.now(UTC))
        except LedgerUnavailable as exc:
            print(f"ledger called: {exc}", file=sys.stderr)
            return 1
        print(f"{args.agreement}: {marked} password rotation(s) marked as passed on by phone"
              if marked else f"{args.agreement}: no password rotation awaits a phone call")
        return 0 if marked else 1
    if args.action == "init":
        if not args.fresh_start or not args.fresh_start.strip():
            print("ledger init needs --fresh-start 'why': a ledger is only started over on "
                  "purpose (a new deployment), never to get past a wiped one", file=sys.stderr)
            return 2
        if ledger.initialise(f"fresh start: {args.fresh_start.strip()}", datetime.now(UTC)):
            print(f"{url}: initialised ({args.fresh_start.strip()})")
            return 0
    state = ledger.initialised()
    if state is None:
        print(f"{url}: NOT initialised: planning stops until it is (see `ledger init`)")
        return 1
    how, when = state
    print(f"{url}: initialised {when:%Y-%m-%d %H:%M} UTC: {how}; "
          f"{len(ledger.all())} deliveries recorded")
    for claim in ledger.open_claims():  # an upload under way, or an attempt that died
        print(f"  claimed, not delivered: {claim.agreement_id} {claim.round_id} "
              f"({claim.urgency}, {claim.slot}) by run {claim.run_id} since "
              f"{claim.claimed_at:%Y-%m-%d %H:%M} UTC; others may take over after "
              f"{claim.lease_until:%Y-%m-%d %H:%M} UTC")
    for destination, path, left_at in ledger.all_partials_left():  # an upload cut off
        print(f"  temporary file left at {destination}: {path} since {left_at:%Y-%m-%d %H:%M} "
              "UTC; the next upload there removes it")
    return 0


def _verify(engine, args: argparse.Namespace, url: str) -> int:
    """``ledger verify``: exit 0 if the chain holds (and holds the heads given), 1 naming the
    first bad row or link, 2 if it cannot be checked (no key for a keyed chain, bad anchor)."""
    from .ledger.audit import parse_anchor, verify
    from .ledger.chain import ChainKey, ChainKeyError, keyed, newest_head
    from .ledger.records import LedgerNeedsUpgrade

    try:
        key = ChainKey.from_file(args.key_file) if args.key_file else None
        published = newest_head(args.heads) if args.heads else None
        result = verify(keyed(engine, key), parse_anchor(args.anchor) if args.anchor else None,
                        published)
    except (LedgerNeedsUpgrade, ChainKeyError, ValueError) as exc:
        print(f"ledger verify: cannot check: {exc}", file=sys.stderr)
        return 2
    print(f"{url}: {result.line()}")
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dissemination")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate every policy file under include/")
    check.add_argument("--include", type=Path, default=DEFAULT_INCLUDE)
    check.add_argument("--today", type=date.fromisoformat, default=date.today(),
                       help="date for expiry checks (default: today)")
    check.set_defaults(func=_check)

    synth = sub.add_parser("synth", help="write a synthetic survey round, derived from the "
                           "country's rule set, into a SQL database or an export file")
    target = synth.add_mutually_exclusive_group(required=True)
    target.add_argument("--db", help="SQLAlchemy URL, e.g. sqlite:///survey.db")
    target.add_argument("--out", type=_export_path, metavar="FILE.csv|FILE.xlsx",
                        help="write it as the country's export (its headers and HXL row)")
    synth.add_argument("--include", type=Path, default=DEFAULT_INCLUDE)
    synth.add_argument("--country", default="NGA")
    synth.add_argument("--round", type=int, default=1)
    synth.add_argument("--sites", type=int, default=300)
    synth.add_argument("--seed", type=int, default=7)
    synth.add_argument("--status", choices=["partial", "cleaned"], default="partial")
    synth.set_defaults(func=_synth)

    check_round = sub.add_parser("check-round", help="check an export (CSV or XLSX, exactly as "
                                 "exported) against a country's round contract")
    check_round.add_argument("file", type=Path)
    check_round.add_argument("--country", required=True)
    check_round.add_argument("--include", type=Path, default=DEFAULT_INCLUDE)
    check_round.set_defaults(func=_check_round)

    dap = sub.add_parser("dap", help="import a Data Analysis Plan's Dissemination Category")
    dap.add_argument("file", type=Path, help="DAP sheet (.xlsx or .csv): A indicator, "
                     "B Dissemination Category, C classification (optional), D kind (optional); "
                     "optional columns headed Header(s), HXL, Values fill the contract")
    dap.add_argument("--country", required=True)
    dap.add_argument("--include", type=Path, default=DEFAULT_INCLUDE)
    dap.add_argument("--write", action="store_true", help="apply the diff (default: show it)")
    dap.set_defaults(func=_dap)

    ledger = sub.add_parser("ledger", help="the delivery ledger: status, declare a fresh start, "
                            "upgrade its schema, verify its hash chain")
    ledger.add_argument("action", choices=["status", "init", "upgrade", "verify", "called"])
    ledger.add_argument("--agreement", metavar="ID",
                        help="called: the agreement whose new password was phoned through")
    ledger.add_argument("--url", default=DEFAULT_LEDGER,
                        help="SQLAlchemy URL of the ledger (default: the demo's)")
    ledger.add_argument("--fresh-start", metavar="WHY",
                        help="init: why this ledger starts without history (recorded)")
    ledger.add_argument("--anchor", metavar="SEQ:SHA256",
                        help="verify: the chain head a previous verify printed or stored; "
                        "fails if the chain no longer holds it (cut short or rewritten)")
    ledger.add_argument("--heads", type=Path, metavar="DIR",
                        help="verify: a copy of the staging store's ledger-heads folder; fails "
                        "unless the chain holds the newest head published there")
    ledger.add_argument("--key-file", type=Path, metavar="FILE",
                        help="verify: the chain key (default: the file "
                        "DISSEMINATION_CHAIN_KEY_FILE names; a keyed chain needs it)")
    ledger.set_defaults(func=_ledger)

    from .registry.cli import register as sites_commands

    sites_commands(sub, DEFAULT_INCLUDE, DEFAULT_LEDGER)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
