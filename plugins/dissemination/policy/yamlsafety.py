"""What a policy file may not use of YAML, and what an error may say of a value it holds.

A policy file is written by a person and read by every task: YAML's anchors and aliases let ten
lines stand for a billion nodes (the "billion laughs"), and one such value echoed into an error
made a 52 MB message. Policy files have no need of them, so they are refused before anything is
built; and errors describe a bad value by its type and size, never by its text (a focal point's
phone or e-mail is a value too).
"""

from __future__ import annotations

import re
from datetime import date

import yaml

_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def alias_problem(text: str) -> str | None:
    """``line N: ...`` for the first anchor (``&name``) or alias (``*name``) in ``text``, or
    None. Only YAML's own events are read, one at a time: nothing is expanded."""
    if "&" not in text and "*" not in text:  # neither can start an anchor or an alias
        return None
    try:
        for event in yaml.parse(text, Loader=_PARSER):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                return (f"line {event.start_mark.line + 1}: YAML anchors and aliases (&name, "
                        "*name) are not allowed in policy files; write each value out")
    except yaml.YAMLError:
        return None  # not YAML at all: the loader that follows says where and why
    return None


#: A keyword that should have been one of a few (``classification: restricted``) is shown: it is
#: the policy's vocabulary, not a person's text, and naming it is the quickest fix.
KEYWORD_ERRORS = frozenset({"enum", "literal_error"})
_KEYWORD = re.compile(r"^[A-Za-z][A-Za-z_\-]{0,39}$")


def described(value: object, error_type: str = "") -> str:
    """A value for an error message: its type and size, never its text (a mistyped keyword
    excepted)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if error_type in KEYWORD_ERRORS and isinstance(value, str) and _KEYWORD.match(value):
        return repr(value)
    if isinstance(value, str):
        return f"a text of {len(value)} character(s)"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} entr{'y' if len(value) == 1 else 'ies'}"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} item(s)"
    return f"a {type(value).__name__}"
