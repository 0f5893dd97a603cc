"""The one pattern every round id must match, wherever it comes from.

A round id becomes a file name (staging, packages) and a log line, and it arrives from places we
do not control (the survey database, the file drop, the trigger form). Each entry point checks it
here. Imports nothing heavy, so DAG files can use the pattern in a trigger form at parse time.
"""

from __future__ import annotations

import re

from .errors import PermanentError

#: ISO3 country, round number, status: e.g. NGA-R004-partial. ASCII only; also a JSON Schema
#: ``pattern`` for the trigger form (hence [0-9], not \d, which matches other scripts' digits).
ROUND_ID_PATTERN = r"^[A-Z]{3}-R[0-9]{3,4}-(partial|cleaned)$"
ROUND_ID = re.compile(ROUND_ID_PATTERN)


class InvalidRoundId(PermanentError, ValueError):
    """A round id that could escape a folder or a log line: refused before any use."""


def check_round_id(value: object, where: str) -> str:
    """``value`` if it is a round id; else ``InvalidRoundId`` naming where it came from."""
    if isinstance(value, str) and ROUND_ID.fullmatch(value):  # fullmatch: no trailing newline
        return value
    raise InvalidRoundId(f"{where}: refused round id {_shown(value)}: a round id must match "
                         f"{ROUND_ID_PATTERN} (e.g. NGA-R004-partial)")


def _shown(value: object) -> str:
    """Enough of a bad id to find it, escaped and short: never a whole hostile string."""
    if not isinstance(value, str):
        return f"of type {type(value).__name__}"
    return repr(value[:40]) + ("..." if len(value) > 40 else "")
