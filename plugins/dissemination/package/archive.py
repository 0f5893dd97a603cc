"""A package: the shared columns as CSV plus a manifest, in an AES-256 zip.

The zip is WinZip-AES (pyzipper), which 7-Zip, p7zip, WinZip and Python open; Info-ZIP's ``unzip``
does not. The password is an argument, never part of the package, its manifest or its name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyzipper
from pyzipper.zipfile import ZIP64_LIMIT
from zlib_ng import zlib_ng
from zxcvbn import zxcvbn

from ..classification import Classification, Urgency
from ..classify.sensitivity import SecretLeak, Selection
from ..disclosure.content import Content
from ..disclosure.explanation import explain
from ..errors import PermanentError
from ..ids import check_round_id
from ..intake.source import RoundMeta
from ..policy import Agreement, RuleSet
from .digests import file_sha256
from .formulas import neutralise

DATA_FILE = "data.csv"
MANIFEST_FILE = "manifest.json"
MIN_PASSWORD_LENGTH = 16
MIN_DISTINCT_CHARACTERS = 12
#: zxcvbn's estimate of the guesses an attacker needs, as a power of ten. Its top score (4) means
#: only 10^10, and "Unicef2026Nigeria!" reaches it; a generated password (``new_password``) is
#: estimated at 10^22 or more, a four-word passphrase at about 10^18.
MIN_GUESSES_LOG10 = 14
MIN_ZXCVBN_SCORE = 4
MANIFEST_VERSION = 1
#: Hex digits of the zip's SHA-256 in its name: 64 bits, no two alike in any one folder.
NAME_HASH_CHARS = 16


def password_weakness(password: str, known: tuple[str, ...] = ()) -> str:
    """Why a package password is too weak to protect a round, or "". Length alone let
    "aaaaaaaaaaaaaaaa" and sixteen spaces through, and length with variety let "Password12345678"
    through: zxcvbn judges it as a cracker would, with ``known`` (the agreement's organisation,
    id, countries, Variable: in the policy, so an attacker's first guesses) as its dictionary.
    Never says anything of the password but its length, nor zxcvbn's feedback, which quotes it."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"is shorter than {MIN_PASSWORD_LENGTH} characters"
    if any(c.isspace() for c in password):
        return "holds whitespace (a copy-paste slip, or trimmed away by a partner's tool)"
    if len(set(password)) < MIN_DISTINCT_CHARACTERS:
        return (f"has fewer than {MIN_DISTINCT_CHARACTERS} different characters: guessable "
                "(set a generated one, see docs/operations.md: rotate a password)")
    strength = _strength(password, known)
    if strength["score"] < MIN_ZXCVBN_SCORE or strength["guesses_log10"] < MIN_GUESSES_LOG10:
        return (f"is guessable: zxcvbn scores it {strength['score']} of 4 with about "
                f"10^{int(strength['guesses_log10'])} guesses, below the "
                f"10^{MIN_GUESSES_LOG10} required (set a generated one, see docs/operations.md: "
                "rotate a password)")
    return ""


@lru_cache(maxsize=64)
def _strength(password: str, known: tuple[str, ...]) -> dict:
    """zxcvbn's score and guesses only (its feedback quotes the password): once per password
    and agreement, not once per package."""
    result = zxcvbn(password, user_inputs=[w for k in known for w in re.split(r"[\W_]+", k) + [k]
                                           if w])
    return {"score": result["score"], "guesses_log10": float(result["guesses_log10"])}


def known_words(agreement: Agreement) -> tuple[str, ...]:
    """What the policy tells anyone about an agreement's password: its first guesses."""
    return (agreement.id, agreement.organisation, agreement.password.variable,
            agreement.focal_points, *agreement.countries)


class WeakPassword(PermanentError, ValueError):
    pass


@dataclass(frozen=True)
class Package:
    path: Path
    content_sha256: str  # of data.csv: the same data is never delivered twice
    package_sha256: str  # of the zip as uploaded
    row_count: int
    manifest: dict

    @property
    def name(self) -> str:
        return self.path.name


#: Rows per record batch: the CSV passes to deflate and AES under a MB at a time, never whole;
#: batches this large cost the same CPU as one write of the whole CSV (1,024 rows: 5% more).
CSV_BATCH_ROWS = 8192


def write_csv(df: pd.DataFrame, out: BinaryIO) -> None:
    """CSV via pyarrow (about 8x faster than ``DataFrame.to_csv``), one record batch at a time
    into ``out``. The Arrow table shares the frame's buffers (Arrow strings, numbers)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    with pa_csv.CSVWriter(out, table.schema,
                          write_options=pa_csv.WriteOptions(batch_size=CSV_BATCH_ROWS)) as writer:
        writer.write_table(table)


class _Hashing(io.RawIOBase):
    """Write-through: what passes to ``sink`` is hashed on the way."""

    def __init__(self, sink: BinaryIO):
        self.sink, self.digest = sink, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        return self.sink.write(data)


@dataclass(frozen=True)
class Issue:
    """When and to whom one package of a table is issued, and the table's shared CSV entry.

    These travel together from the planned delivery into its manifest (the agreement, round and
    rules say the rest); ``deflated`` is the one CSV entry of a table several packages share."""

    created_at: datetime
    warnings: tuple[str, ...] = ()
    recipient: str = "primary"
    organisation: str = ""
    deflated: DeflatedCsv | None = None


def build_package(
    content: Content,
    meta: RoundMeta,
    selection: Selection,
    ruleset: RuleSet,
    agreement: Agreement,
    out_dir: Path,
    password: str,
    issue: Issue,
) -> Package:
    """Write the partner's table and its manifest into an AES-256 zip under ``out_dir``; with
    ``issue.deflated``, its CSV entry is made once for every package of ``content``."""
    warnings, recipient, organisation = issue.warnings, issue.recipient, issue.organisation
    if weakness := password_weakness(password, known_words(agreement)):
        raise WeakPassword(f"the package password for agreement {agreement.id} (variable "
                           f"{agreement.password.variable}) {weakness}")
    if any(c.classification is Classification.SECRET for c in content.columns):
        raise SecretLeak(f"a Secret column reached the package for {agreement.id}")
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "round": {
            "id": meta.round_id,
            "country": meta.country,
            "status": meta.status,
            "collected_at": meta.collected_at.isoformat(),
        },
        "agreement": {
            "id": agreement.id,
            "organisation": organisation or agreement.organisation,
            "organisation_id": agreement.organisation,
            "purpose": agreement.purpose,
        },
        "recipient": recipient,
        "urgency": selection.urgency.value,
        "level": selection.level,
        "rules": {
            "country": ruleset.country,
            "version": ruleset.version,
            "default_version": ruleset.default_version,
            "risk_assessment_date": ruleset.risk_assessment.date.isoformat(),
            "review_due": ruleset.risk_assessment.review_due.isoformat(),
            "small_cell_threshold": ruleset.small_cells.threshold,
        },
        "warnings": list(warnings),
        "columns": [
            {"name": c.name, "source": c.source, "classification": c.classification.value,
             "rule": c.rule, "suppressed_cells": content.suppressed.get(c.name, 0)}
            for c in content.columns
        ],
        "explanation": explain(selection, content),
        "empty_cells": "an empty count is suppressed (small cell) or was missing in the round",
        "row_count": len(content.frame),
        "data_file": DATA_FILE,
        "created_at": issue.created_at.isoformat(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    # The name holds the zip's hash, known once it is written: a private temporary name first
    # (mkstemp: mode 0600, unique for concurrent workers), renamed when complete.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{meta.round_id}_", suffix=".zip.tmp", dir=out_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w+b") as f:
            content_sha256 = _write_zip(f, content.frame, manifest, password,
                                        issue.deflated)
        package_sha256 = file_sha256(tmp)
        path = out_dir / package_name(meta.round_id, agreement.id, selection.urgency,
                                      package_sha256)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Package(path, content_sha256, package_sha256, len(content.frame), manifest)


#: Deflate's level: 5. zlib-ng's level 5 gives files within 0.2-2% of its level 6 (zlib's
#: default) at 1.1-2.4x the speed; level 3 or 4 gives files 5-17% larger, which costs more than
#: it saves over links slower than 5-25 Mbit/s (docs/benchmarks.md: Deflate level).
DEFLATE_LEVEL = 5


#: Deflate in blocks (see ``BlockDeflater``): the CSV bytes a stream's start keeps to one
#: compressor, the bytes per block after that, and deflate's window (what a block is primed with).
DEFLATE_INLINE = 32 << 20
DEFLATE_BLOCK = 1 << 20
WINDOW = 32 * 1024


def deflater():
    """The data entry's compressor: zlib-ng (1.3-1.75x zlib's speed at the same level for files
    within 3% of its size, bench/package.py); past 32 MB of CSV, in blocks on every core."""
    return BlockDeflater(_deflate_pool, DEFLATE_BLOCK, DEFLATE_INLINE)


class BlockDeflater:
    """One raw deflate stream (any unzip reads it) whose start is deflated here and the rest,
    past ``inline`` bytes, in blocks on a thread pool, as pigz does: one large package no longer
    holds a single core while the others wait (at a million sites a package is 150-250 MB of
    CSV, 2-3 s of deflate). Small packages (100k sites: 10-15 MB) stay inline: many of them
    already share the cores, and a block's hand-off (a copy of each MB) cost 15% more CPU.

    Each block is primed with the 32 KB before it (a preset dictionary) and ends on a byte
    boundary (a sync flush), as the inline start does, so the parts joined in order are the
    stream one compressor would have made, within a few bytes per MB; the last ends the stream.
    zlib-ng releases the GIL, so the CSV writer fills the next block while the pool deflates.
    The same writes give the same stream whatever the threads' timing; at most ``ahead`` blocks
    wait, so memory stays flat. Same interface as ``zlib.compressobj``'s result, which is all
    pyzipper uses."""

    def __init__(self, make_pool, block: int = DEFLATE_BLOCK, inline: int = DEFLATE_INLINE,
                 ahead: int | None = None):
        self.make_pool, self.pool = make_pool, None  # the pool: when the blocks start
        self.block, self.ahead = block, ahead or 2 * len(os.sched_getaffinity(0))
        self.inline, self.left = _compressor(), inline
        self.pending: deque = deque()
        self.pieces, self.size, self.primer = [], 0, b""

    def compress(self, data) -> bytes:
        if self.inline is not None:
            return self._compress_inline(data)
        self.pieces.append(bytes(data))  # a copy: the CSV writer reuses its buffer
        self.size += len(data)
        if self.size >= self.block:  # the writes so far, one copy: a block of >= ``block``
            self._submit(last=False)
        done = []
        while self.pending and (len(self.pending) > self.ahead or self.pending[0].done()):
            done.append(self.pending.popleft().result())
        return b"".join(done)

    def flush(self, mode: int = zlib_ng.Z_FINISH) -> bytes:
        if mode != zlib_ng.Z_FINISH:
            raise ValueError("BlockDeflater.flush: only Z_FINISH (the end of the stream)")
        if self.inline is not None:
            out, self.inline = self.inline.flush(zlib_ng.Z_FINISH), None
            return out
        self._submit(last=True)
        done = [f.result() for f in self.pending]
        self.pending.clear()
        return b"".join(done)

    def _compress_inline(self, data) -> bytes:
        out = self.inline.compress(data)
        self.left -= len(data)
        self.primer = (self.primer + bytes(data[-WINDOW:]))[-WINDOW:]
        if self.left > 0:
            return out
        out += self.inline.flush(zlib_ng.Z_SYNC_FLUSH)  # byte-aligned: blocks follow
        self.inline, self.pool = None, self.make_pool()
        return out

    def _submit(self, last: bool) -> None:
        data = self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)
        self.pieces, self.size = [], 0
        self.pending.append(self.pool.submit(_deflate_block, data, self.primer, last))
        self.primer = data[-WINDOW:]


def _deflate_block(data: bytes, primer: bytes, last: bool) -> bytes:
    compressor = _compressor(primer)
    return compressor.compress(data) + compressor.flush(
        zlib_ng.Z_FINISH if last else zlib_ng.Z_SYNC_FLUSH)


def _compressor(primer: bytes = b""):
    """A raw deflate stream's compressor (no zlib header: the zip entry is the container)."""
    extra = {"zdict": primer} if primer else {}
    return zlib_ng.compressobj(DEFLATE_LEVEL, zlib_ng.DEFLATED, -15, **extra)


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _deflate_pool() -> ThreadPoolExecutor:
    """This process's deflate threads, one per core it may use (a forked worker makes its own:
    threads do not survive a fork)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(len(os.sched_getaffinity(0)),
                                                 thread_name_prefix="deflate"))
    return _POOL[1]


class DeflatedCsv:
    """One table's CSV entry, deflated once for all the packages of that table: the first
    package writes it (CSV, hash, deflate: most of a package's cost) and keeps the deflate
    stream; the others encrypt that stream with their own passwords. Every zip stays its own
    (its own salt, key and authentication code); only the compressed bytes inside are alike,
    as they would be anyway for the same CSV. Holds the stream (a tenth of the CSV) while the
    packages of its table are written."""

    def __init__(self):
        self.stream: bytes | None = None
        self.size = self.crc = self.neutralised = 0
        self.sha256 = ""


class _Recording:
    """A compressor that keeps what it returns: the deflate stream, for ``DeflatedCsv``."""

    def __init__(self, compressor):
        self.compressor, self.out = compressor, []

    def compress(self, data) -> bytes:
        self.out.append(self.compressor.compress(data))
        return self.out[-1]

    def flush(self, mode: int = zlib_ng.Z_FINISH) -> bytes:
        self.out.append(self.compressor.flush(mode))
        return self.out[-1]


class _Replay:
    """A compressor whose whole stream is known: pyzipper encrypts it as if deflated now."""

    def __init__(self, stream: bytes):
        self.stream = stream

    def compress(self, data) -> bytes:
        raise AssertionError("a replayed CSV entry is written whole at its close")

    def flush(self, mode: int = zlib_ng.Z_FINISH) -> bytes:
        return self.stream


def _write_zip(f: BinaryIO, frame: pd.DataFrame, manifest: dict, password: str,
               deflated: DeflatedCsv | None = None) -> str:
    """The CSV streamed into its AES entry (hashed as it passes), then the manifest with that
    hash (so the data entry comes first) and how many of its cells were quoted so that no
    spreadsheet runs them as formulas (``formulas``). Returns the CSV's SHA-256."""
    stamp = time.localtime(time.time())[:6]
    with pyzipper.AESZipFile(
        f, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as zf:
        zf.setpassword(password.encode("utf-8"))
        zf.setencryption(pyzipper.WZ_AES, nbits=256)
        entry = zf.zipinfo_cls(DATA_FILE, date_time=stamp)
        entry.compress_type = zf.compression
        replay = deflated is not None and deflated.stream is not None
        with zf.open(entry, "w", force_zip64=_csv_size_bound(frame) * 1.05 > ZIP64_LIMIT) as raw:
            if replay:  # pyzipper's own counts of the CSV, as writing it would have made them
                raw._compressor = _Replay(deflated.stream)
                raw._file_size, raw._crc = deflated.size, deflated.crc
                manifest["data_sha256"] = deflated.sha256
                manifest["formula_cells_neutralised"] = deflated.neutralised
            else:
                raw._compressor = deflater() if deflated is None else _Recording(deflater())
                hashing = _Hashing(raw)
                frame, manifest["formula_cells_neutralised"] = neutralise(frame)
                write_csv(frame, hashing)
                manifest["data_sha256"] = hashing.digest.hexdigest()
                if deflated is not None:
                    deflated.size, deflated.crc = raw._file_size, raw._crc
                    deflated.sha256 = manifest["data_sha256"]
                    deflated.neutralised = manifest["formula_cells_neutralised"]
        if deflated is not None and not replay:  # the stream is whole once the entry is closed
            deflated.stream = b"".join(raw._compressor.out)
        zf.writestr(MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True))
    return manifest["data_sha256"]


def _csv_size_bound(df: pd.DataFrame) -> int:
    """More than the CSV's size can be: a streamed entry must choose ZIP64 before its first byte.

    A cell's text is at most twice its bytes in memory (quotes doubled) plus 24 characters (the
    longest number, date or boolean and a separator); a categorical's cell, its longest label's."""
    bound = 24 * (df.size + len(df.columns)) + 2 * int(df.memory_usage(index=False,
                                                                       deep=True).sum())
    for _, column in df.items():
        if isinstance(column.dtype, pd.CategoricalDtype) and len(column.cat.categories):
            bound += 2 * len(column) * int(column.cat.categories.astype(str).str.len().max())
    return bound + 2 * sum(len(str(c)) for c in df.columns)


def package_name(round_id: str, agreement_id: str, urgency: Urgency,
                 package_sha256: str) -> str:
    """A package's file name: the round, the agreement, the urgency, and 64 bits of the zip's
    own SHA-256 (the ciphertext's, never the CSV's).

    The name is read where the data is not: by the partner's server administrators, in
    directory listings, in e-mails. The CSV's hash there let anyone holding a guess of the data
    confirm it, and link the same table across partners; a field focal point's name told who
    holds which sites. Who the package is for is in its manifest, inside the encryption. Each
    zip has its own random salt, so every package (a field focal point's and the primary's of
    the same data too) has a name of its own."""
    check_round_id(round_id, "package name")
    return f"{round_id}_{agreement_id}_{urgency.value}_{package_sha256[:NAME_HASH_CHARS]}.zip"


def opens_with(path: Path, password: str) -> bool:
    """Does ``password`` open the package? Its manifest is read (a few kB), not its data."""
    with pyzipper.AESZipFile(path) as zf:
        zf.setpassword(password.encode("utf-8"))
        try:
            zf.read(MANIFEST_FILE)
        except RuntimeError:  # pyzipper: "Bad password for file 'manifest.json'"
            return False
    return True


def open_package(path: Path, password: str) -> tuple[dict, pd.DataFrame]:
    """What a partner does: decrypt, read the manifest, check the data against its hash."""
    with pyzipper.AESZipFile(path) as zf:
        zf.setpassword(password.encode("utf-8"))
        manifest = json.loads(zf.read(MANIFEST_FILE))
        data = zf.read(DATA_FILE)
    if hashlib.sha256(data).hexdigest() != manifest["data_sha256"]:
        raise ValueError(f"{path}: {DATA_FILE} does not match the manifest's data_sha256")
    return manifest, pd.read_csv(io.BytesIO(data), engine="pyarrow", dtype_backend="pyarrow")
