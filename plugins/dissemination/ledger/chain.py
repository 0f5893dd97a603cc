"""The ledger chain's key and its published heads: links only the key's holder can make.

A plain SHA-256 chain can be recomputed by anyone who can write the ledger: delete the newest
deliveries with their entries, or change a row and re-hash every later link, and the chain
holds. Keyed, each link is an HMAC-SHA256 under a key the ledger database's users cannot read
(injected here: an engine option, or the file ``DISSEMINATION_CHAIN_KEY_FILE`` names), so a
re-hashed link fails. What a key cannot show, a chain cut after its last audit, the head each
audit publishes outside the ledger (``Head``) does. Existing plain entries stay as they were:
the first keyed write records its sequence number in ``ledger_meta`` (``KEYED_FROM``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from ..errors import PermanentError

#: The engine option carrying the key (``keyed``): the writer and the audit read it from there.
KEY_OPTION = "dissemination_chain_key"
#: Without an engine option, the key is read from the file this variable names (CLI, devkit).
KEY_FILE_VARIABLE = "DISSEMINATION_CHAIN_KEY_FILE"
#: ``ledger_meta`` key: the sequence number of the first keyed entry (plain before it).
KEYED_FROM = "chain_keyed_from"
#: A shorter secret could be guessed offline from one link and the rows it covers.
MIN_KEY_LENGTH = 32


class ChainKeyError(PermanentError, RuntimeError):
    """The chain key is missing or unusable: the ledger cannot be written or checked."""


class ChainKey:
    """The chain's secret; never printed (its repr says so)."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str | bytes, where: str = "the chain key"):
        secret = secret.strip()
        if len(secret) < MIN_KEY_LENGTH:  # the length only: never the key
            raise ChainKeyError(f"{where}: a chain key is {MIN_KEY_LENGTH} characters or more, "
                                f"this one has {len(secret)} (make one: python -c 'import "
                                "secrets; print(secrets.token_hex(32))')")
        self._secret = secret.encode() if isinstance(secret, str) else secret

    def __repr__(self) -> str:
        return "ChainKey(<hidden>)"

    @classmethod
    def from_file(cls, path: str | Path) -> ChainKey:
        try:
            return cls(Path(path).read_bytes(), f"chain key file {path}")
        except OSError as exc:
            raise ChainKeyError(f"chain key file {path}: cannot be read ({exc.strerror})"
                                ) from None

    def link(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()


def keyed(engine: sa.Engine, key: ChainKey | None) -> sa.Engine:
    """``engine`` whose connections write and check the chain with ``key`` (None: as is)."""
    return engine if key is None else engine.execution_options(**{KEY_OPTION: key})


def key_of(conn: sa.Connection) -> ChainKey | None:
    """The key ``conn``'s engine carries, else the one in ``DISSEMINATION_CHAIN_KEY_FILE``."""
    key = conn.get_execution_options().get(KEY_OPTION)
    if key is None and os.environ.get(KEY_FILE_VARIABLE):
        key = ChainKey.from_file(os.environ[KEY_FILE_VARIABLE])
    return key


def link_text(prev: str, seq: int, table_name: str, key: str, row_hash: str) -> str:
    """What a link covers: the previous link, its position, which row, and the row's hash."""
    return "\n".join([prev, str(seq), table_name, key, row_hash])


def plain_link(prev: str, seq: int, table_name: str, key: str, row_hash: str) -> str:
    """The link before the key: anyone can compute it."""
    return hashlib.sha256(link_text(prev, seq, table_name, key, row_hash).encode()).hexdigest()


def keyed_from(conn: sa.Connection, meta: sa.Table) -> int | None:
    """The sequence number of the first keyed entry; None while the chain is all plain."""
    value = conn.execute(sa.select(meta.c.value).where(meta.c.key == KEYED_FROM)).scalar()
    return int(value) if value is not None and str(value).isdigit() else None


@dataclass(frozen=True)
class Links:
    """How each entry's link is computed: plain before ``start``, keyed from it."""

    key: ChainKey | None
    start: int | None

    @classmethod
    def of(cls, conn: sa.Connection, meta: sa.Table) -> Links:
        """The ledger's links as ``conn`` can check them; refuses a keyed chain without key."""
        links = cls(key_of(conn), keyed_from(conn, meta))
        if links.start is not None and links.key is None:
            raise ChainKeyError(
                f"the ledger's chain is keyed from seq {links.start}: give its key (Airflow "
                f"connection dissemination_chain_key, or the file {KEY_FILE_VARIABLE} names)")
        return links

    def keyed(self, seq: int) -> bool:
        return self.start is not None and seq >= self.start

    def expected(self, prev: str, seq: int, table_name: str, key: str, row_hash: str) -> str:
        if self.keyed(seq):
            return self.key.link(link_text(prev, seq, table_name, key, row_hash))
        return plain_link(prev, seq, table_name, key, row_hash)


def next_link(conn: sa.Connection, meta: sa.Table, prev: str, seq: int, table_name: str,
              key: str, row_hash: str) -> str:
    """The link of a new entry, in the writer's transaction (under the chain's lock). With a
    key, the first keyed entry records where the keyed part starts; without one, a chain
    already keyed is refused rather than continued with links anyone can forge."""
    links = Links.of(conn, meta)
    if links.key is not None and links.start is None:
        conn.execute(meta.insert().values(key=KEYED_FROM, value=str(seq), at=datetime.now(UTC)))
        links = Links(links.key, seq)
    return links.expected(prev, seq, table_name, key, row_hash)


@dataclass(frozen=True)
class Head:
    """A chain head as an audit published it outside the ledger (the audit e-mail, the
    staging store's write-once object): the next audit fails if the ledger no longer holds it."""

    seq: int
    chain_sha256: str
    keyed_from: int | None = None
    audited_at: str = ""

    def document(self) -> str:
        return json.dumps({"seq": self.seq, "chain_sha256": self.chain_sha256,
                           "keyed_from": self.keyed_from, "audited_at": self.audited_at},
                          sort_keys=True) + "\n"

    @classmethod
    def parse(cls, text: str | bytes, where: str) -> Head:
        """A published head's document; refuses anything else, naming ``where``."""
        try:
            doc = json.loads(text)
            seq, digest, start = doc["seq"], doc["chain_sha256"], doc.get("keyed_from")
            valid = (type(seq) is int and seq >= 0 and isinstance(digest, str)
                     and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
                     and (start is None or type(start) is int))
        except (ValueError, TypeError, KeyError):
            valid = False
        if not valid:
            raise ValueError(f"{where}: not a published chain head (a JSON object with seq, "
                             "chain_sha256 and keyed_from)")
        return cls(seq, digest, start, str(doc.get("audited_at", "")))


def newest_head(folder: Path) -> Head | None:
    """The newest head published in a local folder (a copy of the store's ``ledger-heads``)."""
    found = sorted(folder.glob("*.json"))
    return Head.parse(found[-1].read_bytes(), str(found[-1])) if found else None
