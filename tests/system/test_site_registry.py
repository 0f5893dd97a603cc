"""The site registry: a key informant's name typed into ``site_name``, or a site never seen,
is held out of the round's packages (the rest ships) until a coordinator accepts it; the
first round is bootstrapped from a master list. Through the steps, a real sshd and ledger, the
CLI, and the page's figures."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from dissemination.__main__ import main as cli
from dissemination.classification import Urgency
from dissemination.delivery import deliver
from dissemination.devkit.synthetic import generate_round
from dissemination.intake import staging
from dissemination.ledger.audit import verify
from dissemination.ledger.migrations import open_upgraded
from dissemination.overview.page import LedgerView, build_overview
from dissemination.package.archive import open_package
from dissemination.policy import load_policy
from dissemination.registry.store import held_line, held_sites
from dissemination.runs import (
    Findings,
    PackagingRun,
    package_deliveries,
    plan_deliveries,
    stage_round,
)

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
PASSWORD = "a-long-enough-test-password"
NAME = "Musa Bello"  # the key informant, typed where the site's name goes
COORDINATOR = "Aisha Bello (DTM NGA)"


@pytest.fixture
def registry_on(include):
    """The tests' policy with the registry as shipped: on."""
    rules = include / "rules" / "default.yaml"
    rules.write_text(rules.read_text().replace("hold: false", "hold: true"))
    return include, load_policy(include)


def _round(policy, tmp_path, status="partial"):
    """A staged round (as the DAG's pull stages it) whose first site carries a person's name."""
    meta, df = generate_round(policy.rulesets["NGA"], 1, 60, seed=11, status=status)
    df.loc[0, "site_name"] = NAME
    staged = stage_round(meta, df, policy, tmp_path / status / "round.arrow")
    return meta, df, staged, staging.read_staged(staged["path"])


def _master_list(df, path, skip_last=True):
    """DTM's master list of the round's sites as they really are (before the name was typed),
    headed as the export heads them."""
    sites = df.iloc[:-1] if skip_last else df
    sites[["site_id", "site_name", "admin1_pcode", "admin2_pcode"]].to_csv(path, index=False)
    return path


