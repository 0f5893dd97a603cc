"""Issue 32's findings 1, 3 and 4 through the steps, a real sshd and the ledger.

Finding 1: a site dropped from a republished round does not give its relational combination.
Finding 3: a hidden small count keeps room above it. Finding 4: a 3-site area shows its
number of sites, and a blank that protects nothing is shown. Findings 2 and 5 are in
test_rounds_linked.py and test_pooling.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pandas as pd
import sqlalchemy as sa
from test_run_steps import NOW, PASSWORD

from dissemination.classification import Urgency
from dissemination.delivery import deliver
from dissemination.ledger.migrations import open_upgraded
from dissemination.package.archive import open_package
from dissemination.runs import PackagingRun, package_deliveries, plan_deliveries

SECTOR = ("protection-cluster-nga",)
YES, NO = "armed_actors_military=yes", "armed_actors_military=no"


def _delivered(policy, meta, df, ledger, folder, exports, version, server=None):
    """The Protection Sector's package of ``meta``'s export ``version``, delivered through
    ``server`` (if given) and read back: medium per site for a partial round, monthly per
    state for a cleaned one."""
    urgency = Urgency.MEDIUM if meta.status == "partial" else Urgency.LOW
    plans = plan_deliveries(policy, meta, list(df.columns), urgency, today=date(2026, 11, 2),
                            only=SECTOR)
    packaged = package_deliveries(
        df, meta, plans, policy, folder, lambda variable: PASSWORD, ledger,
        PackagingRun(NOW, read_export=lambda rid, v: exports[rid, v], version=version))
    assert [d.status for d in packaged] == ["packaged"]
    if server is None:
        return open_package(packaged[0].package_path, PASSWORD)[1]
    done = deliver(packaged[0], lambda conn: server.target(), policy, ledger, NOW, "run")
    assert done.status == "recorded"
    return open_package(server.root / done.remote_path, PASSWORD)[1]


def _military(state: pd.Series) -> int | None:
    """A state's sites with the military, as its row gives it: shown, or ``sites`` less
    the sites without (``sites`` stays visible); None if the row does not determine it."""
    if not pd.isna(state[YES]):
        return int(state[YES])
    return None if pd.isna(state[NO]) else int(state["sites"] - state[NO])


def test_a_site_dropped_from_a_republished_round_does_not_give_its_relational_combination(
        policy, round_nga, server, tmp_path):
    """Finding 1. The Protection Sector (Public ceiling) receives the partial round per site
    (feeling of safety, the military dropped by safety_x_military), then the cleaned round per
    state (Borno: 98 sites, 55 with the military), then the cleaned round republished without
    one duplicate Borno site, which has the military (97, 54). 55 - 54 = 1: that site has the
    military, and its feeling of safety is held per site. Judged with the first cleaned export
    as delivered (its version, kept and read again), the difference is not determined."""
    meta, partial = round_nga
    cleaned = replace(meta, round_id="NGA-R001-cleaned", status="cleaned")
    first = partial.assign(round_id=cleaned.round_id)
    borno = first[first["admin1_pcode"] == "NG008"]
    dropped = borno.loc[borno["armed_actors_military"] == "yes", "site_id"].iloc[0]
    republished = first[first["site_id"] != dropped].reset_index(drop=True)
    military = int((borno["armed_actors_military"] == "yes").sum())
    assert 3 < military - 1 and military < len(borno)  # no primary: not 1..3, 0 nor all
    vp, v1, v2 = "a" * 64, "1" * 64, "2" * 64
    exports = {(meta.round_id, vp): partial, (cleaned.round_id, v1): first,
               (cleaned.round_id, v2): republished}

    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    per_site = _delivered(policy, meta, partial, ledger, tmp_path / "p1", exports, vp, server)
    assert "armed_actors_military" not in per_site  # the rule's last member, dropped per site
    site = per_site[per_site["site_id"] == dropped].iloc[0]
    assert not pd.isna(site["feeling_of_safety"])  # the other member, held per site
    before = _delivered(policy, cleaned, first, ledger, tmp_path / "p2", exports, v1, server)
    assert _military(before.set_index("admin1_pcode").loc["NG008"]) == military

    alone = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'alone.db'}"))
    unlinked = _delivered(policy, cleaned, republished, alone, tmp_path / "p0", exports, v2)
    assert _military(unlinked.set_index("admin1_pcode").loc["NG008"]) == military - 1  # gap
    _delivered(policy, cleaned, republished, ledger, tmp_path / "p3", exports, v2, server)

    # Everything the Sector received, read back from the server: both cleaned versions per
    # state, Borno's military count determined in at most one of them.
    received = [open_package(server.root / d.remote_path, PASSWORD)[1] for d in ledger.all()]
    assert len(received) == 3
    states = [t.set_index("admin1_pcode").loc["NG008"] for t in received if "site_id" not in t]
    assert sorted(int(s["sites"]) for s in states) == [len(borno) - 1, len(borno)]
    known = [_military(s) for s in states]
    assert None in known, known


def test_a_state_of_three_sites_shows_its_number_of_sites(policy, round_nga, server, tmp_path):
    """Finding 4. A cleaned round per state where Adamawa has 3 sites (not under
    ``min_sites``): its small counts are blank, its number of sites is shown. Site lists are
    public, so a ``sites`` of 3 is no small cell."""
    meta, df = round_nga
    adamawa = df.index[df["admin1_pcode"] == "NG002"]
    cleaned = replace(meta, round_id="NGA-R001-cleaned", status="cleaned")
    round_ = df.drop(adamawa[3:]).reset_index(drop=True).assign(round_id=cleaned.round_id)
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    per_state = _delivered(policy, cleaned, round_, ledger, tmp_path / "p", {}, "1" * 64,
                           server).set_index("admin1_pcode")
    sites = {a: None if pd.isna(n) else int(n) for a, n in per_state["sites"].items()}
    assert sites == {"NG002": 3, "NG008": 98, "NG036": 56}
    assert pd.isna(per_state.loc["NG002", YES]) and pd.isna(per_state.loc["NG002", NO])


SAFETY = ["feeling_of_safety=all_feel_safe", "feeling_of_safety=most_feel_safe",
          "feeling_of_safety=some_feel_safe", "feeling_of_safety=none_feel_safe"]


def test_a_state_count_its_holder_computes_from_per_site_answers_is_not_hidden_in_vain(
        policy, round_nga, server, tmp_path):
    """Finding 4. The Protection Sector holds every site's feeling of safety (partial, per
    site); Borno's count of sites where all feel safe is 2 in the cleaned round per state.
    The 2 stays blank (hidden for the rule, and the manifest says the Sector can compute it);
    Borno's other feeling-of-safety counts, which would only hide it from the row "sites =
    the sum of the answers", protect nothing the per-site answers do not give: shown."""
    meta, partial = round_nga
    borno = partial["admin1_pcode"] == "NG008"
    safety = partial["feeling_of_safety"].where(
        ~borno | (partial["feeling_of_safety"] != "all_feel_safe"), "most_feel_safe")
    safety[partial.index[borno][:2]] = "all_feel_safe"
    partial = partial.assign(feeling_of_safety=safety)
    cleaned = replace(meta, round_id="NGA-R001-cleaned", status="cleaned")
    first = partial.assign(round_id=cleaned.round_id)
    counts = first[borno]["feeling_of_safety"].value_counts()
    assert counts["all_feel_safe"] == 2 and counts.drop("all_feel_safe").between(
        4, borno.sum() - 1).all() and len(counts) == 4  # one primary in Borno's row: the 2
    exports = {(meta.round_id, "a" * 64): partial, (cleaned.round_id, "1" * 64): first}

    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    per_site = _delivered(policy, meta, partial, ledger, tmp_path / "p1", exports, "a" * 64,
                          server)
    assert per_site["feeling_of_safety"].notna().all()  # every site's answer, held
    _delivered(policy, cleaned, first, ledger, tmp_path / "p2", exports, "1" * 64, server)

    (record,) = [d for d in ledger.all() if d.round_id == cleaned.round_id]
    manifest, per_state = open_package(server.root / record.remote_path, PASSWORD)
    state = per_state.set_index("admin1_pcode").loc["NG008"]
    assert pd.isna(state[SAFETY[0]])  # the 2: hidden for the rule
    assert state[SAFETY[1:]].notna().all()  # the rest of its row: shown
    assert [int(state[c]) for c in SAFETY[1:]] == [int(counts[c.partition("=")[2]])
                                                   for c in SAFETY[1:]]
    (notes,) = [c["notes"] for c in manifest["explanation"]
                if c["column"] == "feeling_of_safety"]
    assert f"{SAFETY[0]}: 1 hidden cell(s) the organisation can compute from other cells it " \
        "receives (hidden for the rule, not for protection)" in notes


