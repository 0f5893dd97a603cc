"""Verify the ledger's hash chain: is every delivery, rotation, alert and intake row as written?

Walks ``audit_chain`` in order and recomputes each link and each row's hash; stops at the first
row that was changed, deleted or reordered, and names it by table and key only (rows hold focal
points' names and e-mail addresses: no value is ever printed). Rows no entry covers (inserted
around the chain) fail too. An anchor, the head a previous audit saw, also catches a chain cut
short or rewritten from the start, which no chain can prove by itself; the head an audit
published outside the ledger (``chain.Head``) does so for whoever can write the ledger and
Airflow's Variables. Keyed links (``ledger/chain.py``) need the chain key to be checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..errors import PermanentError
from .chain import Head, Links
from .connection import require_schema
from .rows import chained_select, row_key, row_sha256
from .tables import CHAIN_ADOPTED, CHAINED, GENESIS, audit_chain, ledger_meta, metadata


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
    since_seq: int = 0  # entries up to it were taken as the last passing audit verified them
    keyed_from: int | None = None  # the first keyed entry (None: the chain is all plain)

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
        since = (f" since seq {self.since_seq} (up to it: the last passing ledger audit)"
                 if self.since_seq else "")
        keyed = (f", keyed from seq {self.keyed_from}" if self.keyed_from is not None
                 else ", NOT keyed (no chain key was given when it was written)")
        return (f"ledger verified: {sum(self.rows.values())} chained row(s){since} ({counts}), "
                f"chain head seq {self.head_seq} {self.head_sha256[:16]}{keyed}{adopted}")

    def head(self, audited_at: str) -> Head:
        """The head to publish outside the ledger after this audit passed."""
        return Head(self.head_seq, self.head_sha256, self.keyed_from, audited_at)


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


def verify(engine: sa.Engine, anchor: tuple[int, str] | None = None,
           published: Head | None = None) -> Verified:
    """Check the whole chain; ``anchor`` is (seq, chain hash) of a head seen before,
    ``published`` the newest head an audit published outside the ledger."""
    require_schema(engine)
    with _snapshot(engine) as conn:
        links = Links.of(conn, ledger_meta)
        entries = conn.execute(sa.select(audit_chain).order_by(audit_chain.c.seq)).all()
        try:
            hashes = {name: {row_key(name, r): row_sha256(name, r) for r in
                             conn.execute(chained_select(metadata.tables[name])).mappings()}
                      for name in CHAINED}
        except ValueError:  # a stored value its type cannot read (SQLite keeps anything)
            return Verified(finding=_misstored(conn) or _UNREADABLE)
        adopted = conn.execute(sa.select(ledger_meta.c.value)
                               .where(ledger_meta.c.key == CHAIN_ADOPTED)).scalar()
        finding = _walk(entries, hashes, links) or _unchained(conn, entries, hashes) \
            or _misstored(conn)
    head = entries[-1] if entries else None
    for seen in (anchor, published and (published.seq, published.chain_sha256)):
        if finding is None and seen is not None:
            at = entries[seen[0] - 1] if 0 < seen[0] <= len(entries) else None
            finding = _off_anchor(at, seen, len(entries))
    finding = finding or _off_published_keying(published, links)
    return Verified({name: len(rows) for name, rows in hashes.items()},
                    head.seq if head else 0, head.chain_sha256 if head else GENESIS,
                    adopted, finding, keyed_from=links.start)


def _snapshot(engine: sa.Engine) -> sa.Connection:
    """A connection that sees the chain and its rows as of one moment on PostgreSQL
    (repeatable read); on SQLite, rows chained while it reads are looked up again."""
    options = {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" \
        else {}
    return engine.connect().execution_options(**options)


def _walk(entries, hashes: dict[str, dict[str, str]], links: Links, start: int = 1,
          prev: str = GENESIS) -> Finding | None:
    for expected, e in enumerate(entries, start=start):
        problem = _link_problem(e, expected, prev, hashes, entries, links)
        if problem is not None:  # named only then: describing every entry costs a tenth
            return Finding(f"{describe(e.table_name, e.row_key)} (chain seq {e.seq})", problem,
                           e.table_name, e.row_key)
        prev = e.chain_sha256
    return None


def _link_problem(e, expected: int, prev: str, hashes, entries, links: Links) -> str | None:
    """What is wrong with chain entry ``e`` (the ``expected``-th, after ``prev``), if anything."""
    if e.seq != expected:
        return (f"chain entry seq {expected} is missing: the row chained there was deleted "
                "together with its entry")
    if e.prev_sha256 != prev:
        return "does not follow the entry before it: entries were reordered, removed or inserted"
    if links.expected(prev, e.seq, e.table_name, e.row_key, e.row_sha256) != e.chain_sha256:
        return "its chain entry was altered" + (
            " (its keyed link does not verify: re-hashed without the chain key, or the key "
            "given is not this ledger's)" if links.keyed(e.seq) else "")
    actual = hashes.get(e.table_name, {}).get(e.row_key)
    if actual is None:
        return "deleted (or its key changed) since it was recorded"
    if actual != e.row_sha256:
        other = next((o.row_key for o in entries
                      if (o.table_name, o.row_sha256) == (e.table_name, actual)), None)
        return (f"holds the content chained as {describe(e.table_name, other)}: rows were "
                "reordered" if other is not None and other != e.row_key
                else "changed since it was recorded")
    return None


def verify_since(engine: sa.Engine, anchor: tuple[int, str]) -> Verified:
    """Check only what was chained after ``anchor``, the head the last passing audit verified
    (kept outside the ledger): that head is still there, unchanged, and every later entry and
    its row hold. Rows before the anchor are taken as that audit found them, and rows slipped in
    around the chain are left to the next full audit: cheap enough for a page read every minute
    over years of history, and no substitute for the daily ``verify``."""
    require_schema(engine)
    seq = anchor[0]
    with _snapshot(engine) as conn:
        links = Links.of(conn, ledger_meta)
        entries = conn.execute(sa.select(audit_chain).where(audit_chain.c.seq >= seq)
                               .order_by(audit_chain.c.seq)).all()
        since = _keys(entries[1:] if seq else entries)
        try:
            hashes = _row_hashes(conn, since)
        except ValueError:  # a stored value its type cannot read (SQLite keeps anything)
            return Verified(finding=_misstored(conn, since) or _UNREADABLE, since_seq=seq)
        end = conn.execute(sa.select(sa.func.max(audit_chain.c.seq))).scalar() or 0
        finding, prev = None, GENESIS
        if seq:
            at = entries[0] if entries and entries[0].seq == seq else None
            finding = _off_anchor(at, anchor, end)
            prev, entries = (at.chain_sha256, entries[1:]) if at is not None else (prev, [])
        finding = finding or _walk(entries, hashes, links, seq + 1, prev) \
            or _misstored(conn, since)
    head = entries[-1] if entries else None
    return Verified({name: len(rows) for name, rows in hashes.items()},
                    head.seq if head else seq, head.chain_sha256 if head else prev, None, finding,
                    seq, links.start)


def _keys(entries) -> dict[str, list[tuple]]:
    """The keys of the rows ``entries`` chain, by table."""
    wanted: dict[str, list[tuple]] = {}
    for e in entries:
        wanted.setdefault(e.table_name, []).append(tuple(json.loads(e.row_key)))
    return wanted


def _in_batches(table: sa.Table, keys: list[tuple]):
    """WHERE clauses selecting the rows of ``keys``, 500 at a time."""
    key_columns = sa.tuple_(*(table.c[k] for k in CHAINED[table.name][0]))
    for start in range(0, len(keys), 500):
        yield key_columns.in_(keys[start:start + 500])


def _row_hashes(conn: sa.Connection, wanted: dict[str, list[tuple]]
                ) -> dict[str, dict[str, str]]:
    """Row hashes of the rows of ``wanted`` keys, by table."""
    hashes: dict[str, dict[str, str]] = {name: {} for name in CHAINED}
    for name, keys in wanted.items():
        table = metadata.tables[name]
        for where in _in_batches(table, keys):
            hashes[name].update((row_key(name, r), row_sha256(name, r))
                                for r in conn.execute(chained_select(table).where(where))
                                .mappings())
    return hashes


_UNREADABLE = Finding("ledger", "a chained value cannot be read as its column's type: changed "
                      "outside the pipeline")


def _misstored(conn: sa.Connection, wanted: dict[str, list[tuple]] | None = None
               ) -> Finding | None:
    """SQLite keeps any value in any column, and reading converts it: ``'x'`` in a boolean
    reads as True, so a row's hash would stand while SQL over the stored value (the page
    counting ``deadline_met = 1``) reads it differently; an unreadable time would stop the
    audit. A chained value stored as the pipeline never writes it was written by something
    else. (PostgreSQL enforces its column types.) Every row, or those of ``wanted`` keys."""
    if conn.dialect.name != "sqlite":
        return None
    for name, (keys, columns) in CHAINED.items():  # one scan per table
        table = metadata.tables[name]
        which = sa.case(*((sa.and_(table.c[c].is_not(None), wrong), c)
                          for c in dict.fromkeys(keys + columns)
                          if (wrong := _stored_wrong(table.c[c])) is not None))
        query = sa.select(sa.func.json_array(*(table.c[k] for k in keys)), which)  # as stored
        wheres = [sa.true()] if wanted is None else _in_batches(table, wanted.get(name, []))
        found = next((row for where in wheres for row in conn.execute(
            query.where(which.is_not(None), where).limit(1))), None)
        if found is not None:
            key = json.dumps(json.loads(found[0]), ensure_ascii=False)  # as row_key writes it
            return Finding(describe(name, key), f"{found[1]} is stored as the pipeline never "
                           "writes it: changed outside the pipeline", name, key)
    return None


def _stored_wrong(column: sa.Column):
    """SQL true where ``column``'s stored value is not what SQLAlchemy writes for its type."""
    kind = sa.func.typeof(column)
    if isinstance(column.type, sa.Boolean):
        return sa.or_(kind != "integer", column.not_in([0, 1]))
    if isinstance(column.type, sa.DateTime):  # a time SQLite reads as one
        return sa.or_(kind != "text", sa.func.datetime(column).is_(None))
    if isinstance(column.type, sa.Integer):
        return kind != "integer"
    if isinstance(column.type, sa.String):
        return kind != "text"
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


