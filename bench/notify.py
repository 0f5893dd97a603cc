"""Notices of a notify batch over one SMTP session, against a session per notice (the reference),
in the same run.

Both go through Airflow's SMTP hook and connection (``AIRFLOW_CONN_SMTP_DEFAULT``) to the demo's
SMTP server (aiosmtpd) on loopback, with no TLS and no login: the gain measured here is the
least a real relay gives, where each session adds a TLS handshake and a login over the network.

    make bench   # or: PYTHONPATH=plugins .venv/bin/python bench/notify.py
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summary import Figure, median_seconds, record  # noqa: E402

NOTICES = 200


def main() -> None:
    from dissemination.delivery.notices import Email
    from dissemination.devkit.local_smtp import LocalSmtpServer
    from dissemination_airflow import mail_session, send

    emails = [Email(to=(f"focal.point{i}@partner.example.org",), subject=f"[DTM] notice {i}",
                    body="data arrived\n" * 20) for i in range(NOTICES)]

    def one_session_each():
        for email in emails:
            send(email)

    def one_session():
        with mail_session() as send_one:
            for email in emails:
                send_one(email)

    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp, \
            LocalSmtpServer(Path(tmp) / "mail") as server:
        os.environ["AIRFLOW_CONN_SMTP_DEFAULT"] = json.dumps(server.airflow_connection())
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # the server's, per command
        with contextlib.redirect_stdout(io.StringIO()):  # each e-mail prints a line
            each = median_seconds(one_session_each)
            batch = median_seconds(one_session)
        sent = len(server.messages())
    if sent != 6 * NOTICES:
        raise RuntimeError(f"{sent} e-mails arrived, {6 * NOTICES} were sent")
    print(f"{NOTICES} notices: {each / NOTICES * 1000:.1f} ms each on a session of their own, "
          f"{batch / NOTICES * 1000:.1f} ms on one session ({each / batch:.2f}x)")
    record(notify_ms_per_notice=Figure(round(batch / NOTICES * 1000, 2),
                                       "ms per notice, one SMTP session on loopback"),
           notify_session_speedup=Figure(round(each / batch, 2),
                                         f"a session per notice / one session, {NOTICES} notices"))


if __name__ == "__main__":
    main()
