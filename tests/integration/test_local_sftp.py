"""The demo's pure-Python SFTP server (asyncssh) against our real client, and the choice of
engine: the demo runs without OpenSSH, with the same keys and the same refusals."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace

import paramiko
import pytest

from dissemination.delivery.sftp import inspect, upload
from dissemination.delivery.sftp_sessions import _connect
from dissemination.delivery.sftp_target import DeliveryError, HostKeyMismatch, LoginRefused
from dissemination.devkit.local_sftp import LocalSftpServer, SftpServerError, find_sshd
from dissemination.package.digests import file_sha256


@pytest.fixture(scope="module")
def python_server(tmp_path_factory):
    with LocalSftpServer(tmp_path_factory.mktemp("python-sftp"), engine="python") as server:
        yield server


@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "NGA-R001_test.zip"
    path.write_bytes(os.urandom(700_000))  # several of the client's 255 KiB requests
    return path


@pytest.fixture
def folder(python_server, request):
    """A remote folder of the test's own on the shared server."""
    path = python_server.root / request.node.name
    path.mkdir()
    return path


def test_our_upload_lands_renamed_and_read_back(python_server, payload, folder):
    assert python_server.description.startswith("pure-Python SFTP (asyncssh ")
    remote = upload(python_server.target(), payload, folder.name)
    assert (remote.path, remote.size, remote.sha256) == (
        f"{folder.name}/{payload.name}", payload.stat().st_size, file_sha256(payload))
    assert [p.name for p in folder.iterdir()] == [payload.name]  # no leftover .partial
    assert (folder / payload.name).read_bytes() == payload.read_bytes()
    assert inspect(python_server.target(), remote.path) == remote


def test_wrong_pinned_host_key_sends_nothing(python_server, payload, folder, tmp_path):
    impostor = LocalSftpServer(tmp_path / "impostor", engine="python")
    impostor.make_keys()  # only to mint another host key
    with pytest.raises(HostKeyMismatch, match="presented host key SHA256:.* nothing was sent"):
        upload(python_server.target(host_key=impostor.host_key), payload, folder.name)
    assert list(folder.iterdir()) == []


def test_only_the_authorized_key_and_user_log_in(python_server, payload, folder, tmp_path):
    stranger = LocalSftpServer(tmp_path / "stranger", engine="python")
    stranger.make_keys()  # a client key the server does not know
    with pytest.raises(LoginRefused, match="login refused"):
        upload(replace(python_server.target(), private_key_path=str(stranger.client_key_path)),
               payload, folder.name)
    with pytest.raises(LoginRefused, match="login refused"):
        upload(replace(python_server.target(), username="someone-else"), payload, folder.name)
    assert list(folder.iterdir()) == []


def test_a_revoked_key_is_refused_at_the_next_login(tmp_path, payload):
    with LocalSftpServer(tmp_path / "sftp", engine="python") as server:
        (server.root / "in").mkdir()
        upload(server.target(), payload, "in")
        server.authorized_keys_path.write_text("")
        with pytest.raises(LoginRefused):
            upload(server.target(), payload, "in")


def test_no_password_login(python_server):
    transport = paramiko.Transport(("127.0.0.1", python_server.port))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as exc:
            transport.auth_password(python_server.user, "guess")
        assert exc.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_nothing_leaves_the_root(python_server, payload, folder):
    outside = python_server.home.parent
    before = sorted(p.name for p in outside.iterdir())
    client = _connect(python_server.target())
    try:
        session = client.open_sftp()
        assert session.normalize("../../..") == "/"
        session.put(str(payload), f"../../{folder.name}/escaped.zip")
        session.mkdir("/../../made-here")
        session.symlink("/../../..", f"{folder.name}/link")
        for key in ("../client_ed25519", str(python_server.client_key_path)):  # beside root
            with pytest.raises(FileNotFoundError):
                session.stat(key)
    finally:
        client.close()
    assert (folder / "escaped.zip").read_bytes() == payload.read_bytes()
    assert (python_server.root / "made-here").is_dir()
    assert (folder / "link").resolve() == python_server.root
    assert sorted(p.name for p in outside.iterdir()) == before


def test_stopped_then_started_again_on_the_same_port(tmp_path, payload):
    server = LocalSftpServer(tmp_path / "sftp", engine="python")
    with server:
        (server.root / "in").mkdir()
    with pytest.raises(DeliveryError, match="cannot reach"):
        upload(server.target(), payload, "in")
    with server:
        assert upload(server.target(), payload, "in").sha256 == file_sha256(payload)


@pytest.mark.integration
def test_both_engines_serve_the_same_keys_from_one_home(tmp_path, payload):
    """A home made by ssh-keygen (older demos) keeps its host key; keys made here are read by
    OpenSSH and paramiko: a pinned key stays valid whichever server runs."""
    home = tmp_path / "sftp"
    home.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kept",
                    "-f", str(home / "ssh_host_ed25519_key")], check=True)
    kept = (home / "ssh_host_ed25519_key.pub").read_text().split()[1]
    pinned = None
    for engine in ("python", "openssh", "python"):
        with LocalSftpServer(home, engine=engine) as server:
            assert server.engine == engine and server.host_key.split()[1] == kept
            pinned = pinned or server.host_key
            (server.root / engine).mkdir(exist_ok=True)
            upload(server.target(host_key=pinned), payload, engine)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(server.client_key_path)],
                             check=True, capture_output=True, text=True).stdout.split()
    assert derived[:2] == server.client_key_path.with_suffix(".pub").read_text().split()[:2]
    assert paramiko.Ed25519Key.from_private_key_file(str(server.client_key_path))
    assert oct(server.client_key_path.stat().st_mode & 0o777) == "0o600"


def test_a_lost_public_key_is_derived_again(tmp_path):
    server = LocalSftpServer(tmp_path / "sftp", engine="python")
    server.make_keys()
    pinned = server.host_key
    server.host_key_path.with_suffix(".pub").unlink()
    server.make_keys()
    assert server.host_key == pinned


@pytest.mark.integration
def test_auto_uses_openssh_when_found_else_python(tmp_path):
    sshd = find_sshd()
    assert sshd, "the tests need OpenSSH's sshd (Debian: openssh-server; .ci/run installs it)"
    found = LocalSftpServer(tmp_path / "a", engine="auto", sshd_search=os.path.dirname(sshd))
    assert (found.engine, found.description) == ("openssh", f"OpenSSH sshd ({sshd})")
    bare = LocalSftpServer(tmp_path / "b", engine="auto", sshd_search=str(tmp_path))
    assert bare.engine == "python"


def test_openssh_asked_for_but_missing_fails_naming_it(tmp_path):
    server = LocalSftpServer(tmp_path / "sftp", engine="openssh", sshd_search=str(tmp_path))
    with pytest.raises(SftpServerError, match="OpenSSH sshd not found; install it") as exc:
        server.start()
    assert "\n" not in str(exc.value)


def test_the_tests_default_is_openssh(tmp_path):
    """conftest asks for OpenSSH: no test silently runs against the pure-Python server."""
    assert LocalSftpServer(tmp_path / "sftp").engine == "openssh"
    with pytest.raises(SftpServerError, match="unknown SFTP server engine 'paramiko'"):
        LocalSftpServer(tmp_path / "sftp", engine="paramiko")
