"""A real SMTP server on loopback (aiosmtpd) that keeps every message as an .eml file.

For the demo and the tests: Airflow's SMTP support talks to it like to any relay, and the tests
read what a partner's or DTM's focal point would have received.
"""

from __future__ import annotations

import email
import html
import re
from email import policy as email_policy
from pathlib import Path

from aiosmtpd.controller import Controller

from .local_sftp import free_port


class LocalSmtpServer:
    def __init__(self, maildir: Path | str, port: int = 0, *,
                 messages_per_session: int | None = None):
        """``messages_per_session``: as relays limit it, the next MAIL of a session gets 421
        and the session is closed (aiosmtpd's own call limit)."""
        self.maildir = Path(maildir)
        self.port = port or free_port()
        self.messages_per_session = messages_per_session
        self.sessions: list[tuple] = []  # the client address of each message kept, in order
        self._controller = None

    def airflow_connection(self) -> dict:
        return {"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0,
                          "from_email": "dtm-dissemination@example.org"}}

    def start(self) -> LocalSmtpServer:
        self.maildir.mkdir(parents=True, exist_ok=True)
        maildir, sessions = self.maildir, self.sessions

        class Keep:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
                n = len(list(maildir.glob("*.eml")))
                (maildir / f"{n:05d}.eml").write_bytes(envelope.content)
                sessions.append(session.peer)
                return "250 OK"

        limit = {} if self.messages_per_session is None else {
            "command_call_limit": {"MAIL": self.messages_per_session}}
        self._controller = Controller(Keep(), hostname="127.0.0.1", port=self.port, **limit)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(p.read_bytes(), policy=email_policy.default)
                for p in sorted(self.maildir.glob("*.eml"))]

    @staticmethod
    def text(message: email.message.EmailMessage) -> str:
        """The body as a reader sees it (our mails are one <pre> block of HTML)."""
        return html.unescape(re.sub(r"</?pre>", "", message.get_body().get_content()))

    def __enter__(self) -> LocalSmtpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
