"""The only place where the domain meets Airflow: connections, variables, paths, secret masking.

DAG tasks call these helpers so that the domain package (``dissemination``) stays Airflow-free and
every credential comes from Airflow Connections and Variables (any secrets backend). DAG files
import this module when they parse: the Airflow SDK (already loaded by then) is imported at the
top; the domain, SQLAlchemy and the SMTP provider inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import smtplib
import threading
from datetime import timedelta
from html import escape
from pathlib import Path

from airflow.sdk import Connection, Param, Variable
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import mask_secret

from dissemination import PermanentError

#: Connection ids the DAGs use; in development they come from AIRFLOW_CONN_* environment variables.
SURVEY_DB_CONN_ID = "survey_db"
LEDGER_DB_CONN_ID = "dissemination_ledger"
SMTP_CONN_ID = "smtp_default"
#: The ledger chain's key is this connection's password: in a secrets backend (or Airflow's
#: metastore) that the ledger database's users cannot read.
CHAIN_KEY_CONN_ID = "dissemination_chain_key"
#: The ledger's chain head at the last audit that passed (``SEQ:SHA256``), kept outside it.
AUDIT_ANCHOR_VARIABLE = "ledger_audit_anchor"
#: What the last ledger audit found if it failed; empty once one passes.
AUDIT_FAILED_VARIABLE = "ledger_audit_failed"

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]


class ConfigurationError(PermanentError, RuntimeError):
    pass


def include_dir() -> Path:
    return Path(os.environ.get("DISSEMINATION_INCLUDE_DIR", _REPO / "include"))


#: The trigger form offers the agreement ids as a pick list up to this many; beyond, they are
#: typed (Browse -> Dissemination lists each country's). Every task of a DAG carries a copy of
#: its form, copied and schema-checked at each parse: a list of 1,000 ids made parsing the
#: urgent DAG 1.5x slower (bench/dag_parse.py), 100 costs about 2 ms.
PICK_LIST_MAX = 100

#: The JSON Schema dialect of the trigger form's fields. Airflow checks a field's schema
#: against its dialect's meta-schema each time it validates the field, dozens of times per
#: parse: Draft 7's check is 2.5x cheaper than the default 2020-12's, and Draft 7 has every
#: keyword the form uses (type, enum, pattern, minLength, items, examples).
FORM_DIALECT = "http://json-schema.org/draft-07/schema#"


def policy_choices() -> tuple[list[str], list[str]]:
    """Countries and agreement ids for the trigger form, from the policy files' names only
    (a directory listing: cheap enough for DAG parsing; the files are validated at run time)."""
    root = include_dir()

    def stems(folder: str) -> list[str]:
        try:
            with os.scandir(root / folder) as entries:
                return sorted(e.name[:-5] for e in entries
                              if e.name.endswith(".yaml") and e.name != "default.yaml")
        except OSError:
            return []

    return stems("rules") or ["NGA"], stems("agreements")


def pick_list(choices: list[str]) -> list[str] | None:
    """``choices`` as the form's pick list, or None beyond ``PICK_LIST_MAX`` (typed instead)."""
    return choices if len(choices) <= PICK_LIST_MAX else None


def form_param(*default, **schema):
    """A trigger form field: ``Param(default, **schema)`` in the form's dialect; None-valued
    keywords are left out (a pick list beyond ``PICK_LIST_MAX``)."""
    return Param(*default, **{"$schema": FORM_DIALECT},
                 **{k: v for k, v in schema.items() if v is not None})


def work_dir() -> Path:
    """Where packages are staged between tasks (a shared volume under the Celery executor);
    private to this user: it holds survey data."""
    from dissemination.intake import private_dir

    default = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "dissemination"
    return private_dir(Path(os.environ.get("DISSEMINATION_WORK_DIR", default)))


def data_docs_dir() -> Path:
    """Great Expectations Data Docs of every validation (open index.html in a browser)."""
    from dissemination.intake import private_dir

    return private_dir(Path(os.environ.get("DISSEMINATION_DATA_DOCS_DIR",
                                           work_dir() / "data_docs")))


