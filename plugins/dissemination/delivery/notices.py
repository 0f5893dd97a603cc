"""The e-mails the pipeline sends, as plain values: who, subject, body. Never a password.

A focal point is told that data arrived and where; the password reaches them by another channel
(a phone call from the DTM focal point), as the guideline asks. DTM's focal point on duty in the
country (``Policy.alert_to``) is told what needs a human: a rotated password to pass on, a
deadline at risk or missed, an urgent signal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Email:
    to: tuple[str, ...]
    subject: str
    body: str


def delivery_notice(delivery, dtm) -> Email:
    """To the focal point who received a package; ``dtm`` is DTM's focal point on duty, the
    person who phones them the password.

    Names no focal point (an e-mail is stored and forwarded where the data is not) and no hash
    of the data: the file's name and SHA-256 are the zip's own (``package.package_name``)."""
    return Email(
        to=(delivery.recipient_email,),
        subject=f"[DTM] {delivery.urgency}-urgency data for {delivery.organisation}: "
                f"{delivery.round_id}",
        body=(
            "Dear colleague,\n\n"
            f"DTM delivered survey data to your SFTP folder under the data-sharing agreement "
            f"{delivery.agreement_id}:\n\n"
            f"  file:    {delivery.remote_path}\n"
            f"  round:   {delivery.round_id} ({delivery.urgency} urgency, {delivery.level} level)\n"
            f"  rows:    {delivery.row_count}\n"
            f"  SHA-256: {delivery.package_sha256}\n\n"
            "The file is an AES-256 encrypted zip: open it with 7-Zip, p7zip or WinZip "
            "(not the built-in unzip). The password is never sent by e-mail: your DTM focal "
            f"point, {dtm.name} ({dtm.title}, {dtm.mobile}), gives it to you by phone. "
            "manifest.json inside lists every column, its classification and why other "
            "columns were not shared.\n"
        ),
    )


def rotation_notice(agreement, people, to: tuple[str, ...], organisation: str) -> Email:
    """To DTM's focal point: a new password exists and must be passed on by phone, to everyone
    who opens the agreement's packages."""
    tell = "\n".join(f"- {p.name} ({p.title}, {p.mobile})"
                     + ("" if p.available else ", unavailable now: when back")
                     for p in people.password_holders())
    return Email(
        to=to,
        subject=f"[DTM] package password rotated for {organisation} "
                f"({agreement.id})",
        body=(
            f"The package password of agreement {agreement.id} was rotated (every "
            f"{agreement.password.rotate_every_days} days). Packages from now on use the new "
            f"one.\n\nTell each of them by phone or another channel, never by e-mail:\n{tell}\n\n"
            f"It is in the Airflow Variable {agreement.password.variable}.\n"
        ),
    )


def deadline_alert(states: list, to: tuple[str, ...]) -> Email:
    """To DTM's focal point: medium-urgency deliveries at risk of missing, or that missed, their
    agreement's window (e.g. 48 hours from collection)."""
    n = len(states)
    return Email(
        to=to,
        subject=f"[DTM] {n} urgent deliver{'y' if n == 1 else 'ies'} at risk or late",
        body="".join(f"  {s.state.upper():8s} {s.round_id} -> {s.agreement_id}: window ends "
                     f"{s.deadline:%Y-%m-%d %H:%M} UTC; {s.detail}\n" for s in states),
    )


def signal_alert(round_id: str, signals: list, agreements: list[str],
                 to: tuple[str, ...]) -> Email:
    """To DTM's focal point: the data itself calls for organisational urgent action."""
    return Email(
        to=to,
        subject=f"[DTM] urgent action signal in {round_id}: "
                f"{', '.join(s.name for s in signals)}",
        body="".join(f"  {s.name}: {s.detail}\n" for s in signals)
        + (f"\nThe medium-urgency path was started for: {', '.join(agreements)}.\n"
           if agreements else "\nNo agreement covers these indicators at medium urgency.\n"),
    )


def ledger_alert(finding_line: str, ledger: str, to: tuple[str, ...]) -> Email:
    """To DTM's focal points: the ledger's hash chain does not verify. Names the first bad row
    by table and key only (the line from ``audit.Verified.line``), never a value."""
    return Email(
        to=to,
        subject="[DTM] the delivery ledger failed its audit",
        body=(
            f"The daily audit of the delivery ledger ({ledger}) found a row that was changed, "
            f"deleted or reordered after it was written:\n\n  {finding_line}\n\n"
            "The ledger is the record of what every partner received: until this is resolved, "
            "do not rely on it. Ask the database administrators to restore it from the last "
            "backup that verifies (python -m dissemination ledger verify --url ... --heads "
            "..., with the chain key), find out who had write access and what changed "
            "(database logs). Deliveries made since that backup are missing from it: the "
            "newest published chain head (ledger-heads/ in the staging store, and the audit "
            "e-mails) says how far the ledger went; see docs/ledger-chain.md before the next "
            "audit.\n"
        ),
    )


def ledger_head(verified_line: str, anchor: str, published_as: str, ledger: str,
                to: tuple[str, ...]) -> Email:
    """To DTM's focal points after each passing audit: the chain head it verified, kept in
    their mailboxes, outside the ledger's trust domain. Whoever can rewrite the ledger cannot
    recall these e-mails, so a head in one that the ledger no longer holds shows it was cut
    short or rewritten since."""
    return Email(
        to=to,
        subject="[DTM] delivery ledger audit passed: chain head",
        body=(
            f"The daily audit of the delivery ledger ({ledger}) passed:\n\n  {verified_line}\n\n"
            f"Chain head: {anchor}\n(also published as {published_as})\n\n"
            "Keep this e-mail. To check the ledger still holds this head: python -m "
            f"dissemination ledger verify --url ... --anchor {anchor} (with the chain key). A "
            "later audit that no longer finds it fails and tells you.\n"
        ),
    )
