"""Deliver a package over SFTP (paramiko), to a server whose host key is pinned.

A server that shows another key gets nothing: no authentication, no upload. Files are written
under a temporary name and renamed (``posix-rename``, else SFTP's own rename) once complete, so
a partner never picks up a half-written package and an interrupted upload leaves no file under
the final name. The
temporary name is unique per attempt, and the file is read back and hashed before it takes the
final name: no file under a final name holds other bytes than the package. Every network failure
is a retryable ``DeliveryError`` naming the destination, and so is a server that stops answering
(see ``STALL_SECONDS``).
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from ..errors import PermanentError
from ..package.digests import file_sha256


class DeliveryError(RuntimeError):
    """A delivery that did not happen this time: retryable unless also a PermanentError."""


class UploadFailed(DeliveryError):
    """The connection failed during an upload. ``final_may_exist``: the rename had happened, so
    the file may be complete on the server; the claim must stay for the retry to check it.
    ``partial_left``: the temporary file the attempt could not remove."""

    def __init__(self, message: str, final_may_exist: bool, partial_left: str | None = None):
        super().__init__(message)
        self.final_may_exist = final_may_exist
        self.partial_left = partial_left


class HostKeyMismatch(DeliveryError, PermanentError):
    pass


class DestinationMisconfigured(DeliveryError, PermanentError):
    pass


class LoginRefused(DeliveryError, PermanentError):
    pass


@dataclass(frozen=True)
class SftpTarget:
    host: str
    username: str
    host_key: str  # "ssh-ed25519 AAAA..." as in known_hosts, without the host name
    port: int = 22
    private_key_path: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str = ""


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_host_key(text: str) -> paramiko.PKey:
    parts = text.split()
    if len(parts) < 2:
        raise DestinationMisconfigured(
            f"pinned host key {text[:40]!r} is not of the form '<type> <base64>' (known_hosts)"
        )
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
    except Exception as exc:  # paramiko raises several types for a malformed key
        raise DestinationMisconfigured(
            f"pinned host key of type {parts[0]!r} cannot be parsed: {exc}") from exc


#: Bytes per SFTP write/read request to OpenSSH's server, which takes up to 256 KiB per packet
#: including headers (262144 makes it drop the connection), in every version. Servers of other
#: makes get what they state (``limits@openssh.com``), at most this; else ``DRAFT_REQUEST_SIZE``.
REQUEST_SIZE = 255 * 1024
#: What the SFTP draft promises every server takes (and paramiko's default).
DRAFT_REQUEST_SIZE = 32 * 1024
#: AES-GCM first: authenticated encryption in one pass (AES-NI), where paramiko's default
#: (aes128-ctr + HMAC) hashes every byte again. The others stay as fallbacks for older servers.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr",
           "aes192-ctr")
WINDOW = 64 * 1024 * 1024  # bytes in flight before the server must acknowledge


#: Seconds a session in use may hear nothing from its server before it is closed. Once connected,
#: paramiko waits for an answer without end: a server stuck on a dead disk or behind a link that
#: drops everything would hold the delivery, its claim and the task for ever. About what
#: OpenSSH's ``ServerAliveInterval 15`` with ``ServerAliveCountMax 3`` allows. A transfer hears
#: the server all along (window adjustments, write statuses), so only silence counts.
STALL_SECONDS = 60.0


class _Heard:
    """The transport's socket, noting when the server last sent anything."""

    __slots__ = ("_sock", "at")

    def __init__(self, sock):
        self._sock = sock
        self.at = time.monotonic()

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self.at = time.monotonic()
        return data

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _fast_transport(sock, **kwargs) -> paramiko.Transport:
    transport = paramiko.Transport(_Heard(sock), default_window_size=WINDOW,
                                   default_max_packet_size=REQUEST_SIZE + 1024, **kwargs)
    options = transport.get_security_options()
    options.ciphers = tuple(c for c in CIPHERS if c in options.ciphers)
    return transport


