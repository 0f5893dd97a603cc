"""Delivery over SFTP against a real OpenSSH sshd on loopback."""

from __future__ import annotations

import gc
import os
import time
from dataclasses import replace

import pytest
from faults import CuttableLink, InBackground, silent_sessions, wait_until

from dissemination.delivery.sftp import upload
from dissemination.delivery.sftp_sessions import (
    DRAFT_REQUEST_SIZE,
    REQUEST_SIZE,
    Sessions,
    _connect,
    request_size,
)
from dissemination.delivery.sftp_target import (
    DeliveryError,
    DestinationMisconfigured,
    HostKeyMismatch,
    UploadFailed,
)
from dissemination.devkit.local_sftp import LocalSftpServer, Quirks
from dissemination.errors import PermanentError
from dissemination.package.digests import file_sha256


@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "NGA-R001_test.zip"
    path.write_bytes(b"\x00\x01" * 300_000)
    return path


def test_upload_lands_under_the_final_name_only(sftp_server, payload):
    (sftp_server.root / "p1" / "incoming").mkdir(parents=True, exist_ok=True)
    remote = upload(sftp_server.target(), payload, "p1/incoming")
    assert remote.path == "p1/incoming/NGA-R001_test.zip"
    landed = sftp_server.root / "p1" / "incoming"
    assert [p.name for p in landed.iterdir()] == [payload.name]  # no leftover .partial
    assert (landed / payload.name).read_bytes() == payload.read_bytes()


def test_bytes_that_read_back_otherwise_never_take_the_final_name(sftp_server, payload):
    """The server's copy is hashed before the rename: here the package changed after it was
    hashed (as a disk fault on either side would show), so nothing lands and nothing is left."""
    (sftp_server.root / "p3").mkdir(exist_ok=True)
    hashed = file_sha256(payload)
    payload.write_bytes(payload.read_bytes()[::-1])
    with pytest.raises(UploadFailed, match="reads back as 600000 bytes") as exc:
        upload(sftp_server.target(), payload, "p3", expected_sha256=hashed)
    assert exc.value.final_may_exist is False and "retrying is safe" in str(exc.value)
    assert list((sftp_server.root / "p3").iterdir()) == []


def test_only_silence_ends_a_session_not_a_long_transfer(sftp_server, tmp_path):
    """A session is closed when its server says nothing for the limit, not when a delivery
    lasts longer than it: over a slow link, an upload of several times the limit completes
    (the server answers all along)."""
    payload = tmp_path / "NGA-R001_slow.zip"
    payload.write_bytes(os.urandom(24 << 20))
    (sftp_server.root / "slow").mkdir(exist_ok=True)
    link = CuttableLink("127.0.0.1", sftp_server.port, rate=8 << 20)  # 3 s at least
    try:
        with Sessions(stall_seconds=1) as sessions:
            began = time.monotonic()
            remote = upload(replace(sftp_server.target(), port=link.port), payload, "slow",
                            sessions=sessions)
            lasted = time.monotonic() - began
    finally:
        link.close()
    assert lasted > 2 * sessions.stall_seconds  # else the test would show nothing
    assert remote.sha256 == file_sha256(payload)
    assert (sftp_server.root / remote.path).read_bytes() == payload.read_bytes()


@pytest.mark.integration
def test_a_server_without_posix_rename_gets_sftps_own_rename(payload, tmp_path):
    """Partners' servers of other makes lack OpenSSH's posix-rename extension: the package
    still lands whole under its final name, through SFTP's own rename."""
    with LocalSftpServer(tmp_path / "plain", refuse=("posix-rename",)) as server:
        (server.root / "in").mkdir()
        remote = upload(server.target(), payload, "in")
        assert [p.name for p in (server.root / "in").iterdir()] == [payload.name]
        assert (server.root / remote.path).read_bytes() == payload.read_bytes()


@pytest.mark.parametrize("quirks", [Quirks(read_write_opens=False),
                                    Quirks(shows_bytes_once_closed=True)],
                         ids=["refusing read-write opens", "showing bytes once closed"])
def test_a_server_reading_back_only_once_closed_still_gets_only_verified_packages(
        payload, tmp_path, quirks):
    """Azure Blob Storage's SFTP refuses to open a file to write and read at once, which the
    read-back through the upload's own handle asks for; an object store behind SFTP may accept
    it, but show the bytes only once the file is closed. Either way the package is written,
    then read back through a second open, and the session remembers it. Bytes that read back
    otherwise still never take the final name."""
    with LocalSftpServer(tmp_path / "object-store", engine="python",
                         quirks=quirks) as server, Sessions() as sessions:
        (server.root / "in").mkdir()
        remote = upload(server.target(), payload, "in", sessions=sessions)
        assert (server.root / remote.path).read_bytes() == payload.read_bytes()
        changed = tmp_path / "NGA-R002_test.zip"
        changed.write_bytes(payload.read_bytes()[::-1])
        with pytest.raises(UploadFailed, match="reads back as 600000 bytes"):
            upload(server.target(), changed, "in", expected_sha256=remote.sha256,
                   sessions=sessions)
        assert [p.name for p in (server.root / "in").iterdir()] == [payload.name]
    assert sessions.opened == 1  # the refusal is the server's answer, not a broken session


