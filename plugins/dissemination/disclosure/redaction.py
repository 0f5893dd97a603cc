"""Free-text redaction: phones, e-mails and ID-like tokens in shared text columns.

Phone numbers (any separators), e-mail addresses (also spelled out, "name at ngo dot org") and
ID-like tokens become ``[redacted]``; the number of values touched is noted, never the values.
"""

from __future__ import annotations

from ..classify.sensitivity import Selection
from ..intake.contacts import REDACTED as REDACTED
from ..intake.contacts import redact
from .content import Content


def redact_text(content: Content, selection: Selection, kinds: dict[str, str]) -> None:
    """Redact every shared free-text column of ``content`` in place, noting how many."""
    for d in selection.shared:
        if kinds[d.column] == "text" and d.column in content.frame:
            content.frame[d.column], n = redact(content.frame[d.column])
            content.notes[d.column].append(
                f"redacted {n} value(s) with phones, e-mails or IDs")
