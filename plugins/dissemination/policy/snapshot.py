"""The compiled policy: every file loaded and cross-checked once, kept as JSON by content hash.

Loading 1,000 agreements from YAML costs about a second; every task of a run needs the policy.
``compile_policy`` loads the files once and writes the validated policy as one JSON document
named by the files' SHA-256; ``read_snapshot`` rebuilds it from that document in tens of
milliseconds (pydantic's JSON validation runs again: a snapshot is never trusted blindly) and
checks the hash it holds against the one asked for. A changed file is a new hash, hence a new
snapshot: there is nothing to invalidate.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from ..errors import PermanentError
from .loading import Policy, load_policy, policy_sha256

SUFFIX = ".policy.json"
KEEP = 8  # snapshots kept in a cache folder: older policy versions are dropped


class SnapshotInvalid(PermanentError, ValueError):
    pass


def snapshot_name(sha256: str) -> str:
    return f"{sha256}{SUFFIX}"


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
    """The policy the files under ``include_dir`` hold now, from ``cache_dir`` when it was
    compiled before (hashing the files is the only per-call cost), else loaded and cached."""
    cache = Path(cache_dir)
    path = cache / snapshot_name(policy_sha256(include_dir))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        pass
    else:
        return read_snapshot(data, path.name.removesuffix(SUFFIX), str(path))
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
