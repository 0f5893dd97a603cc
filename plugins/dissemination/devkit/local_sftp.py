"""The partners' SFTP server on loopback, for the demo and the tests: a real OpenSSH ``sshd``
when one is installed, else a pure-Python SFTP server (asyncssh), so ``make demo`` needs nothing
but Python. The tests always ask for OpenSSH (what partners run).

Either one runs with its own host key and port, as the current user (root or not), and never
touches the system's sshd. Both read the same files in ``home``: the host key, created once and
kept (a pinned key stays valid across runs, whichever server serves it), and the one client key
allowed to log in (key login only). Everything the server writes lands under ``home/root``.

    python -m dissemination.devkit.local_sftp --home .demo/sftp [--engine python]  # until Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from ..delivery.sftp_target import SftpTarget

#: ``auto``: OpenSSH when an sshd binary is found, else the pure-Python server.
ENGINES = ("auto", "openssh", "python")
#: Chooses the engine where the code does not (the tests' conftest sets ``openssh``).
ENGINE_VARIABLE = "DISSEMINATION_SFTP_ENGINE"
#: sshd lives in sbin, often off a non-root user's PATH: looked up there first.
SBIN = ("/usr/sbin", "/usr/local/sbin")


class SftpServerError(RuntimeError):
    pass


@dataclass(frozen=True)
class Quirks:
    """How partners' servers of other makes differ from OpenSSH's, as the pure-Python server
    can be told to behave. Each is seen in the field or allowed by the SFTP draft:

    - ``read_write_opens=False``: refuses to open a file to write and read at once (Azure Blob
      Storage's SFTP: "Operations that include both READ and WRITE flags" are unsupported);
    - ``write_limit``: refuses write requests larger than this many bytes (the draft promises
      only 32 KiB; OpenSSH takes 255 KiB);
    - ``answers_limits=False``: does not know OpenSSH's ``limits@openssh.com`` request, which
      states the limit (OpenSSH before 8.6 and most other makes do not);
    - ``shows_bytes_once_closed``: a file being written reads back empty until it is closed
      (an object store behind SFTP commits an upload only when it is closed)."""

    read_write_opens: bool = True
    write_limit: int | None = None
    answers_limits: bool = True
    shows_bytes_once_closed: bool = False


def find_sshd(search: str | None = None) -> str | None:
    """The sshd binary on ``search`` (directories, PATH syntax; default: sbin, then PATH)."""
    if search is None:
        search = os.pathsep.join([*SBIN, os.environ.get("PATH", "")])
    return shutil.which("sshd", path=search)


def _choose_engine(engine: str | None, sshd: str | None) -> str:
    chosen = engine or os.environ.get(ENGINE_VARIABLE) or "auto"
    if chosen not in ENGINES:
        raise SftpServerError(f"unknown SFTP server engine {chosen!r} (argument or "
                              f"{ENGINE_VARIABLE}): choose one of {', '.join(ENGINES)}")
    if chosen == "auto":
        return "openssh" if sshd else "python"
    return chosen


def _make_key(path: Path) -> None:
    """An ed25519 key pair in ssh-keygen's formats (OpenSSH private key 0600, ``.pub`` beside),
    made without ssh-keygen (a bare machine may lack it). An existing key is kept; a lost
    ``.pub`` is derived again from the private key."""
    public = path.with_name(path.name + ".pub")
    if path.exists():
        if public.exists():
            return
        key = asyncssh.read_private_key(path)
    else:
        key = asyncssh.generate_private_key("ssh-ed25519", comment=path.name)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(key.export_private_key())
    public.write_bytes(key.export_public_key())


def _authorized_keys(path: Path) -> set[bytes]:
    """The public keys an authorized_keys file allows; a line with options is ignored."""
    allowed = set()
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(asyncssh.KeyImportError):
                if line.strip() and not line.lstrip().startswith("#"):
                    allowed.add(asyncssh.import_public_key(line).public_data)
    return allowed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSftpServer:
    def __init__(self, home: Path | str, port: int = 0, *, engine: str | None = None,
                 sshd_search: str | None = None, refuse: tuple[str, ...] = (),
                 quirks: Quirks | None = None):
        """``engine``: ``openssh``, ``python`` or ``auto`` (default: $DISSEMINATION_SFTP_ENGINE,
        else auto); ``sshd_search`` where auto and openssh look for sshd (PATH syntax).
        Partners' servers of other makes lack what OpenSSH's offers: ``refuse``, SFTP requests
        OpenSSH's server refuses (``internal-sftp -P``, e.g. ``posix-rename``); ``quirks``,
        how the pure-Python server departs from OpenSSH's."""
        self.home = Path(home).resolve()
        self.root = self.home / "root"
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.host_key_path = self.home / "ssh_host_ed25519_key"
        self.client_key_path = self.home / "client_ed25519"
        self.authorized_keys_path = self.home / "authorized_keys"
        self.log_lines: list[str] = []
        self._sshd = find_sshd(sshd_search)
        self.engine = _choose_engine(engine, self._sshd)
        if refuse and self.engine != "openssh":
            raise SftpServerError(f"refusing requests ({', '.join(refuse)}) needs OpenSSH's sshd")
        self.refuse = tuple(refuse)
        if quirks is not None and self.engine != "python":
            raise SftpServerError(f"{quirks} needs the pure-Python server")
        self.quirks = quirks or Quirks()
        self._proc: subprocess.Popen | None = None
        self._python: _PythonSftp | None = None
        self._listening = threading.Event()

    @property
    def description(self) -> str:
        """Which server this is, for people: the demo prints it."""
        if self.engine == "openssh":
            return f"OpenSSH sshd ({self._sshd or 'not installed'})"
        return f"pure-Python SFTP (asyncssh {asyncssh.__version__})"

    @property
    def host_key(self) -> str:
        """The public host key as pinned by clients: ``ssh-ed25519 AAAA...``."""
        return " ".join(self.host_key_path.with_suffix(".pub").read_text().split()[:2])

    def target(self, host_key: str | None = None) -> SftpTarget:
        return SftpTarget(
            host="127.0.0.1",
            port=self.port,
            username=self.user,
            host_key=host_key or self.host_key,
            private_key_path=str(self.client_key_path),
        )

    def airflow_connection(self, host_key: str | None = None) -> dict:
        """The Airflow connection (JSON, for ``AIRFLOW_CONN_<ID>``) that reaches this server."""
        return {
            "conn_type": "sftp",
            "host": "127.0.0.1",
            "port": self.port,
            "login": self.user,
            "extra": {
                "key_file": str(self.client_key_path),
                "host_key": host_key or self.host_key,
            },
        }

    def make_keys(self) -> None:
        """The root folder, the host and client keys (kept once made), the client key
        authorized: what either engine serves."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)
        _make_key(self.host_key_path)
        _make_key(self.client_key_path)
        self.authorized_keys_path.write_text(self.client_key_path.with_suffix(".pub").read_text())
        self.authorized_keys_path.chmod(0o600)

    def _write_config(self) -> Path:
        self.make_keys()
        config = self.home / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.home / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized_keys_path}",
                    f"AllowUsers {self.user}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    "Subsystem sftp internal-sftp",
                    f"ForceCommand internal-sftp -d {self.root}"
                    + (f" -P {','.join(self.refuse)}" if self.refuse else ""),
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        return config

    def start(self, timeout: float = 20) -> LocalSftpServer:
        if self.engine == "python":
            self.make_keys()
            self._python = _PythonSftp(self)
            self._python.start(timeout)
            return self
        if self._sshd is None:
            raise SftpServerError("OpenSSH sshd not found; install it (Debian: apt-get install "
                                  "openssh-server) or use the pure-Python server (engine "
                                  f"'python', {ENGINE_VARIABLE}=python)")
        config = self._write_config()
        self._listening = threading.Event()  # a restart waits for the new process, not the old
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self._proc = subprocess.Popen(
            [self._sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._listening.wait(timeout) or self._proc.poll() is not None:
            self.stop()
            log = self.home / "sshd.log"
            log.write_text("\n".join(self.log_lines) + "\n")
            last = self.log_lines[-1] if self.log_lines else "no output"
            raise SftpServerError(f"sshd did not start on 127.0.0.1:{self.port}: {last} "
                                  f"(its log: {log})")
        return self

    def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self.log_lines.append(line.rstrip())
            if "Server listening on" in line:
                self._listening.set()
        self._listening.set()  # sshd exited: wake the waiter, which checks poll()

    def stop(self) -> None:
        if self._python is not None:
            self._python.stop()
            self._python = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> LocalSftpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _SftpOnlyLogin(asyncssh.SSHServer):
    """sshd's rules for the pure-Python server: one user, key login with the keys in
    authorized_keys (read at every login, so a revoked key stops working at once), nothing else."""

    def __init__(self, server: _PythonSftp):
        self._server = server
        self._connection: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._connection = conn
        self._server.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self._connection)

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        owner = self._server.owner
        return (username == owner.user
                and key.public_data in _authorized_keys(owner.authorized_keys_path))


class _QuirkySftp(asyncssh.SFTPServer):
    """asyncssh's SFTP server, departing from OpenSSH's as its ``Quirks`` say."""

    def __init__(self, channel, chroot: bytes, quirks: Quirks):
        super().__init__(channel, chroot=chroot)
        self.quirks = quirks

    def open(self, path: bytes, pflags: int, attrs):
        writing = pflags & asyncssh.FXF_WRITE
        if writing and pflags & asyncssh.FXF_READ and not self.quirks.read_write_opens:
            raise asyncssh.SFTPOpUnsupported("opening a file to both read and write")
        opened = super().open(path, pflags, attrs)
        return _Held(opened) if writing and self.quirks.shows_bytes_once_closed else opened

    def write(self, file_obj, offset: int, data: bytes):
        limit = self.quirks.write_limit
        if limit is not None and len(data) > limit:
            raise asyncssh.SFTPFailure(f"write request of {len(data)} bytes is over this "
                                       f"server's limit of {limit}")
        if isinstance(file_obj, _Held):
            return file_obj.write(offset, data)
        return super().write(file_obj, offset, data)

    def read(self, file_obj, offset: int, size: int):
        return super().read(getattr(file_obj, "file", file_obj), offset, size)

    def fstat(self, file_obj):
        return super().fstat(getattr(file_obj, "file", file_obj))

    def close(self, file_obj):
        if isinstance(file_obj, _Held):
            file_obj.commit()
        return super().close(getattr(file_obj, "file", file_obj))


class _Held:
    """A file being written whose bytes the server holds until it is closed."""

    def __init__(self, file):
        self.file, self.data = file, bytearray()

    def write(self, offset: int, data: bytes) -> int:
        if offset > len(self.data):
            self.data.extend(bytes(offset - len(self.data)))
        self.data[offset:offset + len(data)] = data
        return len(data)

    def commit(self) -> None:
        self.file.seek(0)
        self.file.write(self.data)


async def _limits(handler, packet):
    """``limits@openssh.com`` as a quirky server answers it: the write limit its quirks set,
    or unknown. asyncssh answers with its own constants for every server, through a table of
    its protocol handler that no public API reaches: this replaces that one entry, and leaves
    servers without quirks to asyncssh's own answer."""
    server = handler._server
    if not isinstance(server, _QuirkySftp):
        return await _ASYNCSSH_LIMITS(handler, packet)
    if not server.quirks.answers_limits:
        raise asyncssh.SFTPOpUnsupported("limits@openssh.com is not supported")
    answer = await _ASYNCSSH_LIMITS(handler, packet)
    if (limit := server.quirks.write_limit) is None:
        return answer
    return asyncssh.SFTPLimits(limit + 1024, min(limit, answer.max_read_len), limit,
                               answer.max_open_handles)


_HANDLERS = asyncssh.sftp.SFTPServerHandler._packet_handlers
_ASYNCSSH_LIMITS = _HANDLERS[b"limits@openssh.com"]
_HANDLERS[b"limits@openssh.com"] = _limits


class _PythonSftp:
    """asyncssh's SFTP server, chrooted to the root folder, in a thread with its own event loop:
    start() returns once it listens, stop() closes the listener and every session."""

    def __init__(self, owner: LocalSftpServer):
        self.owner = owner
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._failure: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sftp-{owner.port}", daemon=True)

    def start(self, timeout: float) -> None:
        self._thread.start()
        if not self._ready.wait(timeout) or self._failure is not None:
            self.stop()
            raise SftpServerError(f"the pure-Python SFTP server did not start on 127.0.0.1:"
                                  f"{self.owner.port}: {self._failure or 'timed out'}")

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        root = os.fsencode(self.owner.root)
        try:
            acceptor = await asyncssh.listen(
                "127.0.0.1", self.owner.port,
                server_host_keys=[str(self.owner.host_key_path)],
                server_factory=lambda: _SftpOnlyLogin(self),
                sftp_factory=lambda channel: _QuirkySftp(channel, root, self.owner.quirks),
                allow_scp=False, agent_forwarding=False)
        except (OSError, asyncssh.Error, ValueError) as exc:
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stopping.wait()
        acceptor.close()
        for connection in list(self.connections):
            connection.close()
        await acceptor.wait_closed()
        await asyncio.gather(*(c.wait_closed() for c in list(self.connections)))

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help=f"default: ${ENGINE_VARIABLE}, else auto (OpenSSH if installed)")
    args = parser.parse_args()
    # Blocked before the server's threads start (they inherit the mask): sigwait gets them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        with LocalSftpServer(args.home, args.port, engine=args.engine) as server:
            print(f"serving SFTP with {server.description} on 127.0.0.1:{server.port}",
                  file=sys.stderr, flush=True)
            print(json.dumps(server.airflow_connection()), flush=True)
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except SftpServerError as exc:
        sys.exit(f"local_sftp: {exc}")


if __name__ == "__main__":
    main()
