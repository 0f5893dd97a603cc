"""Deliver a package over SFTP (paramiko), to a server whose host key is pinned.

A server that shows another key gets nothing: no authentication, no upload. Files are written
under a temporary name and renamed (``posix-rename``, else SFTP's own rename) once complete, so
a partner never picks up a half-written package and an interrupted upload leaves no file under
the final name. The temporary name is unique per attempt, and the file is read back and hashed
before it takes the final name: no file under a final name holds other bytes than the package. Every
network failure is a retryable ``DeliveryError`` naming the destination, and so is a server that
stops answering (see ``sftp_sessions.STALL_SECONDS``).
"""

from __future__ import annotations

import hashlib
import posixpath
import secrets
from collections.abc import Sequence
from pathlib import Path

import paramiko

from ..package.digests import file_sha256
from .sftp_sessions import Session, Sessions, _answered
from .sftp_target import (
    DeliveryError,
    DestinationMisconfigured,
    RemoteFile,
    SftpTarget,
    UploadFailed,
)


def _opened(sftp: paramiko.SFTPClient, path: str, mode: str, size: int) -> paramiko.SFTPFile:
    """A remote file whose reads and writes go in requests of ``size`` bytes."""
    remote = sftp.open(path, mode, size)
    remote.MAX_REQUEST_SIZE = size
    return remote


def _send(remote: paramiko.SFTPFile, local_path: Path) -> None:
    """Write the file in large pipelined requests (bench/sftp.py measures this against
    OpenSSH's ``sftp``)."""
    remote.set_pipelined(True)
    with open(local_path, "rb") as local:
        for chunk in iter(lambda: local.read(4 * remote.MAX_REQUEST_SIZE), b""):
            remote.write(chunk)


def _put(remote: paramiko.SFTPFile, local_path: Path) -> tuple[int, str]:
    """Write the file into ``remote`` (opened "w+b"), then read it back through the same handle:
    the size and SHA-256 of what the server stored.

    One open and one close: the reads queue behind the writes (the server answers in order), so
    verifying costs the bytes, not round trips. paramiko drops the status of pipelined writes
    still in flight at close, so the read-back is also what notices a short write (a full disk).
    The file is new and no one else writes it, so it holds nothing past the bytes sent."""
    size = local_path.stat().st_size
    digest, stored = hashlib.sha256(), 0
    try:
        _send(remote, local_path)
        remote.seek(0)  # sends what the write buffer holds
        remote.prefetch(size)
        while stored < size and (chunk := remote.read(min(1 << 20, size - stored))):
            digest.update(chunk)
            stored += len(chunk)
    finally:
        _close(remote)
    return stored, digest.hexdigest()


def _open_partial(session: Session, partial: str, missing: Exception) -> paramiko.SFTPFile:
    """The temporary file, open to write it and read it back through one handle; to write
    only, on a server that refuses both at once (Azure Blob Storage's SFTP does; the session
    remembers it)."""
    for mode in ("wb",) if session.write_only else ("w+b", "wb"):
        try:
            return _opened(session.sftp, partial, mode, session.request_size)
        except FileNotFoundError:
            raise missing from None
        except OSError:
            if mode == "wb" or not _answered(session.sftp):
                raise
            session.write_only = True


def _put_write_only(session: Session, remote: paramiko.SFTPFile, partial: str,
                    local_path: Path) -> tuple[int, str]:
    """``_put`` for a server that refuses files open to write and read at once: written and
    closed, then read back through a second open (two more round trips)."""
    try:
        _send(remote, local_path)
    finally:
        _close(remote)
    return _read_back(session, partial)


def _read_back(session: Session, path: str) -> tuple[int, str]:
    stored = _inspect(session, path)
    return stored.size, stored.sha256


def _close(remote: paramiko.SFTPFile) -> None:
    """Close once every answer is in. On a short file, each read queued past its end answers
    end-of-file, and paramiko raises each at close: the short read already says so. A close
    that fails (the connection is gone) marks the file closed all the same: paramiko would try
    again when the object is collected, printing a stray traceback into a later task log."""
    while True:
        try:
            return remote.close()
        except EOFError:
            continue
        except BaseException:
            remote._closed = True  # paramiko's own flag (BufferedFile): nothing is left to send
            raise


def _network_error(exc: BaseException) -> bool:
    """Errors a cut connection or a server going away raises in paramiko: worth a retry."""
    return isinstance(exc, (OSError, EOFError, paramiko.SSHException))


def _attempt_token() -> str:
    return secrets.token_hex(6)


def upload(target: SftpTarget, local_path: Path, remote_dir: str,
           expected_sha256: str | None = None, stale: Sequence[str] | None = None,
           sessions: Sessions | None = None, earlier_name: str = "") -> RemoteFile:
    """Upload ``local_path`` into ``remote_dir`` under a temporary name unique to this attempt,
    read it back, then rename it: the result names a complete, verified file.

    A failed attempt removes its temporary file, or names it in ``UploadFailed.partial_left``
    when its connection is gone; ``UploadFailed.final_may_exist`` says whether the rename may
    have happened. ``stale``: earlier attempts' temporary files to remove first (what the ledger
    kept); None after an attempt that died without a word: the folder is looked through for
    this file's and ``earlier_name``'s. ``sessions``: the batch's (default: one of its own)."""
    if sessions is None:
        with Sessions() as own:
            return upload(target, local_path, remote_dir, expected_sha256, stale, own,
                          earlier_name)
    local_path = Path(local_path)
    size, sha256 = local_path.stat().st_size, expected_sha256 or file_sha256(local_path)
    with sessions.session(target) as session:
        return _upload(session, target, local_path, remote_dir, size, sha256, stale,
                       earlier_name)