def request_size(client: paramiko.SSHClient, sftp: paramiko.SFTPClient) -> int:
    """The largest read or write request the server takes: OpenSSH's is known (its banner says
    it is OpenSSH, at no cost); another make is asked (one round trip), and one that does not
    say gets what the SFTP draft promises. A server refusing a larger write would fail every
    delivery to it."""
    if client.get_transport().remote_version.startswith("SSH-2.0-OpenSSH_"):
        return REQUEST_SIZE
    try:  # paramiko has no public call for an extended request with a reply
        kind, reply = sftp._request(paramiko.sftp.CMD_EXTENDED, "limits@openssh.com")
    except OSError:
        if not _answered(sftp):
            raise
        return DRAFT_REQUEST_SIZE  # it does not know the request
    if kind != paramiko.sftp.CMD_EXTENDED_REPLY:
        return DRAFT_REQUEST_SIZE
    packet, read, write = reply.get_int64(), reply.get_int64(), reply.get_int64()
    stated = [n for n in (packet - 1024 if packet else 0, read, write) if n > 0]  # 0: unstated
    return min([REQUEST_SIZE, *stated])


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


def _connect(target: SftpTarget) -> paramiko.SSHClient:
    pinned = parse_host_key(target.host_key)
    client = paramiko.SSHClient()
    known_as = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    client.get_host_keys().add(known_as, pinned.get_name(), pinned)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            target.host,
            port=target.port,
            username=target.username,
            key_filename=target.private_key_path,
            password=target.password,
            look_for_keys=False,
            allow_agent=False,
            compress=False,  # AES zips do not compress
            timeout=30,
            banner_timeout=30,
            auth_timeout=30,
            transport_factory=_fast_transport,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyMismatch(
            f"SFTP server {target.host}:{target.port} presented host key "
            f"{fingerprint(exc.key)}, but {fingerprint(pinned)} is pinned for it; nothing was "
            "sent. If the partner really changed its server key, pin the new one in the "
            "connection's host_key extra after confirming it by another channel."
        ) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise LoginRefused(f"SFTP login refused for {target.address}: {exc}") from None
    except (OSError, EOFError, paramiko.SSHException) as exc:
        client.close()
        raise DeliveryError(f"cannot reach SFTP server {target.address}: {exc}") from exc
    return client


def _network_error(exc: BaseException) -> bool:
    """Errors a cut connection or a server going away raises in paramiko: worth a retry."""
    return isinstance(exc, (OSError, EOFError, paramiko.SSHException))


def _attempt_token() -> str:
    return secrets.token_hex(6)


@dataclass(eq=False)
class Session:
    """An open SFTP session of a pool, used by one delivery at a time."""

    client: paramiko.SSHClient
    sftp: paramiko.SFTPClient | None = None
    stalled_after: float | None = None  # closed after this many silent seconds
    #: the server refuses files open to write and read at once, or shows their bytes only once
    #: closed: packages are read back through a second open
    write_only: bool = False
    request_size: int = DRAFT_REQUEST_SIZE  # bytes per read or write request (``request_size``)

    def heard_at(self) -> float:
        transport = self.client.get_transport()
        return transport.sock.at if transport is not None else 0.0

    def why(self, exc: BaseException) -> str:
        """What went wrong, for a message: the silence, rather than the error it ended in."""
        if self.stalled_after is not None:
            return (f"the server sent nothing for {self.stalled_after:g} s, so the session was "
                    "closed")
        return f"{type(exc).__name__}: {exc or 'connection closed'}"


