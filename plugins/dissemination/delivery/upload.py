"""Upload a package to its focal point's server, or to the secondary's."""

from __future__ import annotations

import posixpath
from dataclasses import replace
from pathlib import Path

from ..errors import PermanentError
from ..ledger.records import (
    LedgerUnavailable,
)
from ..ledger.store import Ledger
from .planned import Delivery
from .sftp import inspect, upload
from .sftp_sessions import Sessions
from .sftp_target import UploadFailed


def final_path(destination: str, package_path: str) -> str:
    return posixpath.join(destination.split(":", 1)[1], Path(package_path).name)


def already_on_server(delivery: Delivery, previous, target_for,
                       sessions: Sessions | None) -> Delivery | None:
    """After a crash: is the earlier attempt's package on the server, whole? Then it was
    delivered, and only the ledger row is missing."""
    conn_id = previous.destination.split(":", 1)[0]
    remote = inspect(target_for(conn_id), previous.remote_path, sessions)
    if remote is None or remote.sha256 != previous.package_sha256:
        return None
    done = replace(delivery, status="delivered", remote_path=remote.path,
                   package_sha256=previous.package_sha256,
                   reason="found complete on the server after an interrupted attempt; "
                          "not uploaded again")
    if previous.destination == delivery.fallback.get("destination"):
        done = _to_secondary(done, "the earlier attempt fell back to the secondary")
    return replace(done, destination=previous.destination)


def upload_with_fallback(delivery: Delivery, claim, target_for, ledger: Ledger,
                          earlier, sessions: Sessions | None):
    try:
        remote = _upload_to(delivery.destination, delivery, target_for, ledger, earlier, sessions)
    except PermanentError as exc:
        if not delivery.fallback:
            raise
        secondary = delivery.fallback["destination"]
        claim = ledger.redirect(claim, secondary, final_path(secondary, delivery.package_path))
        remote = _upload_to(secondary, delivery, target_for, ledger, earlier, sessions)
        return replace(_to_secondary(delivery, f"primary focal point's destination failed "
                                               f"({exc}); sent to the secondary"),
                       status="delivered", remote_path=remote.path), claim
    return replace(delivery, status="delivered", remote_path=remote.path), claim


def _to_secondary(delivery: Delivery, reason: str) -> Delivery:
    return replace(delivery, recipient="secondary", recipient_name=delivery.fallback["name"],
                   recipient_email=delivery.fallback["email"],
                   destination=delivery.fallback["destination"], reason=reason)


def _upload_to(destination: str, delivery: Delivery, target_for, ledger: Ledger,
               earlier, sessions: Sessions | None):
    """Upload to ``destination``, first removing the temporary files attempts cut off there
    left: named by the ledger, or, after an attempt that died holding its claim (``earlier``),
    found in the folder under this zip's name or that attempt's (a zip made since differs)."""
    conn_id, remote_dir = destination.split(":", 1)
    stale = None if earlier else ledger.partials_left(destination)
    try:
        remote = upload(target_for(conn_id), Path(delivery.package_path), remote_dir,
                        expected_sha256=delivery.package_sha256, stale=stale, sessions=sessions,
                        earlier_name=posixpath.basename(earlier.remote_path) if earlier else "")
    except UploadFailed as exc:
        if exc.partial_left:  # where it is, as the ledger names it: kept with the release
            exc.left_at = (destination, exc.partial_left)
        raise
    if stale:
        try:
            ledger.forget_partials(destination, stale)
        except LedgerUnavailable:
            pass  # the next upload there removes them again, finding them gone
    return remote