def _upload(session: Session, target: SftpTarget, local_path: Path, remote_dir: str,
            size: int, sha256: str, stale: Sequence[str] | None, earlier: str) -> RemoteFile:
    sftp = session.sftp
    final = posixpath.join(remote_dir, local_path.name)
    partial = posixpath.join(remote_dir, f".{local_path.name}.{_attempt_token()}.partial")
    missing = DestinationMisconfigured(
        f"remote directory {remote_dir!r} does not exist on {target.address}")
    renamed, left = False, None
    try:
        if stale is None:
            try:
                listing = sftp.listdir(remote_dir)
            except FileNotFoundError:
                raise missing from None
            stale = _partials_of(remote_dir, {local_path.name, earlier} - {""}, listing)
        for path in stale:
            _remove_quietly(sftp, path)
        remote = _open_partial(session, partial, missing)
        try:
            if session.write_only:
                stored = _put_write_only(session, remote, partial, local_path)
            elif (stored := _put(remote, local_path))[0] < size:
                # Short through the handle that wrote it: a full disk, or a server that shows
                # a file's bytes only once it is closed (an object store behind SFTP commits
                # an upload then), which the session then treats as write-only.
                stored = _read_back(session, partial)
                session.write_only = stored == (size, sha256)
            if stored != (size, sha256):
                raise UploadFailed(
                    f"{partial} on {target.address} reads back as {stored[0]} bytes, SHA-256 "
                    f"{stored[1][:12]}…; {size} bytes, {sha256[:12]}… were sent"
                    f"{_DISK_HINT if stored[0] < size else ''}; retrying is safe", False)
            renamed = True  # a reply lost from here on may hide a rename that happened: the
            # claim stays, and the retry looks on the server before uploading again
            _rename(sftp, target, partial, final)
        except BaseException:
            if not _remove_quietly(sftp, partial):
                left = partial
            raise
        return RemoteFile(final, size, sha256)
    except UploadFailed:
        raise
    except Exception as exc:
        if not _network_error(exc):
            raise
        raise UploadFailed(
            f"upload of {local_path.name} to {target.address}:{remote_dir} failed "
            f"({session.why(exc)}){_disk_hint(exc)}; retrying is safe", renamed,
            None if renamed else left) from exc


def inspect(target: SftpTarget, remote_path: str,
            sessions: Sessions | None = None) -> RemoteFile | None:
    """Size and SHA-256 of a file on the server, or None if it is not there: what a retry
    after a crash compares with the claim before uploading again."""
    if sessions is None:
        with Sessions() as own:
            return inspect(target, remote_path, own)
    with sessions.session(target) as session:
        try:
            return _inspect(session, remote_path)
        except FileNotFoundError:
            return None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise DeliveryError(f"cannot read {remote_path} on {target.address} "
                                f"({session.why(exc)})") from exc


def _rename(sftp: paramiko.SFTPClient, target: SftpTarget, partial: str, final: str) -> None:
    """``posix-rename`` (OpenSSH's extension), else SFTP's own rename: servers of other makes
    lack the extension, and OpenSSH's can be told to refuse it. Both are atomic; SFTP's own
    never replaces a file, and nothing should be under the final name (the claim says so). A
    server that answers by refusing both is told to allow renames: that is permanent. Without
    an answer (the connection lost), the rename may have happened: the error says so."""
    try:
        return sftp.posix_rename(partial, final)
    except OSError as exc:
        if not _answered(sftp):
            raise
        refused = exc
    try:
        sftp.rename(partial, final)
    except OSError as exc:
        if not _answered(sftp):
            raise
        raise DestinationMisconfigured(
            f"{target.address} refuses to rename {partial} to {final} (posix-rename: "
            f"{refused}; rename: {exc}); nothing is under the final name. Packages are "
            "uploaded under a temporary name and renamed once read back: the partner must "
            f"let this account rename files in {posixpath.dirname(final) or '.'}") from None


def _inspect(session: Session, path: str) -> RemoteFile:
    """Read the file back: OpenSSH offers no check-file extension, so the bytes are hashed."""
    digest = hashlib.sha256()
    with _opened(session.sftp, path, "rb", session.request_size) as remote:
        size = remote.stat().st_size
        remote.prefetch(size)
        for chunk in iter(lambda: remote.read(1 << 20), b""):
            digest.update(chunk)
    return RemoteFile(path, size, digest.hexdigest())


def _partials_of(remote_dir: str, names: set[str], listing: list[str]) -> list[str]:
    """Temporary files of this package (``names``: its own, an earlier attempt's) in a folder's
    listing, left by an attempt that died. Only its own: the claim keeps other attempts out."""
    return [posixpath.join(remote_dir, entry) for entry in listing if entry.endswith(".partial")
            and any(entry.startswith(f".{name}.") for name in names)]


def _remove_quietly(sftp, path: str) -> bool:
    """Remove ``path``; False when the connection is gone (the file may still be there)."""
    try:
        sftp.remove(path)
    except FileNotFoundError:
        pass  # removed already
    except (OSError, EOFError, paramiko.SSHException):
        return False
    return True


_DISK_HINT = " (the server stored less than was sent: usually a full disk or quota)"


def _disk_hint(exc: BaseException) -> str:
    # sftp-server reports a full disk as a bare "Failure" (SSH_FX_FAILURE); paramiko raises it
    # when it drains pipelined write statuses mid-file. At the end, the read-back notices.
    return _DISK_HINT if isinstance(exc, OSError) and str(exc) == "Failure" else ""