def _registered(include, policy, tmp_path):
    """A ledger whose registry holds DTM's master list of all but the round's last site."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_upgraded(sa.create_engine(url))
    master = _master_list(generate_round(policy.rulesets["NGA"], 1, 60, seed=11)[1],
                          tmp_path / "NGA-sites.csv")
    assert _sites("load-master", str(master), "--country", "NGA", "--by", COORDINATOR,
                  url=url, include=include) == 0
    return url, ledger


def _sites(*args, url, include=None):
    extra = ["--include", str(include)] if include else []
    return cli(["sites", *args, "--url", url, *extra])


def _run(policy, meta, staged, frame, ledger, tmp_path, target_for, urgency=Urgency.MEDIUM):
    plans = plan_deliveries(policy, meta, staged["columns"], urgency,
                                  today=date(2026, 11, 2),
                                  found=Findings(active=staged["active_relational"]))
    packaged = package_deliveries(frame, meta, plans, policy, tmp_path / "pk",
                                        lambda variable: PASSWORD, ledger, PackagingRun(NOW))
    return [deliver(d, target_for, policy, ledger, NOW, "run") if d.status == "packaged"
            else d for d in packaged]


def test_a_name_in_site_name_and_a_new_site_wait_for_review_and_ship_once_accepted(
        registry_on, server, tmp_path, capsys):
    include, policy = registry_on
    meta, df, staged, frame = _round(policy, tmp_path)
    named, new = df.loc[0, "site_id"], df.iloc[-1]["site_id"]
    url, ledger = _registered(include, policy, tmp_path)
    assert "59 site(s) registered" in capsys.readouterr().out

    first = _run(policy, meta, staged, frame, ledger, tmp_path, lambda conn: server.target())
    assert {d.status for d in first} == {"recorded"}
    for d in first:
        manifest, data = open_package(server.root / d.remote_path, PASSWORD)
        assert NAME not in data.to_csv() and NAME not in json.dumps(manifest)
        assert not {named, new} & set(data["site_id"].tolist())
        assert any("2 site(s) held out for review" in w for w in manifest["warnings"])
    primary = next(d for d in first if d.agreement_id == "unicef-nga" and d.recipient == "primary")
    assert primary.row_count == len(df) - 2

    # Held, by key and why, for the task log, the page and the CLI; never the name.
    held = {h.site_key: h for h in held_sites(ledger.engine, "NGA")}
    assert set(held) == {named, new}
    assert held[named].reason == "site_name not the registered one"
    assert held[new].reason == "not in the registry"
    overview = build_overview(policy, LedgerView.read(ledger, NOW), NOW, verify(ledger.engine))
    (nga,) = [c for c in overview.countries if c.country == "NGA"]
    assert [h.site_key for h in nga.held_sites] == sorted([named, new])
    assert nga.held_count == overview.totals["sites_held"] == 2
    line = held_line(ledger.engine, "NGA", meta.round_id)  # the package task's log
    assert line.startswith(f"HELD for review {meta.round_id}: 2 site(s)") and NAME not in line
    assert f"{new} (not in the registry)" in line
    assert _sites("held", "--country", "NGA", url=url) == 0
    listed = capsys.readouterr().out
    assert named in listed and new in listed and NAME not in listed

    # The coordinator looked at the new site in the survey database: it may ship. The name
    # stays held. An acceptance of another round than the one reviewed is refused.
    accept = ["accept", "--country", "NGA", "--site", new, "--by", COORDINATOR,
              "--reason", "a new site of the October displacement, checked with the field"]
    assert _sites(*accept, "--round", "NGA-R009-partial", url=url) == 1
    assert _sites(*accept, "--round", meta.round_id, url=url) == 0
    assert [h.site_key for h in held_sites(ledger.engine, "NGA")] == [named]

    again = _run(policy, meta, staged, frame, ledger, tmp_path, lambda conn: server.target())
    # Judged with the tables the first run delivered (rebuilt without the sites it held):
    # the packages the new site changes go out again, the field focal point's area has none.
    primary = next(d for d in again if d.agreement_id == "unicef-nga" and d.recipient == "primary")
    assert primary.status == "recorded" and primary.row_count == len(df) - 1
    assert {d.status for d in again} <= {"recorded", "already_delivered"}
    _, data = open_package(server.root / primary.remote_path, PASSWORD)
    assert new in set(data["site_id"].tolist()) and named not in set(data["site_id"].tolist())
    assert NAME not in data.to_csv()
    audit = verify(ledger.engine)
    assert audit.ok and audit.rows["site_registry"] == 60  # 59 listed, 1 accepted: chained
    with ledger.engine.begin() as conn:  # someone registers the name behind the pipeline's back
        conn.execute(sa.text("UPDATE site_registry SET registered = (SELECT held FROM "
                             "sites_held) WHERE id = 1"))
    assert "FAILED at site_registry id=1 (chain seq 1)" in verify(ledger.engine).line()


def test_area_tables_are_made_of_the_sites_that_ship(registry_on, tmp_path):
    """A held site's people are not in its state's total either: the total of what ships."""
    include, policy = registry_on
    meta, df, staged, frame = _round(policy, tmp_path, status="cleaned")
    url, ledger = _registered(include, policy, tmp_path)
    plans = plan_deliveries(policy, meta, staged["columns"], Urgency.LOW,
                                  today=date(2026, 11, 2),
                                  found=Findings(active=staged["active_relational"]),
                                  only=["protection-cluster-nga"])
    (package,) = package_deliveries(frame, meta, plans, policy, tmp_path / "pk",
                                          lambda variable: PASSWORD, ledger, PackagingRun(NOW))
    assert package.level == "admin1"
    _, data = open_package(package.package_path, PASSWORD)
    shipped = df.iloc[1:-1]
    assert int(data["sites"].sum()) == len(shipped)
    per_state = shipped.groupby("admin1_pcode")["idp_individuals"].sum()
    shown = data.dropna(subset=["idp_individuals"])  # a total not suppressed: the shipped sites'
    assert len(shown) and all(int(total) == per_state[state] for state, total in zip(
        shown["admin1_pcode"], shown["idp_individuals"], strict=True))


def test_the_first_round_waits_for_a_master_list_then_ships_whole(registry_on, server,
                                                                   tmp_path, capsys):
    include, policy = registry_on
    meta, df, staged, frame = _round(policy, tmp_path)
    original = generate_round(policy.rulesets["NGA"], 1, 60, seed=11)[1]
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_upgraded(sa.create_engine(url))
    nothing = _run(policy, meta, staged, frame, ledger, tmp_path,
                   lambda conn: pytest.fail("nothing may be sent"))
    assert {d.status for d in nothing} == {"refused"}
    assert all("sites load-master" in d.reason for d in nothing)
    assert len(held_sites(ledger.engine, "NGA")) == len(df)

    # A master list with a phone number is refused under the contract, naming no value.
    phone = original.copy()
    phone.loc[0, "site_name"] = "+234 803 555 0101"
    bad = _master_list(phone, tmp_path / "bad.csv", skip_last=False)
    assert _sites("load-master", str(bad), "--country", "NGA", "--by", COORDINATOR, url=url,
                  include=include) == 1
    assert "0101" not in capsys.readouterr().err
    assert _sites("load-master", str(bad), "--country", "NGA", url=url, include=include) == 2

    master = _master_list(original, tmp_path / "NGA-sites.csv", skip_last=False)
    assert _sites("load-master", str(master), "--country", "NGA", "--by", COORDINATOR,
                  url=url, include=include) == 0
    # The export is corrected at source: every site as registered, the round ships whole.
    meta, df, staged, frame = _round(policy, tmp_path / "corrected")
    frame.loc[0, "site_name"] = original.loc[0, "site_name"]
    done = _run(policy, meta, staged, frame, ledger, tmp_path, lambda conn: server.target())
    assert {d.status for d in done} == {"recorded"}
    primary = next(d for d in done if d.agreement_id == "unicef-nga" and d.recipient == "primary")
    assert primary.row_count == len(df) and held_sites(ledger.engine) == []


@pytest.mark.system
def test_the_demo_registers_its_sites_so_it_delivers_as_before(registry_on, tmp_path, capsys):
    """`make demo` runs on the shipped policy, registry on: the sandbox loads a master list per
    country written from its synthetic rounds, so no site of either version is held."""
    from dissemination.devkit.sandbox import Sandbox
    from dissemination.registry.store import hold_out

    include, policy = registry_on
    box = Sandbox(tmp_path / "box", include)
    with box:  # its servers, as `make demo` starts them
        box.init(sites=20, seed=5)
    ledger = box.ledger()
    assert verify(ledger.engine).rows["site_registry"] == 20 * len(policy.rulesets)
    for country, ruleset in policy.rulesets.items():
        assert (box.home / "sites" / f"{country}.csv").exists()
        for status in ("partial", "cleaned"):
            meta, df = generate_round(ruleset, 1, 20, seed=5, status=status)
            staged = stage_round(meta, df, policy, tmp_path / country / f"{status}.arrow")
            review = hold_out(staging.read_staged(staged["path"]), meta.round_id, ruleset,
                              ledger, NOW)
            assert review.held == () and review.keep is None, (country, status)
    assert _sites("load-master", str(box.home / "sites" / "NGA.csv"), "--country", "NGA",
                  "--by", COORDINATOR, url=box.ledger_url, include=include) == 0
    assert "0 site(s) registered, 20 already registered as listed" in capsys.readouterr().out
    assert verify(box.ledger().engine).rows["site_registry"] == 20 * len(policy.rulesets)


def test_a_country_turning_the_registry_off_loosens_the_default_and_says_why(registry_on):
    from dissemination.policy import PolicyError

    include, _ = registry_on
    nga = include / "rules" / "NGA.yaml"
    nga.write_text(nga.read_text() + "site_registry: {hold: false}\n")
    with pytest.raises(PolicyError, match="site_registry.hold: false loosens rules/default"):
        load_policy(include)
    nga.write_text(nga.read_text().replace(
        "{hold: false}", "{hold: false, loosens_default: NGA names sites from the gazetteer.}"))
    policy = load_policy(include)
    assert not policy.rulesets["NGA"].site_registry.hold
    assert policy.rulesets["SSD"].site_registry.hold
    assert "NGA: site_registry.hold true -> false (NGA names sites from the gazetteer.)" in \
        policy.rulesets["NGA"].loosened
