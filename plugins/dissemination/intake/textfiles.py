"""Which encoding a CSV is in, as spreadsheet programs save them: UTF-8 (with or without a
BOM), else Windows-1252. A file that is both (an export with a line pasted in from elsewhere)
or UTF-16 (Excel's "Unicode Text") is neither: read as either, part of its text would be
wrong (UTF-8 names stored as "cafÃ©"). Shared by the file drop and the DAP import."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from ..errors import PermanentError

#: A valid multi-byte UTF-8 sequence: in a file that is not UTF-8 throughout, a sign that
#: some of it is.
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}"
                            rb"|[\xf0-\xf4][\x80-\xbf]{3}")


class NotText(PermanentError, ValueError):
    """A file in no encoding it can be read in whole; the message says why (never a cell)."""


def encoding_of(path: Path) -> str:
    """``utf-8-sig`` or ``cp1252``, reading the whole file (for small files: the file drop
    checks its large ones as it reads them, then asks ``legacy_encoding``)."""
    try:
        Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return legacy_encoding(path, exc)
    return "utf-8-sig"


def legacy_encoding(path: Path, error: UnicodeDecodeError) -> str:
    """For a file that failed to read as UTF-8 (``error``): Windows-1252 if no part of it is
    UTF-8, else ``NotText`` naming its first line that is not."""
    data = Path(path).read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise NotText("UTF-16 text (Excel's \"Unicode Text\"); save it as CSV UTF-8")
    if _UTF8_SEQUENCE.search(data):
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            error = exc
        line = data.count(b"\n", 0, error.start) + 1
        raise NotText(f"line {line} is not UTF-8 text, though the file holds UTF-8 text "
                      "elsewhere: mixed encodings (save it again as UTF-8)")
    return "cp1252"