class Sessions:
    """SFTP sessions kept open for the rest of a batch, per server, each used by one delivery at
    a time: an organisation's deliveries mostly go to one server, and a new session costs 7 of
    a delivery's 10 round trips (TCP, SSH key exchange, login, SFTP). A session that failed is
    closed, never reused; a kept one is asked for its folder (one round trip) before reuse, and
    replaced if the server dropped it meanwhile. That question must stay harmless: a server
    that fell silent may wake later and carry out what it was last sent (the upload's first
    request would create its temporary file after the delivery went through another session,
    leaving an empty file). Closing the pool closes them all, and any still in use once its
    delivery ends (tasks hold one per batch).

    A session in use whose server says nothing for ``stall_seconds`` is closed by the pool's
    watch thread, which ends its delivery's wait with an error (``Session.why`` says which)."""

    def __init__(self, stall_seconds: float = STALL_SECONDS):
        if not stall_seconds > 0:
            raise ValueError(f"stall_seconds={stall_seconds!r}: give a number of seconds above 0")
        self.stall_seconds = stall_seconds
        self._idle: dict[SftpTarget, list[Session]] = {}
        self._busy: dict[Session, float] = {}  # in use since (monotonic)
        self._lock = threading.Condition()
        self._watch: threading.Thread | None = None
        self._closed = False
        self.opened = 0  # sessions opened so far

    def __enter__(self) -> Sessions:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def session(self, target: SftpTarget) -> Iterator[Session]:
        session = self._take(target) or self._open(target)
        try:
            yield session
        except BaseException:
            self._end(session)
            raise
        with self._lock:
            self._unwatch_locked(session)
            if not self._closed and session.stalled_after is None:
                self._idle.setdefault(target, []).append(session)
                return
        session.client.close()

    def close(self) -> None:
        with self._lock:
            idle = [session for sessions in self._idle.values() for session in sessions]
            self._idle.clear()
            self._closed = True
            self._lock.notify()
        for session in idle:
            session.client.close()

    def _take(self, target: SftpTarget) -> Session | None:
        while True:
            with self._lock:
                idle = self._idle.get(target)
                if not idle:
                    return None
                session = idle.pop()
                self._watch_locked(session)
            try:
                session.sftp.normalize(".")
                return session
            except (OSError, EOFError, paramiko.SSHException):
                self._end(session)  # the server dropped it while it waited, or fell silent

    def _open(self, target: SftpTarget) -> Session:
        session = Session(_connect(target))  # which times out by itself
        with self._lock:
            self._watch_locked(session)
        try:
            session.sftp = session.client.open_sftp()
            session.request_size = request_size(session.client, session.sftp)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._end(session)
            raise DeliveryError(f"cannot open an SFTP session on {target.address} "
                                f"({session.why(exc)})") from exc
        with self._lock:
            self.opened += 1
        return session

    def _end(self, session: Session) -> None:
        with self._lock:
            self._unwatch_locked(session)
        session.client.close()

    def _unwatch_locked(self, session: Session) -> None:
        self._busy.pop(session, None)
        self._lock.notify()  # the watch thread may end, or its next due time moved

    def _watch_locked(self, session: Session) -> None:
        self._busy[session] = time.monotonic()
        if self._watch is None:
            self._watch = threading.Thread(target=self._close_silent, name="sftp-silence",
                                           daemon=True)
            self._watch.start()
        self._lock.notify()

    def _close_silent(self) -> None:
        """The watch thread: closes each session in use whose server has said nothing for
        ``stall_seconds``, until the pool is closed and no session is in use."""
        with self._lock:
            while not (self._closed and not self._busy):
                now, due, silent = time.monotonic(), None, []
                for session, since in self._busy.items():
                    heard = max(since, session.heard_at())
                    if now - heard >= self.stall_seconds:
                        silent.append(session)
                    elif due is None or heard + self.stall_seconds < due:
                        due = heard + self.stall_seconds
                if not silent:
                    self._lock.wait(None if due is None else due - now)
                    continue
                for session in silent:
                    del self._busy[session]
                    session.stalled_after = self.stall_seconds
                self._lock.release()  # closing waits on the transport's thread
                try:
                    for session in silent:
                        session.client.close()
                finally:
                    self._lock.acquire()


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


def _answered(sftp: paramiko.SFTPClient) -> bool:
    """Whether the session still stands, so the error just raised is the server's answer
    (an SFTP status), not a lost connection."""
    channel = sftp.get_channel()
    return not channel.closed and channel.get_transport().is_active()


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