def test_a_hidden_small_count_keeps_room_above_it(policy, round_nga, server, tmp_path):
    """Finding 3. UNICEF's monthly package per site; one site has 2 women and 3 men among 5
    IDPs, both small, both blank. With the 5 shown, and a blank count known not to be 0, the
    women are 1 to 4: within less than the threshold (3) above their 2. The total is hidden
    too, so the women may be anything from 1 up."""
    meta, df = round_nga
    cleaned = replace(meta, round_id="NGA-R001-cleaned", status="cleaned")
    round_ = df.assign(round_id=cleaned.round_id)
    for column, value in (("idp_female", 2), ("idp_male", 3), ("idp_individuals", 5)):
        round_.loc[0, column] = value
    plans = plan_deliveries(policy, cleaned, list(round_.columns), Urgency.LOW,
                            today=date(2026, 11, 2), only=("unicef-nga",))
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    packaged = package_deliveries(round_, cleaned, plans, policy, tmp_path / "p",
                                  lambda variable: PASSWORD, ledger, PackagingRun(NOW))
    done = [deliver(d, lambda conn: server.target(), policy, ledger, NOW, "run")
            for d in packaged]
    assert {d.status for d in done} == {"recorded"}
    site = round_.loc[0, "site_id"]
    for delivery in done:
        _, table = open_package(server.root / delivery.remote_path, PASSWORD)
        row = table.set_index("site_id").loc[site]
        assert row[["idp_female", "idp_male", "idp_individuals"]].isna().all()
