"""Staging through Airflow's object storage, so a run's tasks may land on any worker.

A run's staged files (rounds, packages, manifests) live under one prefix of a shared store, named
by a hash of the run id: ``DISSEMINATION_STAGING_URL`` (any ``ObjectStoragePath`` URL: ``s3://``,
``gs://``, ``file://`` on a shared volume...), with credentials from the Airflow connection named by
``DISSEMINATION_STAGING_CONN_ID``. The default is the local folder staging always used
(``file://`` + work_dir()/runs), so a single machine behaves as before.

What is only on one worker is scratch: ``local_dir()`` to build files before ``put``, and the
cache ``fetch`` downloads into. A worker's cache of a run is dropped by ``remove()`` on that
worker, or on that worker's next download once the run's prefix is gone from the store, or by
``sweep``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import ObjectStoragePath

from dissemination import PermanentError, check_round_id
from dissemination.intake import RUN_FOLDER, private_dir, run_folder, run_name
from dissemination.intake import sweep as sweep_folders
from dissemination.ledger import Head
from dissemination_airflow import ConfigurationError, staging_root, work_dir

#: Stores where one upload is atomic for readers (the object appears whole or not at all).
_ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


class StagedFileMissing(PermanentError, FileNotFoundError):
    """A file the run staged is not in the store (removed, swept, or never written)."""


def staging_base():
    """The store's base path from the configuration (an ``ObjectStoragePath``)."""
    url = os.environ.get("DISSEMINATION_STAGING_URL") or staging_root().resolve().as_uri()
    conn_id = os.environ.get("DISSEMINATION_STAGING_CONN_ID") or None
    try:
        return ObjectStoragePath(url, conn_id=conn_id)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"DISSEMINATION_STAGING_URL={public_url(url)!r}: not a storage URL ({exc})") from None


def public_url(path) -> str:
    """A store path as text without any user part (a connection id or credentials)."""
    text = str(path)
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", text)


def _is_local(path) -> bool:
    return path.protocol in ("file", "local", "")


class RunStage:
    """One run's staged files in the store, and its scratch and cache on this worker."""

    def __init__(self, run_id: str, base=None):
        self.run_id = run_id
        self.name = run_name(run_id)
        self.base = staging_base() if base is None else base
        self.path = self.base / self.name
        self.local = _is_local(self.path)

    def __repr__(self) -> str:
        return f"RunStage({self.run_id!r} at {public_url(self.path)})"

    # --- the store ---------------------------------------------------------------------------

    def put(self, local: Path, name: str) -> str:
        """Upload ``local`` as ``name``; readers see the whole file or none. A file built in
        ``local_dir()`` is consumed (moved when the store is local: no copy of a large package);
        any other file is copied and left where it is."""
        local = Path(local)
        target = self._target(name)
        size = local.stat().st_size
        consume = local.resolve().parent == (_scratch_root() / self.name).resolve()
        if self.local:
            dest = self._folder() / name
            temp = dest.with_name(f".{name}.{uuid.uuid4().hex}.part")
            try:
                moved = False
                if consume:
                    with contextlib.suppress(OSError):  # another file system: copy instead
                        os.replace(local, temp)
                        moved = True
                if not moved:
                    shutil.copyfile(local, temp)
                temp.chmod(0o600)
                os.replace(temp, dest)
            finally:
                temp.unlink(missing_ok=True)
        elif self.path.protocol in _ATOMIC_PUT:
            target.fs.put_file(str(local), target.path)
        else:  # a store with a real rename (sftp, hdfs...): a temporary key, then a move
            temp = self.path / f".{name}.{uuid.uuid4().hex}.part"
            target.fs.put_file(str(local), temp.path)
            target.fs.mv(temp.path, target.path)
        stored = self._info(name)["size"]
        if stored != size:
            raise OSError(f"{self._where(name)}: {stored} bytes stored, {size} sent")
        if consume:
            local.unlink(missing_ok=True)
        return name

    def fetch(self, name: str) -> Path:
        """A local path to read ``name``: the staged file itself on a local store, else a copy in
        this worker's cache (reused while its size matches the store's)."""
        target = self._target(name)
        if self.local:
            path = Path(target.path)
            if not path.is_file():
                raise self._missing(name)
            return path
        size = self._info(name)["size"]
        folder = self._cache_dir()
        copy = folder / name
        if copy.is_file() and copy.stat().st_size == size:
            return copy
        temp = folder / f".{name}.{uuid.uuid4().hex}.part"
        try:
            target.fs.get_file(target.path, str(temp))
            temp.chmod(0o600)
            if temp.stat().st_size != size:
                raise OSError(f"{self._where(name)}: downloaded {temp.stat().st_size} bytes of "
                              f"{size}")
            os.replace(temp, copy)
        except FileNotFoundError:
            raise self._missing(name) from None
        finally:
            temp.unlink(missing_ok=True)
        return copy

    def write_json(self, name: str, obj) -> str:
        """Stage a JSON document (plan results, batches: what must not go through XCom)."""
        self._target(name)
        temp = self.local_dir() / f".{name}.{uuid.uuid4().hex}.json"
        try:
            temp.write_text(json.dumps(obj, sort_keys=True))
            return self.put(temp, name)  # consumed
        finally:
            temp.unlink(missing_ok=True)

    def read_json(self, name: str):
        """A staged JSON document, read from the store itself (never a stale cached copy)."""
        target = self._target(name)
        try:
            return json.loads(Path(target.path).read_bytes() if self.local
                              else target.read_bytes())
        except FileNotFoundError:
            raise self._missing(name) from None

    def remove(self) -> None:
        """Delete the run's prefix in the store, and its scratch and cache on this worker."""
        if self.local:
            shutil.rmtree(self.path.path, ignore_errors=True)
        elif _fresh(self.path.fs, self.path.path).exists(self.path.path):
            self.path.fs.rm(self.path.path, recursive=True)
        for folder in (_scratch_root() / self.name, _cache_root() / self.name):
            shutil.rmtree(folder, ignore_errors=True)

    # --- this worker -------------------------------------------------------------------------

    def _folder(self) -> Path:
        """The store's folder, when it is local."""
        return run_folder(Path(self.base.path), self.run_id)

    def local_dir(self) -> Path:
        """A private scratch folder for this run on this worker (build files here, then put)."""
        return private_dir(private_dir(_scratch_root()) / self.name)

    def _cache_dir(self) -> Path:
        folder = _cache_root() / self.name
        if not folder.is_dir():  # a new run on this worker: drop the caches of runs now gone
            prune_caches(self.base)
        return private_dir(private_dir(_cache_root()) / self.name)

    # --- helpers -----------------------------------------------------------------------------

    def _target(self, name: str):
        if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
            raise ValueError(f"staged file name {name!r}: give a plain file name (letters, digits, "
                             "'.', '_', '-'; no '/' or '..')")
        return self.path / name

    def _info(self, name: str) -> dict:
        target = self._target(name)
        try:
            if self.local:  # a stat: fsspec's first use imports every provider's file systems
                return {"size": Path(target.path).stat().st_size}
            return _fresh(target.fs, self.path.path).info(target.path)
        except FileNotFoundError:
            raise self._missing(name) from None

    def _where(self, name: str) -> str:
        return f"run {self.run_id!r}: staged file {name!r} in {public_url(self.path)}"

    def _missing(self, name: str) -> StagedFileMissing:
        return StagedFileMissing(f"{self._where(name)} is missing (the run's stage was removed or "
                                 "never written): clear the run from its first task")


