"""The compiled policy: every file loaded and cross-checked once, kept as JSON by content hash.

Loading 1,000 agreements from YAML costs about a second; every task of a run needs the policy.
``compile_policy`` loads the files once and writes the validated policy as one JSON document
named by the files' SHA-256; ``read_snapshot`` rebuilds it from that document in tens of
milliseconds (pydantic's JSON validation runs again: a snapshot is never trusted blindly) and
checks the hash it holds against the one asked for. A changed file is a new hash, hence a new
snapshot: there is nothing to invalidate.

The name also carries the SHA-256 of the code that compiles the policy: a deploy that changes how
rules merge or what a load-time check refuses must recompile, or a worker whose cache holds the
files' hash would keep serving what the old code made of them.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from ..errors import PermanentError
from .loading import Policy, load_policy, policy_sha256

SUFFIX = ".policy.json"
KEEP = 8  # snapshots kept in a cache folder: older policy versions are dropped

_DOMAIN = Path(__file__).resolve().parent.parent
# What compiles a policy: this package and every domain module it imports to load and check one
# (tests/unit/test_policy_snapshot_and_batches.py checks the list against what loading a policy
# imports).
CODE = (_DOMAIN / "__init__.py", _DOMAIN / "_exports.py", _DOMAIN / "policy",
        _DOMAIN / "classification.py", _DOMAIN / "normalise.py", _DOMAIN / "errors.py")


class SnapshotInvalid(PermanentError, ValueError):
    pass


def code_sha256(sources: Iterable[Path]) -> str:
    """One hash of the Python files in ``sources`` (folders or files), named relative to each.

    Relative names keep the hash the same wherever the code is installed, so workers sharing a
    cache folder share its snapshots.
    """
    digest = hashlib.sha256()
    for source in sources:
        files = sorted(source.rglob("*.py")) if source.is_dir() else [source]
        for file in files:
            digest.update(file.relative_to(source.parent).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


@functools.cache
def policy_code_sha256() -> str:
    """The hash of ``CODE``, read once per process on first use, not at import (DAG parsing).

    A deploy replaces the files and restarts the workers, so a process's first read is the code
    it runs.
    """
    return code_sha256(CODE)


def snapshot_name(sha256: str) -> str:
    """The file holding the policy whose files hash to ``sha256``, as this code compiles it."""
    return f"{sha256}.{policy_code_sha256()}{SUFFIX}"


def snapshot_bytes(policy: Policy) -> bytes:
    return policy.model_dump_json().encode()


def read_snapshot(data: bytes, sha256: str, where: str) -> Policy:
    """The policy a snapshot holds, if it is the one named ``sha256``."""
    try:
        policy = Policy.model_validate_json(data)
    except ValidationError as exc:
        raise SnapshotInvalid(f"{where}: not a policy snapshot of this code's version "
                              f"({exc.error_count()} problem(s)): compile it again") from None
    if policy.content_sha256 != sha256:
        raise SnapshotInvalid(f"{where}: holds policy {policy.content_sha256[:12]}, expected "
                              f"{sha256[:12]}")
    return policy


def compiled_policy(include_dir: Path | str, cache_dir: Path | str) -> Policy:
    """The policy the files under ``include_dir`` hold now, from ``cache_dir`` when this code
    compiled them before (hashing the files is the only per-call cost), else loaded and cached."""
    cache = Path(cache_dir)
    sha256 = policy_sha256(include_dir)
    path = cache / snapshot_name(sha256)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        pass
    else:
        return read_snapshot(data, sha256, str(path))
    policy = load_policy(include_dir)  # hashes the files again: a file edited meanwhile wins
    _write(cache / snapshot_name(policy.content_sha256), snapshot_bytes(policy))
    _prune(cache)
    return policy


def _write(path: Path, data: bytes) -> None:
    """Atomically, so a concurrent reader sees the whole snapshot or none."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _prune(cache: Path) -> None:
    snapshots = sorted(cache.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in snapshots[KEEP:]:
        old.unlink(missing_ok=True)
