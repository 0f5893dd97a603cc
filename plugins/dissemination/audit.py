"""Verify the ledger's hash chain: is every delivery, rotation, alert and intake row as written?

Walks ``audit_chain`` in order and recomputes each link and each row's hash; stops at the first
row that was changed, deleted or reordered, and names it by table and key only (rows hold focal
points' names and e-mail addresses: no value is ever printed). Rows no entry covers (inserted
around the chain) fail too. An anchor, the head a previous audit saw, also catches a chain cut
short or rewritten from the start, which no chain can prove by itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import sqlalchemy as sa

from .errors import PermanentError
from .ledger import (
    CHAIN_ADOPTED,
    CHAINED,
    GENESIS,
    audit_chain,
    chain_sha256,
    chained_select,
    ledger_meta,
    metadata,
    require_schema,
    row_key,
    row_sha256,
)


class LedgerAuditFailed(PermanentError, RuntimeError):
    """The ledger is not as it was written: a human must look (a retry finds the same)."""


@dataclass(frozen=True)
class Finding:
    """The first bad row: where, and what failed (never a value)."""

    where: str  # e.g. "deliveries id=5 (chain seq 7)"
    problem: str
    table: str | None = None
    key: str | None = None  # the row key as chained, e.g. "[5]"

    def line(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass(frozen=True)
class Verified:
    rows: dict[str, int] = field(default_factory=dict)  # chained rows checked, per table
    head_seq: int = 0
    head_sha256: str = GENESIS
    adopted: str | None = None  # what the upgrade that introduced the chain adopted
    finding: Finding | None = None

    @property
    def ok(self) -> bool:
        return self.finding is None

    @property
    def anchor(self) -> str:
        """``SEQ:SHA256`` of the head: keep it outside the ledger, pass it to the next audit."""
        return f"{self.head_seq}:{self.head_sha256}"

    def line(self) -> str:
        if self.finding is not None:
            return (f"ledger verify FAILED at {self.finding.line()}. Nothing in the ledger was "
                    "changed by this check; restore the ledger from a backup taken before it "
                    "and investigate who had write access")
        counts = ", ".join(f"{name} {n}" for name, n in self.rows.items())
        adopted = f"; {self.adopted}" if self.adopted else ""
        return (f"ledger verified: {sum(self.rows.values())} chained row(s) ({counts}), chain "
                f"head seq {self.head_seq} {self.head_sha256[:16]}{adopted}")


def describe(table_name: str, key: str) -> str:
    """``deliveries id=5``, ``alerts kind=missed, subject=NGA-R001/unicef-nga``."""
    names = CHAINED.get(table_name, ((),))[0]
    try:
        values = json.loads(key)
    except ValueError:
        values = None
    if not isinstance(values, list) or len(values) != len(names):
        return f"{table_name} key {key}"
    return f"{table_name} " + ", ".join(f"{n}={v}" for n, v in zip(names, values, strict=True))


def verify(engine: sa.Engine, anchor: tuple[int, str] | None = None) -> Verified:
    """Check the whole chain; ``anchor`` is (seq, chain hash) of a head seen before."""
    require_schema(engine)
    options = {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" \
        else {}
    with engine.connect().execution_options(**options) as conn:
        entries = conn.execute(sa.select(audit_chain).order_by(audit_chain.c.seq)).all()
        hashes = {name: {row_key(name, r): row_sha256(name, r) for r in
                         conn.execute(chained_select(metadata.tables[name])).mappings()}
                  for name in CHAINED}
        adopted = conn.execute(sa.select(ledger_meta.c.value)
                               .where(ledger_meta.c.key == CHAIN_ADOPTED)).scalar()
        finding = _walk(entries, hashes) or _unchained(conn, entries, hashes)
    head = entries[-1] if entries else None
    if finding is None and anchor is not None:
        finding = _off_anchor(entries, anchor)
    return Verified({name: len(rows) for name, rows in hashes.items()},
                    head.seq if head else 0, head.chain_sha256 if head else GENESIS,
                    adopted, finding)


def _walk(entries, hashes: dict[str, dict[str, str]]) -> Finding | None:
    chained_as = {(e.table_name, e.row_sha256): e.row_key for e in entries}
    prev = GENESIS
    for expected, e in enumerate(entries, start=1):
        where = f"{describe(e.table_name, e.row_key)} (chain seq {e.seq})"
        if e.seq != expected:
            return Finding(where, f"chain entry seq {expected} is missing: the row chained "
                           "there was deleted together with its entry", e.table_name, e.row_key)
        if e.prev_sha256 != prev:
            return Finding(where, "does not follow the entry before it: entries were "
                           "reordered, removed or inserted", e.table_name, e.row_key)
        if chain_sha256(prev, e.seq, e.table_name, e.row_key, e.row_sha256) != e.chain_sha256:
            return Finding(where, "its chain entry was altered", e.table_name, e.row_key)
        actual = hashes.get(e.table_name, {}).get(e.row_key)
        if actual is None:
            return Finding(where, "deleted (or its key changed) since it was recorded",
                           e.table_name, e.row_key)
        if actual != e.row_sha256:
            other = chained_as.get((e.table_name, actual))
            problem = (f"holds the content chained as {describe(e.table_name, other)}: rows "
                       "were reordered" if other is not None and other != e.row_key
                       else "changed since it was recorded")
            return Finding(where, problem, e.table_name, e.row_key)
        prev = e.chain_sha256
    return None


def _unchained(conn: sa.Connection, entries, hashes) -> Finding | None:
    """A row no entry covers was inserted around the chain, unless it was appended (with its
    entry) after the chain was read: those are looked up again."""
    seen = {(e.table_name, e.row_key) for e in entries}
    for name, rows in hashes.items():
        for key in rows:
            if (name, key) in seen:
                continue
            late = conn.execute(sa.select(audit_chain.c.seq).where(
                audit_chain.c.table_name == name, audit_chain.c.row_key == key)).first()
            if late is None:
                return Finding(describe(name, key), "is not in the chain: inserted around it "
                               "(or its chain entry was deleted)", name, key)
    return None


def _off_anchor(entries, anchor: tuple[int, str]) -> Finding | None:
    seq, digest = anchor
    if seq == 0:  # the previous audit saw an empty chain
        return None
    entry = entries[seq - 1] if 0 < seq <= len(entries) else None
    if entry is None:
        return Finding(f"chain seq {seq}", f"the chain ends at seq {len(entries)}, before the "
                       "head a previous audit verified: rows at its end were removed")
    if not entry.chain_sha256.startswith(digest):
        return Finding(f"{describe(entry.table_name, entry.row_key)} (chain seq {seq})",
                       "differs from the head a previous audit verified: the chain was "
                       "rewritten", entry.table_name, entry.row_key)
    return None


def parse_anchor(text: str) -> tuple[int, str]:
    """``SEQ:SHA256`` (``Verified.anchor``; the hash may be shortened to the 16 characters
    ``verify`` prints) -> (seq, hash)."""
    seq, _, digest = text.strip().partition(":")
    if not seq.isdigit() or not 16 <= len(digest) <= 64 \
            or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise ValueError(f"{text!r}: an anchor is SEQ:SHA256, e.g. 12:{'ab' * 8}")
    return int(seq), digest.lower()