def _off_anchor(entry, anchor: tuple[int, str], end: int) -> Finding | None:
    """Is ``entry``, the chain's entry at the anchor's seq (None: there is none; the chain ends
    at ``end``), the head a previous audit verified?"""
    seq, digest = anchor
    if seq == 0:  # the previous audit saw an empty chain
        return None
    if entry is None:
        if end > seq:
            return Finding(f"chain seq {seq}", "the entry a previous audit verified as the "
                           "head is missing: the row chained there was deleted with its entry")
        return Finding(f"chain seq {seq}", f"the chain ends at seq {end}, before the "
                       "head a previous audit verified: rows at its end were removed")
    if not entry.chain_sha256.startswith(digest):
        return Finding(f"{describe(entry.table_name, entry.row_key)} (chain seq {seq})",
                       "differs from the head a previous audit verified: the chain was "
                       "rewritten", entry.table_name, entry.row_key)
    return None


def _off_published_keying(published: Head | None, links: Links) -> Finding | None:
    """Does the ledger still say its chain is keyed from where it said when ``published``?
    Moving that point (or removing it) lets keyed links be re-hashed as plain ones."""
    if published is None or published.keyed_from is None or published.keyed_from == links.start:
        return None
    now = "all plain" if links.start is None else f"keyed from seq {links.start}"
    return Finding(f"chain seq {published.keyed_from}", f"the chain was keyed from seq "
                   f"{published.keyed_from} when an audit published its head; the ledger now "
                   f"says {now}: keyed links were re-hashed as plain ones")


def parse_anchor(text: str) -> tuple[int, str]:
    """``SEQ:SHA256`` (``Verified.anchor``; the hash may be shortened to the 16 characters
    ``verify`` prints) -> (seq, hash)."""
    seq, _, digest = text.strip().partition(":")
    if not seq.isdigit() or not 16 <= len(digest) <= 64 \
            or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise ValueError(f"{text!r}: an anchor is SEQ:SHA256, e.g. 12:{'ab' * 8}")
    return int(seq), digest.lower()
