"""A real OpenSSH ``sshd`` on loopback, serving SFTP only, for the demo and the tests.

It runs with its own config, host key and port, as the current user (root or not), and never
touches the system's sshd. The host key is created once per ``home`` and kept, so a pinned key
stays valid across runs. Logins use a client key created beside it; everything the server writes
lands under ``home/root``.

    python -m dissemination.devkit.local_sftp --home .demo/sftp   # serve until Ctrl-C
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

from ..sftp import SftpTarget

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


class SftpServerError(RuntimeError):
    pass


def _sshd_binary() -> str:
    for path in SSHD_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("sshd")
    if found:
        return found
    raise SftpServerError(
        "OpenSSH sshd not found; install it (Debian: apt-get install openssh-server)"
    )


def _keygen(path: Path) -> None:
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
            check=True,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSftpServer:
    def __init__(self, home: Path | str, port: int = 0):
        self.home = Path(home).resolve()
        self.root = self.home / "root"
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.host_key_path = self.home / "ssh_host_ed25519_key"
        self.client_key_path = self.home / "client_ed25519"
        self.log_lines: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._listening = threading.Event()

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
        """The Airflow connection (JSON form, for ``AIRFLOW_CONN_<ID>``) that reaches this server."""
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

    def _write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)
        _keygen(self.host_key_path)
        _keygen(self.client_key_path)
        authorized = self.home / "authorized_keys"
        authorized.write_text(self.client_key_path.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        config = self.home / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.home / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    f"AllowUsers {self.user}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    "Subsystem sftp internal-sftp",
                    f"ForceCommand internal-sftp -d {self.root}",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        return config

    def start(self, timeout: float = 20) -> LocalSftpServer:
        sshd = _sshd_binary()
        config = self._write_config()
        self._listening = threading.Event()  # a restart waits for the new process, not the old
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self._proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._listening.wait(timeout) or self._proc.poll() is not None:
            self.stop()
            raise SftpServerError(
                f"sshd did not start on port {self.port}:\n" + "\n".join(self.log_lines[-20:])
            )
        return self

    def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self.log_lines.append(line.rstrip())
            if "Server listening on" in line:
                self._listening.set()
        self._listening.set()  # sshd exited: wake the waiter, which checks poll()

    def stop(self) -> None:
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


def main() -> None:
    import argparse
    import json
    import signal

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with LocalSftpServer(args.home, args.port) as server:
        print(json.dumps(server.airflow_connection()), flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
