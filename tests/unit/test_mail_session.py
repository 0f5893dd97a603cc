"""A notify batch's e-mails go over one SMTP session of Airflow's SMTP connection, to a real
SMTP server on loopback (aiosmtpd); a session the server closes is opened again, and no e-mail
is lost or sent twice."""

from __future__ import annotations

import json

import pytest

from dissemination.delivery.notices import Email
from dissemination.devkit.local_smtp import LocalSmtpServer
from dissemination_airflow import mail_session, send


def _server(tmp_path, monkeypatch, *, retry_limit: int = 0, **limits) -> LocalSmtpServer:
    server = LocalSmtpServer(tmp_path / "mail", **limits).start()
    connection = server.airflow_connection()
    connection["extra"]["retry_limit"] = retry_limit  # the hook's own retries on one client
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(connection))
    return server


def _emails(n: int) -> list[Email]:
    return [Email(to=(f"focal.point{i}@partner.example.org",), subject=f"[DTM] notice {i}",
                  body=f"data for round {i}") for i in range(n)]


def _subjects(server: LocalSmtpServer) -> list[str]:
    return [m["Subject"] for m in server.messages()]


def test_a_batch_of_notices_is_one_session(tmp_path, monkeypatch):
    server = _server(tmp_path, monkeypatch)
    try:
        with mail_session() as send_one:
            for email in _emails(5):
                send_one(email)
        send(_emails(1)[0])  # one e-mail alone: a session of its own
    finally:
        server.stop()
    assert _subjects(server) == [e.subject for e in _emails(5)] + ["[DTM] notice 0"]
    assert len(set(server.sessions)) == 2


@pytest.mark.parametrize("retry_limit", [0, 2])
def test_a_session_the_server_closes_is_opened_again_and_nothing_is_sent_twice(
        tmp_path, monkeypatch, retry_limit):
    """The server takes two messages per session, then answers 421 and closes it (with the
    hook's retries on, they fail on the closed client first)."""
    server = _server(tmp_path, monkeypatch, retry_limit=retry_limit, messages_per_session=2)
    try:
        with mail_session() as send_one:
            for email in _emails(5):
                send_one(email)
    finally:
        server.stop()
    assert _subjects(server) == [e.subject for e in _emails(5)]
    assert len(set(server.sessions)) == 3


def test_an_e_mail_the_server_refuses_is_raised_and_the_next_goes_on_a_new_session(
        tmp_path, monkeypatch):
    server = _server(tmp_path, monkeypatch)
    import smtplib

    refused = Email(to=(), subject="[DTM] refused", body="x")  # no recipient: refused
    try:
        with mail_session() as send_one:
            send_one(_emails(1)[0])
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                send_one(refused)
            send_one(_emails(2)[1])
    finally:
        server.stop()
    assert _subjects(server) == ["[DTM] notice 0", "[DTM] notice 1"]
    assert len(set(server.sessions)) == 2
