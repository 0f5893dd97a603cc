"""SFTP sessions to pinned servers: the fast transport, the request size, the pool.

A session is opened only to a server showing its pinned host key, tuned for AES zips (AES-GCM,
a large window, the largest request the server takes), and closed when its server falls silent
for ``STALL_SECONDS``. ``Sessions`` keeps them open per server for the rest of a batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import paramiko

from .sftp_target import (
    DeliveryError,
    HostKeyMismatch,
    LoginRefused,
    SftpTarget,
    fingerprint,
    parse_host_key,
)

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


def _answered(sftp: paramiko.SFTPClient) -> bool:
    """Whether the session still stands, so the error just raised is the server's answer
    (an SFTP status), not a lost connection."""
    channel = sftp.get_channel()
    return not channel.closed and channel.get_transport().is_active()


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
