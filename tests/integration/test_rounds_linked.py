"""Rounds are linked: a round's packages are judged with the tables their recipient holds of
the country's neighbouring rounds (issue 32, finding 2), through the steps, a real sshd and
the ledger."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pandas as pd
import sqlalchemy as sa
from test_run_steps import NOW, PASSWORD, _six_sites, _versions_policy

from dissemination.classification import Urgency
from dissemination.delivery import deliver
from dissemination.disclosure import NotAsDelivered
from dissemination.ledger.migrations import open_upgraded
from dissemination.package.archive import open_package
from dissemination.runs import PackagingRun, package_deliveries, plan_deliveries, round_columns


def _round(meta, df, number: int, status: str):
    round_id = f"NGA-R{number:03d}-{status}"
    return replace(meta, round_id=round_id, status=status), df.assign(round_id=round_id)


def _package(policy, meta, df, ledger, folder, read_export):
    urgency = Urgency.MEDIUM if meta.status == "partial" else Urgency.LOW
    plans = plan_deliveries(policy, meta, list(df.columns), urgency, today=date(2026, 11, 2),
                            only=("unicef-nga",))
    return plans, package_deliveries(df, meta, plans, policy, folder, lambda v: PASSWORD,
                                     ledger, PackagingRun(NOW, read_export=read_export))


def _children(path) -> list[int | None]:
    _, data = open_package(path, PASSWORD)
    return [None if pd.isna(v) else int(v) for v in data["unaccompanied_children"]]


def test_a_later_round_per_state_does_not_give_back_a_site_an_earlier_round_hid(
        include, round_nga, server, tmp_path):
    """Six sites of one state keep their children (2, 9, 8, 7, 6, 5) from R001 to R002. R001
    goes out per site (medium path), the 2 hidden; R002 cleaned per state (monthly): 37 alone,
    and 37 - (9 + 8 + 7 + 6 + 5) = 2. Judged with R001's tables as delivered (kept in the
    ledger, rebuilt from R001's export), the total is hidden; without them, the export cannot
    be read: withheld. A round beyond the horizon (R003 for R001's tables) needs no export."""
    policy = _versions_policy(include)
    meta, r1 = _six_sites(round_nga, [2, 9, 8, 7, 6, 5])
    meta2, r2 = _round(meta, r1, 2, "cleaned")
    exports, asked = {meta.round_id: r1, meta2.round_id: r2}, []

    def read_export(round_id, version):
        asked.append(round_id)
        if round_id not in exports:
            raise NotAsDelivered(f"{round_id}: the export its tables were made from cannot be "
                                 "read")
        return exports[round_id]

    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    _, first = _package(policy, meta, r1, ledger, tmp_path / "p1", read_export)
    done = [deliver(d, lambda conn: server.target(), policy, ledger, NOW, "run") for d in first]
    assert [d.status for d in done] == ["recorded", "recorded"]  # the primary and field FP
    assert _children(server.root / done[0].remote_path) == [None, 9, 8, 7, 6, 5]

    alone = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'alone.db'}"))
    _, (unlinked, _) = _package(policy, meta2, r2, alone, tmp_path / "p0", read_export)
    assert _children(unlinked.package_path) == [37]  # the gap: R002 judged on its own
    plans, second = _package(policy, meta2, r2, ledger, tmp_path / "p2", read_export)
    done = [deliver(d, lambda conn: server.target(), policy, ledger, NOW, "run") for d in second]
    assert [d.status for d in done] == ["recorded", "recorded"]

    # Everything the organisation received, read back from the server: no total is shown, so
    # no sum of what it holds gives the 2 (R001's other sites are all visible).
    received = [open_package(server.root / d.remote_path, PASSWORD)[1] for d in ledger.all()]
    assert len(received) == 4
    totals = [t for t in received if "site_id" not in t]
    assert len(totals) == 2 and all(pd.isna(v) for t in totals
                                    for v in t["unaccompanied_children"])
    assert asked == [meta.round_id]  # R001's export, read again to rebuild its tables
    assert round_columns(meta2.round_id, plans, list(r2.columns), ledger, policy) \
        == list(r2.columns)  # read whole: R001's tables are linked to it by site

    # R001's export removed: R001 is within the horizon of a R002 exported again, withheld.
    del exports[meta.round_id]
    again = r2.assign(unaccompanied_children=r2["unaccompanied_children"] + 1)
    _, withheld = _package(policy, meta2, again, ledger, tmp_path / "p3", read_export)
    assert {d.status for d in withheld} == {"refused"}
    assert "withheld: UNICEF holds tables of NGA-R001-partial" in withheld[0].reason
    assert "cannot be read" in withheld[0].reason

    # R003 is judged with R002's tables (its neighbour), not R001's (two rounds away, beyond
    # ``ROUND_HORIZON``: docs/disclosure.md says what that leaves): no need of its export.
    meta3, r3 = _round(meta, r1, 3, "cleaned")
    asked.clear()
    _, third = _package(policy, meta3, r3, ledger, tmp_path / "p4", read_export)
    assert {d.status for d in third} == {"packaged"}
    assert asked == [meta2.round_id]
