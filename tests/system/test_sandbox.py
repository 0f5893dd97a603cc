"""The sandbox as a new user meets it after `make demo`: the env file alone runs the README's next
steps, the demo's summary says what this run delivered, and `make ui` starts Airflow's services
and stops every one of them on Ctrl-C. Real Airflow CLI, real sshd, real api-server."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest
import sqlalchemy as sa
from airflow_services import wait_for
from builders import delivery_record
from conftest import POLICY_DIR, REPO

from dissemination.devkit.local_sftp import free_port
from dissemination.devkit.sandbox import Sandbox, SandboxBusy
from dissemination.ledger.migrations import upgrade as upgrade_ledger
from dissemination.ledger.store import Ledger
from dissemination_airflow import LEDGER_DB_CONN_ID, SMTP_CONN_ID, SURVEY_DB_CONN_ID

# System tier: the sandbox runs Airflow's CLI, api-server and scheduler over sshd.
pytestmark = pytest.mark.system


def _bash(env_file: Path, command: str) -> subprocess.CompletedProcess:
    """``command`` after sourcing ``env_file``, in an environment with nothing of this test's:
    no AIRFLOW_*, no PYTHONPATH, no virtualenv on PATH."""
    bare = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    return subprocess.run(["bash", "-c", f"source {env_file} && {command}"], env=bare,
                          cwd=env_file.parent, text=True, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_the_env_file_alone_runs_the_readmes_next_steps(tmp_path):
    box = Sandbox(tmp_path / "sandbox", POLICY_DIR)
    with box:  # the servers, as `make serve` keeps them
        box.init(sites=40, seed=5)
        env_file = box.write_env_file()
        text = env_file.read_text()
        conn_ids = [SURVEY_DB_CONN_ID, LEDGER_DB_CONN_ID, SMTP_CONN_ID,
                    *(d.sftp_conn_id for d in box.destinations())]
        for conn_id in conn_ids:
            assert f"export AIRFLOW_CONN_{conn_id.upper()}='{{" in text, conn_id
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"

        rotation = _bash(env_file, "airflow dags test password_rotation")
        assert rotation.returncode == 0, rotation.stdout[-3000:]
        assert "rotated the package password" in rotation.stdout

        started = datetime.now(UTC)
        monthly = _bash(env_file, "airflow dags test monthly_dissemination 2026-12-01")
        assert monthly.returncode == 0, monthly.stdout[-3000:]
        assert {(r.agreement_id, r.urgency) for r in box.ledger().all()} >= {
            ("unicef-nga", "low"), ("protection-cluster-nga", "low")}
        assert [m for m in box.smtp.messages() if "data for" in m["Subject"]]

    # The summary's open line, as printed, extracts into the package's own folder.
    lines = box.summary(started, "NGA-R001-cleaned", env_file)
    assert lines[0] == "== delivered by this run (packages on the local SFTP server):"
    (open_line,) = [line.strip() for line in lines if line.strip().startswith("7z x")]
    opened = _bash(env_file, open_line)
    assert opened.returncode == 0, opened.stdout[-3000:]
    (folder,) = (box.home / "opened").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["data.csv", "manifest.json"]
    assert not (env_file.parent / "data.csv").exists()


def test_the_summary_lists_this_runs_deliveries_then_says_nothing_new(tmp_path):
    box = Sandbox(tmp_path, POLICY_DIR)
    upgrade_ledger(sa.create_engine(box.ledger_url))
    ledger = Ledger(sa.create_engine(box.ledger_url))
    first = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    ledger.record(delivery_record(round_id="NGA-R000-partial",  # an earlier round, another run
                                  delivered_at=first - timedelta(days=30),
                                  remote_path="in/old.zip"))
    for recipient, name, path in (("primary", "Aisha Bello", "in/a.zip"),
                                  ("field:Musa Ibrahim", "Musa Ibrahim", "field/m.zip")):
        ledger.record(delivery_record(recipient=recipient, focal_point_name=name,
                                      remote_path=path, delivered_at=first + timedelta(minutes=1)))
    env_file = box.home / "env.sh"

    lines = box.summary(first, "NGA-R001-partial", env_file)
    text = "\n".join(lines)
    assert lines[0] == "== delivered by this run (packages on the local SFTP server):"
    assert "primary focal point Aisha Bello: 10 rows of NGA-R001-partial" in text
    assert "field focal point Musa Ibrahim: 10 rows" in text
    assert "old.zip" not in text and "nothing new" not in text
    assert (f"  7z x -o{box.home}/opened/a -p\"$(airflow variables get "
            f"package_password_unicef_nga)\" {box.sftp.root}/in/a.zip") in lines
    assert f"  source {env_file}" in lines

    rerun = box.summary(first + timedelta(hours=1), "NGA-R001-partial", env_file)
    text = "\n".join(rerun)
    assert rerun[0] == ("== delivered by this run: nothing new (NGA-R001-partial was "
                        "delivered before):")
    assert ("UNICEF Nigeria, primary focal point Aisha Bello: nothing new: already delivered "
            "on 2026-11-20 09:01 UTC") in text
    assert "field focal point Musa Ibrahim: nothing new: already delivered on 2026-11-20" in text
    assert "rows of" not in text and "old.zip" not in text

    nothing = box.summary(first + timedelta(hours=1), "NGA-R009-partial", env_file)
    assert nothing == ["== this run delivered nothing, and no delivery of NGA-R009-partial is "
                       "recorded: see the run's log"]


def test_ports_are_kept_per_sandbox_and_one_process_serves_it(tmp_path):
    box = Sandbox(tmp_path, POLICY_DIR)
    again = Sandbox(tmp_path, POLICY_DIR)
    assert (again.sftp.port, again.smtp.port) == (box.sftp.port, box.smtp.port)
    with socket.socket() as squatter:  # something else took the kept SMTP port meanwhile
        squatter.bind(("127.0.0.1", box.smtp.port))
        squatter.listen()
        with box:
            assert box.smtp.port != again.smtp.port and box.sftp.port == again.sftp.port
            assert Sandbox(tmp_path, POLICY_DIR).smtp.port == box.smtp.port  # kept anew
            with pytest.raises(SandboxBusy, match="another process serves the sandbox"):
                again.__enter__()
    with again:  # released on exit
        pass


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_make_ui_serves_airflow_and_ctrl_c_stops_every_process(tmp_path):
    home, port = tmp_path / "sandbox", free_port()
    output = tmp_path / "ui.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["PYTHONPATH"] = str(REPO / "plugins")
    children: list[psutil.Process] = []
    with output.open("w") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "dissemination.devkit.sandbox", "--home", str(home),
             "--include", str(POLICY_DIR), "--ui", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # its own group, as a terminal's foreground job
    try:
        def announced():
            assert launcher.poll() is None, output.read_text()[-3000:]
            return re.search(r"Airflow UI: (http://\S+)  user admin, password (\S+)",
                             output.read_text())

        url, password = wait_for("the UI's address and password", announced).groups()
        assert url == f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as api:
            assert api.get("/api/v2/monitor/health").status_code == 200
            wrong = api.post("/auth/token", json={"username": "admin", "password": "wrong"})
            assert wrong.status_code == 401
            login = api.post("/auth/token", json={"username": "admin", "password": password})
            assert login.status_code == 201, login.text
            token = login.json()["access_token"]
            dags = api.get("/api/v2/dags", headers={"Authorization": f"Bearer {token}"})
            assert dags.status_code == 200, dags.text
        children = psutil.Process(launcher.pid).children(recursive=True)
        commands = [" ".join(c.cmdline()) for c in children]
        for part in ("api_server", "scheduler", "dag-processor", "sshd"):
            assert any(part in c for c in commands), (part, commands)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground group
        try:
            launcher.wait(timeout=120)
        except subprocess.TimeoutExpired:
            for process in [psutil.Process(launcher.pid), *children]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            raise
    assert launcher.returncode == 0, output.read_text()[-3000:]
    assert output.read_text().rstrip().endswith("== stopped")
    left = [c for c in children if _alive(c)]
    assert not left, [" ".join(c.cmdline()) for c in left]