def drop_dir() -> Path:
    """The file drop: CSV/XLSX rounds placed here are picked up by the intake."""
    path = Path(os.environ.get("DISSEMINATION_DROP_DIR", work_dir() / "drop"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def staging_root() -> Path:
    return work_dir() / "runs"


def delivery_batch_size() -> int:
    """Deliveries per mapped ``deliver`` task instance (DISSEMINATION_DELIVERY_BATCH, default
    25); up to 16 organisations still get one each."""
    return _whole_number("DISSEMINATION_DELIVERY_BATCH", 25)


def delivery_threads() -> int:
    """Deliveries of one batch under way at once (DISSEMINATION_DELIVERY_THREADS, default 4;
    1 = one after another): each mostly waits on its partner's server."""
    return _whole_number("DISSEMINATION_DELIVERY_THREADS", 4)


def sftp_stall_seconds() -> int:
    """Seconds a partner's SFTP server may say nothing mid-delivery before the session is closed
    and the delivery fails, to be retried (DISSEMINATION_SFTP_STALL_SECONDS, default 60)."""
    return _whole_number("DISSEMINATION_SFTP_STALL_SECONDS", 60)


def _whole_number(variable: str, default: int) -> int:
    text = os.environ.get(variable, str(default))
    if not text.isdigit() or int(text) < 1:
        raise ConfigurationError(f"{variable}={text!r}: give a whole number, 1 or more")
    return int(text)


def current_policy():
    """The policy files as they are now, compiled once per version on this worker and read
    back by content hash (tens of milliseconds at 1,000 agreements)."""
    from dissemination.policy import compiled_policy

    return compiled_policy(include_dir(), work_dir() / "policy")


def staging_retention():
    """How long a failed run's staging is kept for a resume: DISSEMINATION_STAGING_RETENTION_HOURS
    (default 72)."""
    text = os.environ.get("DISSEMINATION_STAGING_RETENTION_HOURS", "72")
    try:
        hours = float(text)
    except ValueError:
        hours = -1.0
    if not hours >= 0:  # also refuses nan
        raise ConfigurationError(f"DISSEMINATION_STAGING_RETENTION_HOURS={text!r}: give a number "
                                 "of hours, 0 or more")
    return timedelta(hours=hours)


def sqlalchemy_url(conn_id: str) -> str:
    """Build a SQLAlchemy URL from an Airflow connection (sqlite or postgres)."""
    conn = Connection.get(conn_id)
    extra = conn.extra_dejson
    if extra.get("sqlalchemy_url"):
        return extra["sqlalchemy_url"]
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    if conn.conn_type in ("postgres", "postgresql"):
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg2",
            username=conn.login,
            password=conn.password,
            host=conn.host,
            port=conn.port,
            database=conn.schema,
        ).render_as_string(hide_password=False)
    raise ConfigurationError(
        f"connection {conn_id!r} has type {conn.conn_type!r}; use sqlite, postgres, or an "
        "extra 'sqlalchemy_url'"
    )


def engine(conn_id: str):
    """An engine that never prints bound parameters (row values) in its errors; the ledger's
    carries the chain key, when one is configured, to write and check keyed links."""
    import sqlalchemy as sa

    from dissemination.ledger import keyed

    made = sa.create_engine(sqlalchemy_url(conn_id), hide_parameters=True)
    return keyed(made, chain_key()) if conn_id == LEDGER_DB_CONN_ID else made


def chain_key(required: bool = False):
    """The ledger chain's key (``dissemination.ledger.ChainKey``) from the connection
    ``CHAIN_KEY_CONN_ID``, masked in every log line; None if there is none, unless
    ``required`` (the audit: a chain it cannot key protects nothing written after it)."""
    from dissemination.ledger import ChainKey

    try:
        secret = Connection.get(CHAIN_KEY_CONN_ID).password
    except AirflowNotFoundException:
        secret = None
    if not secret:
        if required:
            raise ConfigurationError(
                f"no chain key: set the password of the connection {CHAIN_KEY_CONN_ID!r} (in a "
                "secrets backend the ledger database's users cannot read) to a random secret of "
                "32 characters or more; see docs/ledger-chain.md")
        return None
    mask_secret(secret)
    return ChainKey(secret, f"connection {CHAIN_KEY_CONN_ID!r}")


def upgrade_ledger() -> None:
    """Migrate the ledger to this code's schema, in place (a no-op when it is there): the
    first ledger task of every DAG that writes it calls this, so a deployment needs no step."""
    from dissemination.ledger import upgrade

    ledger = engine(LEDGER_DB_CONN_ID)
    log.info(upgrade(ledger).line(ledger.url.render_as_string(hide_password=True)))


def audit_anchor() -> str | None:
    """The head the last passing ledger audit verified, if any."""
    return Variable.get(AUDIT_ANCHOR_VARIABLE, default=None)


def keep_audit_anchor(anchor: str) -> None:
    """After an audit that passed: its head, and no failure standing."""
    Variable.set(AUDIT_ANCHOR_VARIABLE, anchor)
    Variable.set(AUDIT_FAILED_VARIABLE, "")


def keep_audit_failure(line: str) -> None:
    """After an audit that failed: what it found (the anchor stays the last passing head)."""
    Variable.set(AUDIT_FAILED_VARIABLE, line)


def audit_failure() -> str | None:
    """What the last ledger audit found, if it failed."""
    return Variable.get(AUDIT_FAILED_VARIABLE, default=None) or None


def sftp_targets():
    """``sftp_target`` for one task's deliveries, called from its delivery threads: each
    connection is looked up once per task, even when several threads ask for it at once."""
    lock, found = threading.Lock(), {}

    def target_for(conn_id: str):
        with lock:
            if conn_id not in found:
                found[conn_id] = sftp_target(conn_id)
            return found[conn_id]

    return target_for


def sftp_target(conn_id: str):
    """An SftpTarget from an Airflow SFTP connection; a pinned ``host_key`` extra is required."""
    from dissemination.delivery import SftpTarget

    conn = Connection.get(conn_id)
    extra = conn.extra_dejson
    if str(extra.get("no_host_key_check", "false")).lower() == "true":
        raise ConfigurationError(
            f"connection {conn_id!r} sets no_host_key_check; deliveries require a pinned host_key"
        )
    host_key = extra.get("host_key")
    if not host_key:
        raise ConfigurationError(
            f"connection {conn_id!r} has no 'host_key' extra: pin the partner server's public "
            "host key (e.g. 'ssh-ed25519 AAAA...') after confirming it by another channel"
        )
    if conn.password:
        mask_secret(conn.password)
    return SftpTarget(
        host=conn.host,
        port=conn.port or 22,
        username=conn.login,
        host_key=host_key,
        private_key_path=extra.get("key_file"),
        password=conn.password or None,
    )


def package_password(variable: str) -> str:
    """Read an agreement's package password and mask it in every log line from now on."""
    value = Variable.get(variable, default=None)
    if not value:
        raise ConfigurationError(
            f"Airflow Variable {variable!r} (the agreement's package password) is not set"
        )
    mask_secret(value, name=variable)
    return value


def send(email) -> None:
    """Send a ``dissemination.delivery.Email`` through Airflow's SMTP connection."""
    with mail_session() as send_one:
        send_one(email)


@contextlib.contextmanager
def mail_session():
    """A function sending ``dissemination.delivery.Email``s over one SMTP session: a notify batch
    logs in once, not once per notice (with TLS and a login, most of a notice's time).

    A session the server closes (its limit of messages per session: 421, or a dropped
    connection) is opened again and the e-mail sent once more on the new one: after a 421 the
    server took nothing; a connection lost during the message's data may have delivered it,
    then the notice arrives twice rather than never. Any other error closes the session and is
    raised: the caller's next e-mail opens a new one."""
    session = _MailSession()
    try:
        yield session.send
    finally:
        session.close()


class _MailSession:
    def __init__(self):
        self._hook = None

    def send(self, email) -> None:
        try:
            self._send(email)  # closes the session on any error
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException) as exc:
            if getattr(exc, "smtp_code", 421) != 421:
                raise
            self._send(email)  # the server closed the session: once more, on a new one
        log.info(f"e-mail sent to {', '.join(email.to)}: {email.subject}")

    def _send(self, email) -> None:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        if self._hook is None:
            self._hook = SmtpHook(smtp_conn_id=SMTP_CONN_ID).get_conn()
        try:
            self._hook.send_email_smtp(to=list(email.to), subject=email.subject,
                                       html_content=f"<pre>{escape(email.body)}</pre>")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        hook, self._hook = self._hook, None
        if hook is not None:
            with contextlib.suppress(Exception):  # closing a session the server dropped
                hook.__exit__(None, None, None)


def set_password(variable: str, value: str) -> None:
    """Store a new package password in its Variable (any secrets backend that accepts writes),
    masked from this point on."""
    mask_secret(value, name=variable)
    Variable.set(variable, value)