class ExportChanged(PermanentError, ValueError):
    """A kept export is not what was kept: its bytes no longer hash to its version."""


class KeptFolder(RunStage):
    """A folder of the store kept beyond runs, under ``FOLDER`` (which ``sweep`` never
    touches: it removes run folders only)."""

    FOLDER = ""

    def __init__(self, base=None):
        super().__init__(self.FOLDER, base)
        self.name = self.FOLDER
        self.path = self.base / self.FOLDER

    def _folder(self) -> Path:
        return private_dir(private_dir(Path(self.base.path)) / self.FOLDER)


class KeptExports(KeptFolder):
    """The exports of rounds that packages were made from, kept beyond their runs (``shown``:
    a later export, or the cleaned round, is judged with the tables each delivered),
    in the staging store under ``exports/`` (which ``sweep`` never touches). A file is named by
    its round and its SHA-256, its version, and checked against it when read again. Removing
    one fails closed: the organisations holding its tables are withheld their next version of
    the round, saying why."""

    FOLDER = "exports"

    def __repr__(self) -> str:
        return f"KeptExports(at {public_url(self.path)})"

    def keep(self, staged: Path, round_id: str) -> str:
        """Keep a staged round (unless kept already); its version."""
        version = _sha256(staged)
        name = self._name(round_id, version)
        try:
            self._info(name)
        except StagedFileMissing:
            if not (self.local and _linked(staged, self._folder() / name)):
                self.put(staged, name)
        return version

    def read(self, round_id: str, version: str) -> Path:
        """A local path to the kept export of ``round_id`` at ``version``, checked."""
        path = self.fetch(self._name(round_id, version))
        if _sha256(path) != version:
            raise ExportChanged(f"{self._where(self._name(round_id, version))}: its bytes no "
                                "longer hash to its version (changed or damaged since kept)")
        return path

    @staticmethod
    def _name(round_id: str, version: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", version):
            raise ValueError(f"kept export of {round_id}: {version!r} is not a version")
        return f"{check_round_id(round_id, 'kept exports')}.{version}.arrow"

    def _where(self, name: str) -> str:
        return f"kept export {name!r} in {public_url(self.path)}"

    def _missing(self, name: str) -> StagedFileMissing:
        return StagedFileMissing(f"{self._where(name)} is missing (removed from the store)")


class HeadRewritten(PermanentError, FileExistsError):
    """A head object for this sequence number exists with another hash: never overwritten."""


class PublishedHeads(KeptFolder):
    """The chain heads ledger audits published, under ``ledger-heads/`` in the staging store
    (outside the ledger's trust domain: its database users cannot write here, and ``sweep``
    never touches it). One object per head, named by its sequence number, written once: an
    existing one is never replaced. Give the store's own write-once rule (object lock) to
    this prefix in production, so that no one can."""

    FOLDER = "ledger-heads"

    def __repr__(self) -> str:
        return f"PublishedHeads(at {public_url(self.path)})"

    def publish(self, head) -> str:
        """Write ``head`` (a ``chain.Head``) once; its object name. The same head again (a
        retried audit, a day without writes) is left as it is."""
        name = f"{head.seq:012d}.json"
        existing = self._existing(name)
        if existing is not None:
            if existing.chain_sha256 != head.chain_sha256:
                raise HeadRewritten(f"{self._where(name)} holds another hash for chain seq "
                                    f"{head.seq}: published heads are never overwritten")
            return name
        self._target(name)
        temp = self.local_dir() / f".{name}.{uuid.uuid4().hex}"
        temp.write_text(head.document())
        try:
            if self.local:  # a hard link fails if the name exists: no overwrite, even racing
                try:
                    os.link(temp, self._folder() / name)
                except FileExistsError:
                    return self.publish(head)  # published meanwhile: the same head or refused
            else:
                self.put(temp, name)
        finally:
            temp.unlink(missing_ok=True)
        return name

    def newest(self):
        """The newest published head (``chain.Head``), or None before the first."""
        if self.local:
            found = [p.name for p in self._folder().iterdir()]
        else:  # another worker may have published since this process listed the store
            fs = _fresh(self.path.fs, self.path.path)
            found = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(self.path.path, detail=False)
                     ] if fs.exists(self.path.path) else []
        names = sorted(n for n in found if re.fullmatch(r"\d{12}\.json", n))
        return None if not names else Head.parse(self._read(names[-1]), self._where(names[-1]))

    def _existing(self, name: str):
        try:
            return Head.parse(self._read(name), self._where(name))
        except StagedFileMissing:
            return None

    def _read(self, name: str) -> bytes:
        return self.fetch(name).read_bytes()

    def _where(self, name: str) -> str:
        return f"published ledger head {name!r} in {public_url(self.path)}"

    def _missing(self, name: str) -> StagedFileMissing:
        return StagedFileMissing(f"{self._where(name)} is missing")


