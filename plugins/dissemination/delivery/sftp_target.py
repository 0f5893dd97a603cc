"""Where a package goes over SFTP: the target, its pinned host key, and what can go wrong.

A server that shows another key than the pinned one gets nothing: no authentication, no upload
(``sftp_sessions``). Every network failure is a retryable ``DeliveryError`` naming the
destination; a wrong key, login or setting is also a ``PermanentError``, not worth a retry.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

import paramiko

from ..errors import PermanentError


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