@pytest.mark.parametrize("engine, quirks, size", [
    pytest.param("openssh", None, REQUEST_SIZE,  # known by its banner: not asked
                 marks=pytest.mark.integration),
    ("python", Quirks(), REQUEST_SIZE),  # states 4 MiB: no more than OpenSSH's is sent
    ("python", Quirks(write_limit=64 * 1024), 64 * 1024),  # states its limit
    ("python", Quirks(write_limit=DRAFT_REQUEST_SIZE, answers_limits=False), DRAFT_REQUEST_SIZE),
], ids=["OpenSSH", "stating a larger limit", "stating a smaller limit", "stating none"])
def test_write_requests_fit_the_server(tmp_path, engine, quirks, size):
    """A server refusing write requests over its limit would fail every delivery to it: each
    server gets requests of the size it states (``limits@openssh.com``), OpenSSH's own, or
    what the SFTP draft promises every server takes."""
    payload = tmp_path / "NGA-R001_large.zip"
    payload.write_bytes(os.urandom(3 << 20))
    with LocalSftpServer(tmp_path / "server", engine=engine, quirks=quirks) as server:
        (server.root / "in").mkdir()
        client = _connect(server.target())
        try:
            assert request_size(client, client.open_sftp()) == size
        finally:
            client.close()
        remote = upload(server.target(), payload, "in")
        assert (server.root / remote.path).read_bytes() == payload.read_bytes()


@pytest.mark.integration
def test_a_server_refusing_every_rename_gets_nothing_and_says_so(payload, tmp_path):
    """A refusal is the server's answer, so the rename did not happen: nothing is under the
    final name, the temporary file is removed, and the error is permanent (a retry would meet
    the same refusal), naming what the partner must allow."""
    with LocalSftpServer(tmp_path / "strict", refuse=("posix-rename", "rename")) as server:
        (server.root / "in").mkdir()
        with pytest.raises(DestinationMisconfigured, match="refuses to rename") as exc:
            upload(server.target(), payload, "in")
        assert "let this account rename files in in" in str(exc.value)
        assert isinstance(exc.value, PermanentError)
        assert not getattr(exc.value, "final_may_exist", False)
        assert list((server.root / "in").iterdir()) == []


@pytest.mark.integration
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_an_upload_cut_off_leaves_nothing_to_fail_later(tmp_path):
    """paramiko retries a file's pending requests when the file is garbage collected: after a
    cut connection that printed a second, stray traceback into the task's log, long after the
    delivery's own error."""
    payload = tmp_path / "NGA-R001_cut.zip"
    payload.write_bytes(os.urandom(64 << 20))
    with LocalSftpServer(tmp_path / "sftp") as server, Sessions(stall_seconds=2) as sessions:
        (server.root / "in").mkdir()
        attempt = InBackground(lambda: upload(server.target(), payload, "in", sessions=sessions))
        wait_until(lambda: any(p.stat().st_size > 1 << 20
                               for p in (server.root / "in").glob(".*.partial")),
                   what="the upload to be under way")
        with silent_sessions(server):
            error = attempt.outcome(within=60)
    assert isinstance(error, UploadFailed)
    del error, attempt
    gc.collect()  # the cut-off file's finaliser runs here, and must have nothing left to send


def test_wrong_host_key_sends_nothing(sftp_server, payload, tmp_path):
    (sftp_server.root / "p2").mkdir(exist_ok=True)
    impostor = LocalSftpServer(tmp_path / "other")
    impostor._write_config()  # only to mint another host key
    with pytest.raises(HostKeyMismatch) as exc:
        upload(sftp_server.target(host_key=impostor.host_key), payload, "p2")
    message = str(exc.value)
    assert f"127.0.0.1:{sftp_server.port}" in message and "nothing was sent" in message
    assert "SHA256:" in message
    assert list((sftp_server.root / "p2").iterdir()) == []


def test_malformed_pinned_key(sftp_server, payload):
    with pytest.raises(DeliveryError, match="not of the form"):
        upload(sftp_server.target(host_key="garbage"), payload, "p1")


def test_missing_remote_directory_is_named(sftp_server, payload):
    with pytest.raises(DeliveryError, match="remote directory 'no/such/dir' does not exist"):
        upload(sftp_server.target(), payload, "no/such/dir")


def test_refused_login(sftp_server, payload, tmp_path):
    stranger = LocalSftpServer(tmp_path / "stranger")
    stranger._write_config()  # mints a client key the server does not know
    target = replace(sftp_server.target(), private_key_path=str(stranger.client_key_path))
    with pytest.raises(DeliveryError, match="login refused"):
        upload(target, payload, "p1")


def test_server_down(payload, tmp_path):
    server = LocalSftpServer(tmp_path / "down")
    server._write_config()
    with pytest.raises(DeliveryError, match="cannot reach"):
        upload(server.target(), payload, "p1")  # nothing listens on that port