def _linked(source: Path, dest: Path) -> bool:
    """A second name for a file written once (a staged round), when both are on one file
    system: no copy of a million-site round on every urgent run."""
    temp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    try:
        os.link(source, temp)
        os.replace(temp, dest)
    except OSError:
        temp.unlink(missing_ok=True)
        return False
    return True


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _scratch_root() -> Path:
    return work_dir() / "scratch"


def _cache_root() -> Path:
    return work_dir() / "cache"


def prune_caches(base=None) -> list[str]:
    """Drop this worker's cached copies of runs whose prefix is gone from the store (removed by
    the run's last task, perhaps on another worker)."""
    base = staging_base() if base is None else base
    root = _cache_root()
    if _is_local(base) or not root.is_dir():
        return []
    fs = _fresh(base.fs, base.path)
    gone = [f.name for f in root.iterdir()
            if RUN_FOLDER.fullmatch(f.name) and not fs.exists((base / f.name).path)]
    for name in gone:
        shutil.rmtree(root / name, ignore_errors=True)
    return gone


def sweep(retention: timedelta, now: datetime, base=None) -> list[str]:
    """Remove run prefixes untouched for longer than ``retention`` (no file in them written
    since), in the store and in this worker's scratch and cache; returns the run hashes removed.

    Object stores are judged by each object's modification time (fsspec ``info``:
    ``LastModified`` on S3, ``mtime`` or ``created`` elsewhere); a store that reports none is
    refused, naming it: expire its objects with the store's own lifecycle rule instead.
    """
    base = staging_base() if base is None else base
    removed = []
    if _is_local(base):
        removed += [p.name for p in sweep_folders(Path(base.path), retention, now)]
    else:
        fs = _fresh(base.fs, base.path)
        for entry in fs.ls(base.path, detail=True) if fs.exists(base.path) else []:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if entry["type"] != "directory" or not RUN_FOLDER.fullmatch(name):
                continue
            files = fs.find(entry["name"], detail=True).values()
            if files and now - max(_modified(base, f) for f in files) > retention:
                fs.rm(entry["name"], recursive=True)
                removed.append(name)
    for root in (_scratch_root(), _cache_root()):
        removed += [p.name for p in sweep_folders(root, retention, now)]
    return sorted(set(removed))


def _fresh(fs, path: str):
    """The filesystem with its listings cache of ``path`` dropped: another worker may have
    changed the store since this process listed it."""
    fs.invalidate_cache(path)
    return fs


def _modified(base, info: dict) -> datetime:
    value = info.get("LastModified") or info.get("mtime") or info.get("created")
    if value is None:
        raise ConfigurationError(
            f"{public_url(base)}: the store reports no modification times, so staging cannot be "
            "swept by age: expire old run prefixes with the store's lifecycle rule")
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
