"""Hostile headers: a header cell is typed text, so one the contract does not declare is named by
its position and never shipped, logged or stored; one holding a contact blocks the round; a
misspelt header is named with the declared indicator it comes nearest to."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from dissemination.__main__ import main
from dissemination.classification import Urgency
from dissemination.devkit.synthetic import generate_round
from dissemination.intake import staging
from dissemination.intake.fresh import import_drop
from dissemination.intake.source import RoundMeta
from dissemination.ledger.migrations import open_upgraded
from dissemination.package.archive import open_package
from dissemination.runs import (
    Findings,
    PackagingRun,
    package_deliveries,
    plan_deliveries,
    pull_round,
)

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
PASSWORD = "a-long-enough-test-password"
ROUND = "NGA-R001-partial"
NOTE = "Note KI Zainab Okonkwo says soldiers beat people"


def _export(tmp_path, policy, edit) -> tuple[Path, list[str]]:
    """An NGA export of 8 sites in the drop folder, its frame passed to ``edit`` first; and
    its headers as written."""
    _, df = generate_round(policy.rulesets["NGA"], 1, 8, seed=4)
    df = edit(df.drop(columns=["round_id"]))
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    df.to_csv(drop / f"{ROUND}.csv", index=False)
    return drop, list(df.columns)


def _packages(policy, survey, tmp_path) -> list[dict]:
    """Every manifest of the round's packages, through the DAG's steps."""
    staged = pull_round(survey, ROUND, policy, tmp_path / "stage" / "round.arrow")
    plans = plan_deliveries(policy, RoundMeta.from_xcom(staged), staged["columns"],
                                  Urgency.MEDIUM, today=date(2026, 11, 2),
                                  found=Findings(active=staged["active_relational"]))
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    packaged = package_deliveries(staging.read_staged(staged["path"]),
                                        RoundMeta.from_xcom(staged), plans, policy,
                                        tmp_path / "out", lambda _: PASSWORD, ledger,
                                        PackagingRun(NOW))
    assert packaged
    return [open_package(p.package_path, PASSWORD)[0] for p in packaged]


def test_a_header_no_rule_declares_is_named_by_position_everywhere(policy, tmp_path, capsys,
                                                                    include, caplog):
    """The column is dropped unread as before; its header text is in no log line, no
    ``round_columns`` row and no manifest, where it is "column 23"."""
    drop, headers = _export(tmp_path, policy, lambda df: df.assign(**{NOTE: "seen"}))
    position = headers.index(NOTE) + 1
    assert main(["check-round", "--country", "NGA", "--include", str(include),
                 str(drop / f"{ROUND}.csv")]) == 0
    checked = capsys.readouterr().out
    assert f"column {position}, no rule: Secret, dropped unread" in checked
    survey = sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}")
    caplog.set_level(logging.INFO, logger="dissemination.intake.fresh")
    assert import_drop(drop, survey, NOW, policy) == [ROUND]
    logged = caplog.text
    assert f"column {position}" in logged
    with survey.connect() as conn:
        stored = conn.execute(sa.text("select name, stored from round_columns")).all()
    assert (f"column {position}", False) in stored
    manifests = _packages(policy, survey, tmp_path)
    for manifest in manifests:
        explained = {e["column"]: e for e in manifest["explanation"]}
        assert explained[f"column {position}"]["decision"] == "dropped"
    shipped = json.dumps(manifests)
    for said in (checked, logged, str(stored), shipped):
        assert "Zainab" not in said and "enumerator_id" not in said


@pytest.mark.parametrize("header", [f"{NOTE} +234 803 555 1234", "zainab.okonkwo@example.org"],
                         ids=["a phone number", "an e-mail address"])
def test_a_header_holding_a_contact_blocks_the_round_named_by_position(policy, tmp_path, capsys,
                                                                       include, header, caplog):
    drop, headers = _export(tmp_path, policy, lambda df: df.assign(**{header: "seen"}))
    position = headers.index(header) + 1
    assert main(["check-round", "--country", "NGA", "--include", str(include),
                 str(drop / f"{ROUND}.csv")]) == 1
    checked = capsys.readouterr().out
    survey = sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}")
    caplog.set_level(logging.INFO, logger="dissemination.intake.fresh")
    assert import_drop(drop, survey, NOW, policy) == []
    error = (drop / "rejected" / f"{ROUND}.csv.error").read_text()
    for said in (checked, error, caplog.text):
        assert f"column {position}: the header holds what looks like a phone number or " \
               "e-mail address" in said
        assert "zainab" not in said.lower() and "555" not in said and "@" not in said


def test_two_undeclared_headers_alike_are_named_by_position(policy, tmp_path):
    def edit(df):
        df = df.assign(note=1, other=2)
        return df.rename(columns={"note": "Zainab's  note", "other": "zainab's note"})

    drop, headers = _export(tmp_path, policy, edit)
    survey = sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}")
    assert import_drop(drop, survey, NOW, policy) == []
    error = (drop / "rejected" / f"{ROUND}.csv.error").read_text()
    first, second = len(headers) - 1, len(headers)
    assert f"two columns are headed column {first} and column {second}" in error
    assert "ainab" not in error


def test_a_misspelt_header_is_named_with_the_indicator_it_is_near(policy, tmp_path, capsys,
                                                                  include, caplog):
    """``Site-Name`` and ``# of IDP individuals`` match no declared header: check-round, the
    drop's log and every manifest say which indicators no column is, and which unmatched
    column comes nearest, by position."""
    renamed = {"site_name": "Site-Name", "idp_individuals": "# of IDP individuals"}
    drop, headers = _export(tmp_path, policy, lambda df: df.rename(columns=renamed))
    site, idps = (headers.index(h) + 1 for h in renamed.values())
    said = (f"declared in rules/NGA, no column is: site_name (nearest unmatched: column {site}), "
            f"idp_individuals (nearest unmatched: column {idps})")
    assert main(["check-round", "--country", "NGA", "--include", str(include),
                 str(drop / f"{ROUND}.csv")]) == 0
    checked = capsys.readouterr().out
    survey = sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}")
    caplog.set_level(logging.INFO, logger="dissemination.intake.fresh")
    assert import_drop(drop, survey, NOW, policy) == [ROUND]
    logged = caplog.text
    manifests = _packages(policy, survey, tmp_path)
    assert said in checked and f"{ROUND}.csv: {said}" in logged
    assert all(said in manifest["warnings"] for manifest in manifests)
    for text in (checked, logged, json.dumps(manifests)):
        assert "Site-Name" not in text and "# of IDP" not in text


def test_a_clean_export_names_nothing_missing(policy, tmp_path, capsys, include):
    drop, _ = _export(tmp_path, policy, lambda df: df)
    assert main(["check-round", "--country", "NGA", "--include", str(include),
                 str(drop / f"{ROUND}.csv")]) == 0
    assert "no column is" not in capsys.readouterr().out


def test_a_header_matched_by_its_hxl_tag_alone_is_named_by_position(policy):
    """A column matched by its HXL tag keeps its header unread: it is named by position."""
    from dissemination.intake.contract import conform

    bfa = policy.rulesets["BFA"]
    raw = pd.DataFrame({"Call Zainab on +226 70 12 34 99": ["#loc+id", "BFA-S00001"]})
    (violation,) = [v for v in conform(raw, bfa).violations if "header holds" in v.problem]
    assert violation.line().startswith("column 1 (site_id): the header holds")
    assert "Zainab" not in str(conform(raw, bfa))


def test_a_header_stored_by_an_earlier_intake_is_withheld_from_packages(policy, tmp_path):
    """A round imported before headers were named by position keeps a dropped header's text
    in ``round_columns``: a run that pulls it names that column without it."""
    from dissemination.intake.source import write_round

    meta, df = generate_round(policy.rulesets["NGA"], 1, 8, seed=4)
    survey = sa.create_engine(f"sqlite:///{tmp_path / 'survey.db'}")
    write_round(survey, RoundMeta(ROUND, "NGA", "partial", meta.collected_at,
                                  dropped=("ki_phone", NOTE)), df.drop(columns=["ki_phone"]))
    staged = pull_round(survey, ROUND, policy, tmp_path / "stage" / "round.arrow")
    assert staged["dropped"] == ["ki_phone", "dropped column 1"]
    assert "ki_phone" in staged["columns"] and "dropped column 1" in staged["columns"]
    manifests = _packages(policy, survey, tmp_path)
    assert "Zainab" not in json.dumps([staged, manifests])
