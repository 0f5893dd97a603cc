"""Deliver a package over SFTP (paramiko), to a server whose host key is pinned.

A server that shows another key gets nothing: no authentication, no upload. Files are written
under a temporary name and renamed (``posix-rename``) once complete, so a partner never picks up a
half-written package and an interrupted upload leaves no file under the final name.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from .errors import PermanentError


class DeliveryError(RuntimeError):
    pass


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
        raise DestinationMisconfigured(f"pinned host key of type {parts[0]!r} cannot be parsed: {exc}") from exc


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
    except (OSError, paramiko.SSHException) as exc:
        client.close()
        raise DeliveryError(f"cannot reach SFTP server {target.address}: {exc}") from exc
    return client


def upload(target: SftpTarget, local_path: Path, remote_dir: str) -> RemoteFile:
    """Upload ``local_path`` into ``remote_dir`` atomically; return the final remote path."""
    local_path = Path(local_path)
    size = local_path.stat().st_size
    final = posixpath.join(remote_dir, local_path.name)
    partial = posixpath.join(remote_dir, f".{local_path.name}.partial")
    client = _connect(target)
    try:
        sftp = client.open_sftp()
        try:
            sftp.stat(remote_dir)
        except FileNotFoundError:
            raise DestinationMisconfigured(
                f"remote directory {remote_dir!r} does not exist on {target.address}"
            ) from None
        try:
            sftp.put(str(local_path), partial, confirm=True)
            sftp.posix_rename(partial, final)
        except BaseException:
            try:
                sftp.remove(partial)
            except OSError:
                pass
            raise
        remote_size = sftp.stat(final).st_size
        if remote_size != size:
            raise DeliveryError(
                f"{final} on {target.address} has {remote_size} bytes, expected {size}"
            )
        return RemoteFile(final, size)
    except (OSError, paramiko.SSHException) as exc:
        raise DeliveryError(f"upload of {local_path.name} to {target.address} failed: {exc}") from exc
    finally:
        client.close()
