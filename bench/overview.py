"""The Dissemination page's figures at a global deployment's size after years of history, against
the same page for a small deployment, in the same run.

The page (``dissemination_ui.app.read_overview``) reads the ledger (``LedgerView.read``),
checks its hash chain from the last passing daily audit's head (``audit.verify_since``; here
``DAY`` entries before the end) and builds the overview (``build_overview``), then renders it. Here
each part is timed on its own, without Airflow, on a SQLite ledger filled with: ``--agreements``
agreements (``bench/policies.py``), ``--months`` months of history, each month a low-tier delivery
per agreement and ``--urgent`` medium-tier deliveries per agreement, a quarterly password rotation
per agreement, one failed attempt per 20 deliveries, and the intake of a partial and a cleaned round
per country and month. The reference: the same for the tests' three agreements and one month.

- ``overview_1000_s``: read + chain + build + render at the large size;
- ``overview_1000_vs_small``: that / the reference;
- ``overview_1000_one_country_s``: the same for one country's page (``?country=``);
- ``ledger_verify_72k_s``: the whole chain's check at the large size (the daily audit's).

    make bench   # or: PYTHONPATH=plugins .venv/bin/python bench/overview.py [--months 24]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from policies import build_policy, spread_policy  # noqa: E402
from summary import Figure, record  # noqa: E402

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY = 1_000  # entries chained since the last daily audit: about a day's at 1,000 agreements
#: A manifest explanation of a realistic width: what each delivery row carries.
COLUMNS = json.dumps([{"name": f"indicator_{i}", "source": f"q{i}", "classification": "public",
                       "rule": f"NGA.yaml columns.indicator_{i} (public at low)"}
                      for i in range(40)], sort_keys=True)


def fill(ledger, policy, months: int, urgent: int) -> int:
    """History of ``months`` months before NOW; the number of deliveries written."""
    import sqlalchemy as sa

    from dissemination.ledger.rows import insert_chained
    from dissemination.ledger.tables import (
        deliveries,
        delivery_failures,
        intake_log,
        password_rotations,
    )

    written = 0
    with ledger.engine.begin() as conn:  # one transaction: this is a fixture, not the subject
        for month in range(months, 0, -1):
            start = NOW - timedelta(days=30 * month)
            for country in sorted({c for a in policy.agreements.values() for c in a.countries}):
                for n, status in enumerate(("partial", "cleaned")):
                    insert_chained(conn, intake_log, dict(
                        round_id=f"{country}-R{months - month + 1:03d}-{status}",
                        content_sha256=f"{month:02d}{n}".ljust(64, "0"), country=country,
                        status=status, exported_at=start, seen_at=start, version=1))
            for i, agreement in enumerate(policy.agreements.values()):
                country = sorted(agreement.countries)[0]
                tiers = [("low", f"{country}-R{months - month + 1:03d}-cleaned")] + \
                    [("medium", f"{country}-R{months - month + 1:03d}-partial")] * urgent
                for k, (urgency, round_id) in enumerate(tiers):
                    at = start + timedelta(hours=k, minutes=i % 60)
                    insert_chained(conn, deliveries, dict(
                        agreement_id=agreement.id, organisation=f"Partner {i}",
                        organisation_id=agreement.organisation, recipient="primary",
                        focal_point_name="A. Focal", focal_point_email="a@example.org",
                        round_id=round_id, country=country, urgency=urgency, level=urgency,
                        rules_version="0" * 64, columns=COLUMNS, row_count=100_000,
                        content_sha256=f"{written:064d}", package_sha256=f"{written:064x}",
                        package_name=f"{round_id}_{agreement.id}.zip",
                        destination="sftp:/in", remote_path=f"/in/{round_id}.zip",
                        delivered_at=at, run_id=f"run-{month}", deadline=at + timedelta(
                            hours=48), deadline_met=True))
                    written += 1
                    if written % 20 == 0:
                        conn.execute(delivery_failures.insert().values(
                            agreement_id=agreement.id, round_id=round_id, urgency=urgency,
                            slot="main", focal_point_name="A. Focal", run_id=f"run-{month}",
                            failed_at=at - timedelta(minutes=5), permanent=False,
                            reason="UploadFailed: connection reset; retrying is safe"))
                if month % 3 == 0:
                    insert_chained(conn, password_rotations, dict(
                        agreement_id=agreement.id, variable=f"{agreement.id}_password",
                        rotated_at=start, focal_point_to_tell="A. Focal", notified_at=start,
                        called_at=start + timedelta(days=1)))
        conn.execute(sa.text("ANALYZE"))
    return written


def last_audit(ledger) -> tuple[int, str]:
    """The head a daily audit that passed ``DAY`` entries ago would have kept."""
    import sqlalchemy as sa

    from dissemination.ledger.tables import audit_chain

    with ledger.engine.connect() as conn:
        seq = max(conn.execute(sa.select(sa.func.max(audit_chain.c.seq))).scalar() - DAY, 0)
        digest = conn.execute(sa.select(audit_chain.c.chain_sha256)
                              .where(audit_chain.c.seq == seq)).scalar()
    return seq, digest or "0" * 64


def page(ledger, policy, anchor: tuple[int, str], country: str | None = None
         ) -> dict[str, float]:
    """Seconds of each part of one page load (of every country, or of ``country``), as
    ``read_overview`` and the route do it."""
    from dissemination_ui.app import render_page

    from dissemination.ledger.audit import verify_since
    from dissemination.overview.page import LedgerView, build_overview

    times, start = {}, time.perf_counter()
    view = LedgerView.read(ledger, NOW, policy, country)
    times["read"] = time.perf_counter() - start
    audit = verify_since(ledger.engine, anchor)
    times["chain"] = time.perf_counter() - sum(times.values()) - start
    overview = build_overview(policy, view, NOW, audit, country)
    times["build"] = time.perf_counter() - sum(times.values()) - start
    html = render_page(overview, "")
    times["render"] = time.perf_counter() - sum(times.values()) - start
    if not audit.ok or overview.totals["up to date"] + overview.totals["due"] == 0 \
            or "<table" not in html:
        raise RuntimeError("the page did not come out as expected")
    times["total"] = sum(times.values())
    return times


def deployment(folder: Path, agreements: int, months: int, urgent: int, countries: int = 0):
    import sqlalchemy as sa

    from dissemination.ledger.migrations import open_upgraded
    from dissemination.policy import load_policy

    folder.mkdir()
    policy = load_policy(spread_policy(folder, agreements, countries) if countries
                         else build_policy(folder, agreements))
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{folder / 'ledger.db'}"))
    return policy, ledger, fill(ledger, policy, months, urgent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agreements", type=int, default=1000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--urgent", type=int, default=2,
                        help="medium-tier deliveries per agreement and month")
    parser.add_argument("--countries", type=int, default=20,
                        help="countries the agreements are spread over")
    args = parser.parse_args()
    from dissemination.ledger.audit import verify

    with tempfile.TemporaryDirectory(prefix="bench-overview-") as tmp:
        small = deployment(Path(tmp) / "small", 3, 1, args.urgent)
        large = deployment(Path(tmp) / "large", args.agreements, args.months, args.urgent,
                           args.countries)
        best = {}
        for name, (policy, ledger, _) in (("small", small), ("large", large)):
            anchor = last_audit(ledger)
            runs = [page(ledger, policy, anchor) for _ in range(3)]
            best[name] = min(runs, key=lambda t: t["total"])
        policy, ledger, _ = large
        country = sorted({c for a in policy.agreements.values() for c in a.countries})[0]
        runs = [page(ledger, policy, last_audit(ledger), country) for _ in range(3)]
        best["country"] = min(runs, key=lambda t: t["total"])
        start = time.perf_counter()
        if not verify(large[1].engine).ok:
            raise RuntimeError("the filled ledger does not verify")
        audit_s = time.perf_counter() - start
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in best["large"].items() if k != "total")
    print(f"page at {args.agreements} agreements in {args.countries} countries, {large[2]} "
          f"deliveries over {args.months} months: {best['large']['total']:.2f} s ({parts}); "
          f"at 3 agreements, one month "
          f"({small[2]} deliveries): {best['small']['total'] * 1000:.0f} ms")
    print(f"(the chain checked from the last audit's head, {DAY} entries since; the whole chain, "
          f"as the daily audit checks it: {audit_s:.2f} s)")
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in best["country"].items() if k != "total")
    print(f"one country's page ({country}, ?country=): {best['country']['total']:.2f} s ({parts})")
    size = f"{args.agreements:,} agreements, {args.months} months"
    record(overview_1000_s=Figure(round(best["large"]["total"], 2),
                                  f"seconds, the whole page, {size}"),
           overview_1000_vs_small=Figure(
               round(best["large"]["total"] / best["small"]["total"], 1),
               f"whole page, {size} / 3 agreements, one month"),
           overview_1000_one_country_s=Figure(round(best["country"]["total"], 2),
                                              f"seconds, one country's page, {size}"),
           ledger_verify_72k_s=Figure(round(audit_s, 2),
                                      f"seconds, the whole hash chain's check, {size}"))


if __name__ == "__main__":
    main()
