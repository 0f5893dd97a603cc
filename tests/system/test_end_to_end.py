"""The whole slice through real Airflow (`airflow dags test`) and a real OpenSSH SFTP server.

One sandbox per module: an Airflow home on SQLite, a survey database with a synthetic round, a
ledger, and sshd on loopback. The partner's side is played for real: download over SFTP, decrypt
with the password from the Airflow Variable, compare with what the policy allows.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta

import paramiko
import pytest
import sqlalchemy as sa
from conftest import POLICY_DIR

from dissemination.classification import Classification, Urgency
from dissemination.classify.sensitivity import (
    active_relational,
    classify_round,
    select_for_agreement,
)
from dissemination.delivery.sftp_target import parse_host_key
from dissemination.devkit.local_sftp import LocalSftpServer
from dissemination.devkit.sandbox import Sandbox
from dissemination.devkit.synthetic import generate_round
from dissemination.disclosure import build_content
from dissemination.intake import staging
from dissemination.intake.reading import read_round
from dissemination.intake.source import write_round
from dissemination.package.archive import open_package

# System tier: `airflow dags test` runs the urgent DAG in a sandbox over sshd.
pytestmark = pytest.mark.system

CONF = {"country": "NGA", "justification": "end-to-end test of the urgent path"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    box = Sandbox(tmp_path_factory.mktemp("sandbox"), POLICY_DIR)
    with box:
        box.init(sites=150, seed=3)
        box.first_run = box.run_urgent(CONF)
        yield box


@pytest.fixture(scope="module")
def passwords(sandbox):
    return {a.password.variable: sandbox.password(a.password.variable)
            for a in sandbox.policy.agreements.values()}


def _task_states(sandbox) -> list[tuple]:
    with sqlite3.connect(sandbox.airflow_home / "airflow.db") as db:
        return db.execute(
            "select task_id, map_index, rendered_map_index, state from task_instance "
            "where run_id = (select run_id from dag_run order by id desc limit 1) "
            "order by task_id, map_index").fetchall()


def _download(sandbox, remote_path, local_dir):
    """Fetch a package as the partner would: SFTP with the server's host key verified."""
    target = sandbox.sftp.target()
    client = paramiko.SSHClient()
    key = parse_host_key(target.host_key)
    client.get_host_keys().add(f"[{target.host}]:{target.port}", key.get_name(), key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(target.host, target.port, target.username,
                   key_filename=target.private_key_path, look_for_keys=False, allow_agent=False)
    try:
        local = local_dir / remote_path.rsplit("/", 1)[-1]
        client.open_sftp().get(remote_path, str(local))
        return local
    finally:
        client.close()


def test_the_urgent_run_succeeds_with_one_mapped_delivery_per_organisation(sandbox):
    assert sandbox.first_run.returncode == 0, sandbox.first_run.stdout[-3000:]
    states = _task_states(sandbox)
    assert all(state == "success" for *_, state in states), states
    delivered = sorted(r for t, _, r, _ in states if t == "deliver")
    covering = sandbox.policy.agreements_for("NGA", Urgency.MEDIUM)
    expected = Counter(sandbox.policy.organisation_name(a) for a in covering)
    expected["UNICEF"] += 1  # the field focal point, Musa Ibrahim, receives his areas' rows
    assert delivered == [f"{org} ({n} deliver{'y' if n == 1 else 'ies'})"
                         for org, n in sorted(expected.items())]
    assert sorted(r for t, _, r, _ in states if t == "notify") == delivered
    # Staging cleaned after success; the partial export the packages were made from is kept.
    assert [p.name for p in (sandbox.work_dir / "runs").iterdir()] == ["exports"]
    log = sandbox.first_run.stdout
    assert "UNICEF, unicef-nga (NGA-R001-partial) -> Musa Ibrahim: recorded" in log


def test_each_partner_receives_exactly_what_the_policy_allows(sandbox, passwords, tmp_path):
    ledger = sandbox.ledger()
    records = {(r.agreement_id, r.recipient): r for r in ledger.all()}
    meta, source = read_round(sandbox.survey(),
                              "NGA-R001-partial")
    ruleset = sandbox.policy.rulesets["NGA"]
    base = classify_round(source.columns, ruleset)
    active = active_relational(source, ruleset)
    assert {a for a, _ in records} == {
        a.id for a in sandbox.policy.agreements_for("NGA", Urgency.MEDIUM)}
    for (agreement_id, recipient), record in records.items():
        agreement = sandbox.policy.agreements[agreement_id]
        local = _download(sandbox, record.remote_path, tmp_path)
        manifest, data = open_package(local, passwords[agreement.password.variable])
        expected = select_for_agreement(base, ruleset, agreement, Urgency.MEDIUM, active=active)
        assert list(data.columns) == expected.columns
        secret = {c for c, d in base.items() if d.classification is Classification.SECRET}
        assert secret >= {"ki_name", "ki_phone", "enumerator_comments", "enumerator_id"}
        assert not secret & set(data.columns)
        assert all(Classification(c["classification"]) <= agreement.max_classification
                   for c in manifest["columns"])
        rows = source
        for person in sandbox.policy.focal_points[agreement.focal_points].field:
            if recipient == f"field:{person.name}":
                for column, values in person.areas.items():
                    rows = rows[rows[column].isin(values).to_numpy()].reset_index(drop=True)
        want = build_content(rows, expected, ruleset).frame
        for column in data.columns:
            assert data[column].astype(str).tolist() == want[column].astype(str).tolist()
        for column in expected.exact_counts:  # follow-up counts arrive exactly as collected
            assert data[column].tolist() == rows[column].tolist()
        assert record.row_count == len(rows) and record.level == "site"
        assert record.content_sha256 == manifest["data_sha256"]
        people = sandbox.policy.focal_points[agreement.focal_points]
        assert record.focal_point_name == (people.primary.name if recipient == "primary"
                                           else recipient.removeprefix("field:"))
        assert record.rules_version == ruleset.version


def test_relational_rule_holds_end_to_end(sandbox, passwords, tmp_path):
    record = next(r for r in sandbox.ledger().all()
                  if r.agreement_id == "protection-cluster-nga")
    local = _download(sandbox, record.remote_path, tmp_path)
    manifest, data = open_package(local, passwords["package_password_protection_cluster_nga"])
    assert "feeling_of_safety" in data.columns and "armed_actors_military" not in data.columns
    explained = {e["column"]: e for e in manifest["explanation"]}
    assert "safety_x_military" in explained["armed_actors_military"]["reason"]


def test_7zip_opens_the_delivered_package(sandbox, passwords, tmp_path):
    record = next(r for r in sandbox.ledger().all()
                  if r.agreement_id == "unicef-nga" and r.recipient == "primary")
    local = _download(sandbox, record.remote_path, tmp_path)
    out = tmp_path / "7z"
    subprocess.run([shutil.which("7z") or "7z", "x",
                    f"-p{passwords['package_password_unicef_nga']}", f"-o{out}", str(local)],
                   check=True, capture_output=True)
    assert json.loads((out / "manifest.json").read_text())["agreement"]["id"] == "unicef-nga"


def test_no_password_in_any_log_or_xcom(sandbox, passwords):
    haystacks = [sandbox.first_run.stdout]
    haystacks += [p.read_text(errors="replace") for p in
                  (sandbox.airflow_home / "logs").rglob("*") if p.is_file()]
    with sqlite3.connect(sandbox.airflow_home / "airflow.db") as db:
        haystacks += [str(v) for (v,) in db.execute("select value from xcom")]
    for name, password in passwords.items():
        assert len(password) >= 16
        assert not any(password in h for h in haystacks), f"password {name} leaked"


def test_a_rerun_delivers_nothing_twice(sandbox):
    before = sorted(p.name for p in sandbox.landed())
    rerun = sandbox.run_urgent(CONF)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "already_delivered" in rerun.stdout
    assert sorted(p.name for p in sandbox.landed()) == before
    assert len(sandbox.ledger().all()) == len(before)


def test_wrong_host_key_fails_the_delivery_and_leaves_nothing(sandbox, tmp_path):
    meta, df = generate_round(sandbox.policy.rulesets["NGA"], 2, 80, seed=5)
    write_round(sandbox.survey(), meta, df)
    impostor = LocalSftpServer(tmp_path / "impostor")
    impostor._write_config()
    sandbox.host_key_override = impostor.host_key
    try:
        result = sandbox.run_urgent({**CONF, "round_id": meta.round_id})
    finally:
        sandbox.host_key_override = None
    assert "presented host key" in result.stdout and "nothing was sent" in result.stdout
    states = _task_states(sandbox)
    assert {s for t, _, _, s in states if t == "deliver"} == {"failed"}
    assert {s for t, _, _, s in states if t == "notify"} == {"upstream_failed"}
    assert not [p for p in sandbox.sftp.root.rglob("*") if meta.round_id in p.name]
    # The failed run keeps its staging (to resume after a fix), and it holds no Secret column.
    (staged,) = (sandbox.work_dir / "runs").glob(f"*/{meta.round_id}.arrow")
    assert "ki_phone" not in staging.read_staged(staged).columns
    ledger = sandbox.ledger()
    assert not [r for r in ledger.all() if r.round_id == meta.round_id]
    # What the Dissemination page shows: each refused delivery and why, naming no value.
    refused = [f for f in ledger.failures() if f.round_id == meta.round_id]
    assert refused and all(f.permanent and "presented host key" in f.reason for f in refused)
    assert {f.agreement_id for f in refused} == {
        a.id for a in sandbox.policy.agreements_for("NGA", Urgency.MEDIUM)}


def test_focal_points_are_told_data_arrived_never_the_password(sandbox, passwords):
    notices = [m for m in sandbox.smtp.messages() if "data for" in m["Subject"]]
    people = sandbox.policy.focal_points
    assert sorted(m["To"] for m in notices) == sorted([
        people["unicef-nga"].primary.email, people["unicef-nga"].field[0].email,
        people["protection-cluster-nga"].primary.email])
    for message in sandbox.smtp.messages():
        text = sandbox.smtp.text(message)
        assert not any(p in text or p in message["Subject"] for p in passwords.values())
    body = sandbox.smtp.text(notices[0])
    dtm = sandbox.policy.dtm["NGA"].primary  # who phones them the password
    assert "never sent by e-mail" in body and "SHA-256" in body
    assert dtm.name in body and dtm.mobile in body
    # No partner's focal point by name, in a notice or a file name (the manifest says whom).
    named = {w.lower() for fp in people.values() for p in (fp.primary, fp.secondary, *fp.field)
             for w in p.name.split()} - {w.lower() for w in dtm.name.split()}
    for text in [*(f"{m['Subject']}\n{sandbox.smtp.text(m)}" for m in notices),
                 *(str(p.relative_to(sandbox.sftp.root)) for p in sandbox.landed())]:
        assert not named & set(re.split(r"[^a-z]+", text.lower())), text


def test_urgent_window_met_is_recorded(sandbox):
    for row in sandbox.ledger().all():
        if row.round_id == "NGA-R001-partial":
            assert row.deadline_met is True and row.deadline is not None


def test_a_late_delivery_is_recorded_missed_and_alerts_dtm(sandbox):
    meta, df = generate_round(sandbox.policy.rulesets["NGA"], 7, 40, seed=9,
                              collected_at=datetime.now(UTC) - timedelta(days=4))
    write_round(sandbox.survey(), meta, df)
    result = sandbox.run_urgent({**CONF, "round_id": meta.round_id,
                                 "agreements": ["protection-cluster-nga"]})
    assert result.returncode == 0, result.stdout[-3000:]
    (row,) = [r for r in sandbox.ledger().all()
              if r.round_id == meta.round_id]
    assert row.deadline_met is False  # 72 h window, collected 4 days ago
    alerts = [m for m in sandbox.smtp.messages() if "at risk or late" in m["Subject"]]
    assert [m["To"] for m in alerts] == [sandbox.policy.dtm["NGA"].primary.email]
    assert f"MISSED   {meta.round_id} -> protection-cluster-nga" in \
        sandbox.smtp.text(alerts[0])


def test_the_monitor_alerts_once_for_windows_at_risk(sandbox):
    meta, df = generate_round(sandbox.policy.rulesets["NGA"], 8, 30, seed=4,
                              collected_at=datetime.now(UTC) - timedelta(hours=40))
    write_round(sandbox.survey(), meta, df)
    first = sandbox.run("deadline_monitor")
    assert f"at_risk  {meta.round_id} -> unicef-nga" in first.stdout  # 8 h of 48 h left
    assert f"pending  {meta.round_id} -> protection-cluster-nga" in first.stdout  # 72 h window
    second = sandbox.run("deadline_monitor")
    subjects = [m["Subject"] for m in sandbox.smtp.messages() if "at risk" in m["Subject"]]
    bodies = [sandbox.smtp.text(m) for m in sandbox.smtp.messages()
              if "at risk" in m["Subject"]]
    assert sum(f"AT_RISK  {meta.round_id} -> unicef-nga" in b for b in bodies) == 1, subjects
    assert second.returncode == 0


def test_password_rotation_replaces_passwords_and_never_shows_them(sandbox, passwords):
    result = sandbox.run("password_rotation")
    assert result.returncode == 0, result.stdout[-3000:]
    rotated = {v: sandbox.password(v) for v in passwords}
    assert all(rotated[v] != passwords[v] and len(rotated[v]) >= 16 for v in passwords)
    notices = [m for m in sandbox.smtp.messages() if "password rotated" in m["Subject"]]
    assert len(notices) == len(sandbox.policy.agreements)
    # Each to DTM's focal point in the agreement's countries (NGA's for NGA, SSD's for SSD).
    assert sorted(m["To"] for m in notices) == sorted(
        ", ".join(sandbox.policy.alert_to(*a.countries))
        for a in sandbox.policy.agreements.values())
    assert {m["To"] for m in notices} == {
        sandbox.policy.dtm[c].primary.email for c in ("NGA", "SSD")}
    assert any("- Aisha Bello (" in sandbox.smtp.text(m) for m in notices)
    again = sandbox.run("password_rotation")
    assert "rotated the package password" not in again.stdout  # nothing due the next day

    meta, df = generate_round(sandbox.policy.rulesets["NGA"], 9, 30, seed=6,
                              collected_at=datetime.now(UTC), collection_days=1)
    write_round(sandbox.survey(), meta, df)
    run = sandbox.run_urgent({**CONF, "round_id": meta.round_id, "agreements": ["unicef-nga"]})
    assert run.returncode == 0, run.stdout[-3000:]
    (row,) = [r for r in sandbox.ledger().all()  # the primary's (a name tells no recipient)
              if r.round_id == meta.round_id and r.recipient == "primary"]
    path = sandbox.sftp.root / row.remote_path
    open_package(path, rotated["package_password_unicef_nga"])
    with pytest.raises(RuntimeError):
        open_package(path, passwords["package_password_unicef_nga"])  # the old one is dead

    everything = [result.stdout, again.stdout, run.stdout]
    everything += [p.read_text(errors="replace") for p in
                   (sandbox.airflow_home / "logs").rglob("*") if p.is_file()]
    with sqlite3.connect(sandbox.airflow_home / "airflow.db") as db:
        everything += [str(v) for (v,) in db.execute("select value from xcom")]
    everything += [m.as_string() for m in sandbox.smtp.messages()]
    for secret in [*passwords.values(), *rotated.values()]:
        assert not any(secret in text for text in everything)


def test_a_dropped_partial_round_triggers_the_urgent_path(sandbox):
    _, df = generate_round(sandbox.policy.rulesets["NGA"], 11, 25, seed=11,
                           collected_at=datetime.now(UTC), collection_days=1)
    sandbox.drop_dir.mkdir(exist_ok=True)
    df.drop(columns=["round_id"]).to_csv(sandbox.drop_dir / "NGA-R011-partial.csv", index=False)
    result = sandbox.run("round_intake")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "new: NGA-R011-partial (partial) v1" in result.stdout
    with sqlite3.connect(sandbox.airflow_home / "airflow.db") as db:
        confs = [json.loads(c) for (c,) in db.execute(
            "select conf from dag_run where dag_id = 'urgent_dissemination'")]
    assert any(c.get("round_id") == "NGA-R011-partial" and
               c["justification"].startswith("automatic: partial round") for c in confs), confs
    again = sandbox.run("round_intake")
    assert "new: NGA-R011-partial" not in again.stdout  # processed once


def test_an_urgent_signal_in_a_cleaned_round_starts_the_medium_path(sandbox):
    meta, df = generate_round(sandbox.policy.rulesets["NGA"], 14, 20, seed=14, status="cleaned",
                              collected_at=datetime.now(UTC), collection_days=1)
    df["unaccompanied_children"] = 0
    df.loc[3, "unaccompanied_children"] = 25
    write_round(sandbox.survey(), meta, df)
    result = sandbox.run("round_intake")
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"SIGNAL {meta.round_id}: many_unaccompanied_children: 1 site(s)" in result.stdout
    alert = [m for m in sandbox.smtp.messages() if f"signal in {meta.round_id}" in m["Subject"]]
    assert [m["To"] for m in alert] == [sandbox.policy.dtm["NGA"].primary.email]
    assert "started for: unicef-nga" in sandbox.smtp.text(alert[0])
    with sqlite3.connect(sandbox.airflow_home / "airflow.db") as db:
        confs = [json.loads(c) for (c,) in db.execute(
            "select conf from dag_run where dag_id = 'urgent_dissemination'")]
    (conf,) = [c for c in confs if c.get("round_id") == meta.round_id]
    assert conf["agreements"] == ["unicef-nga"]
    assert conf["justification"].startswith("automatic: urgent signal many_unaccompanied")


# --- the ledger as an audit trail (last: it reads everything the runs above wrote) ------------


def test_the_ledger_audit_passes_then_alerts_dtm_when_a_row_is_changed_or_cut(sandbox, tmp_path):
    """Every delivery, alert, rotation and intake row the runs above wrote is chained: the daily
    audit passes and keeps its head. On a copy of the ledger (the runs' own stays intact): an
    edited row fails the task and e-mails DTM's focal points the row, never a value; so does a
    chain cut short since the last audit."""
    from dissemination.ledger.audit import verify
    from dissemination.ledger.tables import CHAINED

    subject = "[DTM] the delivery ledger failed its audit"
    passed = sandbox.run("ledger_audit")
    assert passed.returncode == 0, passed.stdout[-3000:]
    counts = sandbox.ledger().all()
    assert f"(deliveries {len(counts)}, password_rotations " in passed.stdout
    assert "intake 0" not in passed.stdout and "alerts 0" not in passed.stdout
    # Its head, published outside the ledger: a write-once object and an e-mail to DTM.
    head = verify(sandbox.ledger().engine)
    assert ", keyed from seq 1" in passed.stdout
    published = sandbox.work_dir / "runs" / "ledger-heads" / f"{head.head_seq:012d}.json"
    assert json.loads(published.read_text())["chain_sha256"] == head.head_sha256
    (notice,) = [m for m in sandbox.smtp.messages()
                 if m["Subject"] == "[DTM] delivery ledger audit passed: chain head"]
    assert f"Chain head: {head.anchor}" in sandbox.smtp.text(notice)
    assert sandbox.chain_key_file.read_text().strip() not in passed.stdout  # (stderr merged)

    copy = tmp_path / "ledger.db"
    shutil.copy(sandbox.ledger_db, copy)
    own_url, sandbox.ledger_url = sandbox.ledger_url, f"sqlite:///{copy}"
    try:
        first = sandbox.run("ledger_audit")  # its head is now the copy's: kept as the anchor
        assert first.returncode == 0, first.stdout[-3000:]
        email = counts[1].focal_point_email
        with sqlite3.connect(copy) as db:
            db.execute("UPDATE deliveries SET focal_point_email = 'someone@example.org' "
                       "WHERE id = 2")
        assert _variable(sandbox, "ledger_audit_failed") == ""  # none standing
        tampered = sandbox.run("ledger_audit")
        assert tampered.returncode != 0
        assert "FAILED at deliveries id=2 (chain seq " in tampered.stdout
        standing = _variable(sandbox, "ledger_audit_failed")  # for the Dissemination page
        assert "FAILED at deliveries id=2 (chain seq " in standing
        (mail,) = [m for m in sandbox.smtp.messages() if m["Subject"] == subject]
        assert {a.addr_spec for a in mail["To"].addresses} == set(
            sandbox.policy.alert_to(*sandbox.policy.dtm))
        body = sandbox.smtp.text(mail)
        assert "deliveries id=2 (chain seq " in body and "changed since it was recorded" in body
        for text in (body, tampered.stdout, standing):
            assert "someone@example.org" not in text and email not in text

        # Put back: the chain verifies again; drop the newest row and its chain entry: the
        # chain alone is still consistent, but the head the last audit kept is gone.
        with sqlite3.connect(copy) as db:
            db.execute("UPDATE deliveries SET focal_point_email = ? WHERE id = 2", (email,))
            table, key = db.execute("SELECT table_name, row_key FROM audit_chain "
                                    "ORDER BY seq DESC LIMIT 1").fetchone()
            db.execute("DELETE FROM audit_chain WHERE seq = (SELECT MAX(seq) FROM audit_chain)")
            keys = CHAINED[table][0]
            db.execute(f"DELETE FROM {table} WHERE " + " AND ".join(f"{k} = ?" for k in keys),
                       json.loads(key))
        cut = sandbox.run("ledger_audit")
        assert cut.returncode != 0 and "the chain ends at seq" in cut.stdout
        assert len([m for m in sandbox.smtp.messages() if m["Subject"] == subject]) == 2
    finally:
        sandbox.ledger_url = own_url
        for variable in ("ledger_audit_anchor", "ledger_audit_failed"):
            sandbox.airflow("variables", "delete", variable, check=False)


def _variable(sandbox, key: str) -> str:
    """An Airflow Variable's value, as the CLI prints it (its last line; empty if it is)."""
    lines = sandbox.airflow("variables", "get", key).stdout.strip().splitlines()
    return lines[-1] if lines else ""


def test_the_month_after_protects_the_cleaned_round_with_the_partial_one_delivered(sandbox):
    """The same sandbox a month on: the monthly run sends NGA-R001-cleaned to organisations
    that received NGA-R001-partial above. Each partial package kept what it showed, and the
    export it was made from. The partial round has been exported again since (a count
    corrected), so the survey database no longer holds what was delivered: the package task
    reads the kept export, rebuilds every table and finds it is what was delivered (content
    hash), then protects the cleaned tables with it: nothing is withheld, every low tier
    receives it."""
    from dissemination.ledger.tables import tables_shown

    with sandbox.ledger().engine.connect() as conn:
        kept = {r for (r,) in conn.execute(sa.select(tables_shown.c.round_id))}
    assert "NGA-R001-partial" in kept
    exports = [p.name for p in (sandbox.work_dir / "runs" / "exports").iterdir()]
    assert any(n.startswith("NGA-R001-partial.") for n in exports)
    meta, df = read_round(sandbox.survey(), "NGA-R001-partial")
    row = df["unaccompanied_children"].first_valid_index()  # shown per site, exactly
    value = df.loc[row, "unaccompanied_children"]
    df.loc[row, "unaccompanied_children"] = type(value)(int(value) + 1)
    write_round(sandbox.survey(), meta, df)  # exported again: replaces the delivered export
    month = sandbox.run_monthly("2026-12-01")
    assert month.returncode == 0, month.stdout[-3000:]
    assert "withheld" not in month.stdout
    cleaned = {(r.agreement_id, r.recipient) for r in sandbox.ledger().all()
               if r.round_id == "NGA-R001-cleaned"}
    partial = {r.organisation_id for r in sandbox.ledger().all()
               if r.round_id == "NGA-R001-partial"}
    low = {a.id for a in sandbox.policy.agreements_for("NGA", Urgency.LOW)}
    assert {a for a, _ in cleaned} == low
    assert {sandbox.policy.agreements[a].organisation for a in low} & partial
