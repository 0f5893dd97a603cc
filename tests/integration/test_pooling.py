"""Partners who pool: every holder's tables hide the same cells, so two organisations that
share their packages learn nothing either was refused (issue 32, finding 5), through the
steps, a real sshd and the ledger."""

from __future__ import annotations

from datetime import date

import pandas as pd
import sqlalchemy as sa
import yaml
from test_run_steps import NOW, PASSWORD, _six_sites

from dissemination.classification import Urgency
from dissemination.delivery import deliver
from dissemination.ledger.migrations import open_upgraded
from dissemination.package.archive import open_package
from dissemination.policy import load_policy
from dissemination.runs import PackagingRun, package_deliveries, plan_deliveries

AGREEMENTS = ("unicef-nga", "protection-cluster-nga")


def _pooling_policy(include):
    """UNICEF's medium tier per site, the Protection Sector's per state, the same count."""
    folder = include / "agreements"
    unicef = yaml.safe_load((folder / "unicef-nga.yaml").read_text())
    unicef["tiers"]["medium"]["indicators"] = ["round_id", "site_id", "admin1_pcode",
                                               "admin2_pcode", "unaccompanied_children"]
    unicef["tiers"]["medium"].pop("exact_counts")
    (folder / "unicef-nga.yaml").write_text(yaml.safe_dump(unicef))
    sector = yaml.safe_load((folder / "protection-cluster-nga.yaml").read_text())
    sector["max_classification"] = "confidential"
    sector["tiers"]["medium"] = {"window_hours": 72, "aggregate_to": "admin1",
                                 "indicators": ["round_id", "admin1_pcode", "admin1_name",
                                                "unaccompanied_children"]}
    (folder / "protection-cluster-nga.yaml").write_text(yaml.safe_dump(sector))
    return load_policy(include)


def test_two_organisations_pooling_their_packages_recover_no_hidden_site(
        include, round_nga, server, tmp_path):
    """Six sites of one state, unaccompanied children 2, 9, 8, 7, 6, 5. UNICEF receives them
    per site (the 2 hidden), the Protection Sector per state (37). Protected one organisation
    at a time, each package is safe alone, and pooled 37 - (9 + 8 + 7 + 6 + 5) = 2. Decided
    once for both, one more cell is hidden in both packages alike."""
    policy = _pooling_policy(include)
    meta, df = _six_sites(round_nga, [2, 9, 8, 7, 6, 5])
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                            today=date(2026, 11, 2), only=AGREEMENTS)
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    packaged = package_deliveries(df, meta, plans, policy, tmp_path / "pk", lambda v: PASSWORD,
                                  ledger, PackagingRun(NOW))
    done = [deliver(d, lambda conn: server.target(), policy, ledger, NOW, "run")
            for d in packaged]
    assert {d.status for d in done} == {"recorded"}
    assert {d.agreement_id for d in done} == set(AGREEMENTS)

    # Both organisations' packages, read back from the server, pooled.
    per_site, per_state = [], []
    for delivery in ledger.all():
        _, table = open_package(server.root / delivery.remote_path, PASSWORD)
        (per_site if "site_id" in table else per_state).append(table)
    assert per_site and per_state
    site_ids = {s for t in per_site for s in t["site_id"]}
    shown = {s: v for t in per_site for s, v in zip(t["site_id"], t["unaccompanied_children"],
                                                    strict=True) if not pd.isna(v)}
    assert len(site_ids) == 6
    for state in per_state:
        total = state["unaccompanied_children"].iloc[0]
        # The state total, less every site either shows, leaves two sites or more unknown.
        assert pd.isna(total) or len(site_ids) - len(shown) >= 2
    # And one decision per cell: a site blank in one package is blank in every package.
    for table in per_site:
        for site, value in zip(table["site_id"], table["unaccompanied_children"], strict=True):
            assert pd.isna(value) == (site not in shown)
