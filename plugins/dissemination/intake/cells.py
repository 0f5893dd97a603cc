"""One column of a round conformed to its rule: each value checked against its kind.

``contract.conform`` runs ``conform_column`` on every column it keeps. A check runs once per
distinct cell (``_Cells``), however many sites repeat it, and in Arrow where it can: a round of a
million sites costs as many Python calls as it has distinct values.
"""


from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .. import normalise
from ..ids import ROUND_ID_PATTERN
from ..intake import contacts
from ..policy import IndicatorRule
from .columns import as_arrow, repeats


def blank(value: object) -> bool:
    """An empty cell: missing, NaN, NA or only spaces."""
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA \
        or (isinstance(value, str) and not value.strip())


@dataclass(frozen=True)
class _Cells:
    """A column as its distinct cells: the Python work of a check is done once per distinct
    value, however many sites repeat it. ``codes[i]`` is row i's cell in ``uniques``; -1 for an
    empty cell."""

    codes: np.ndarray
    uniques: list

    @classmethod
    def of(cls, values: pd.Series) -> _Cells:
        if _arrow_strings(values):  # hashed in Arrow: no Python object per row
            codes, uniques = _distinct(as_arrow(values))
            return cls(codes, uniques.to_pylist())
        if values.dtype == object:  # TRUE and 1 hash alike: keep booleans apart
            flags = np.fromiter((isinstance(v, bool | np.bool_) for v in values), bool,
                                len(values))
            if flags.any():
                keyed = values.where(~flags, values.map({True: "\0true", False: "\0false"}))
                codes, uniques = pd.factorize(keyed, use_na_sentinel=True)
                return cls(codes, [{"\0true": True, "\0false": False}.get(u, u)
                                   for u in uniques])
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        return cls(codes, list(uniques))

    def numbers(self, per_unique: list[float | None]) -> pd.Series:
        """One float per row from one per distinct value (None and empty cells: NaN)."""
        table = np.array([np.nan if v is None else v for v in per_unique] + [np.nan])
        return pd.Series(table[self.codes], dtype="float64")

    def strings(self, per_unique: list[str | None]) -> pd.Series:
        """One string per row from one per distinct value (None and empty cells: missing),
        built in Arrow: no Python object per row."""
        table = pa.array([*per_unique, None], type=pa.string())
        return pd.Series(table.take(np.where(self.codes < 0, len(per_unique), self.codes)),
                         dtype="string[pyarrow]")

    def mask(self, per_unique: list[bool], empty: bool = False) -> np.ndarray:
        return np.append(np.asarray(per_unique, dtype=bool), empty)[self.codes]


def conform_column(values: pd.Series, rule: IndicatorRule):
    """(canonical series, [(problem, row mask)]) for one column under its rule."""
    if rule.kind in ("count", "coordinate") and not rule.values and (
            pd.api.types.is_numeric_dtype(values.dtype)
            and not pd.api.types.is_bool_dtype(values.dtype)):
        return _number(pd.to_numeric(values).astype("float64"), rule,
                       values.isna().to_numpy())  # already numbers: nothing to parse
    if rule.kind in ("key", "admin", "round", "text", "personal") and not rule.values and \
            _arrow_strings(values):
        return _strings(values, rule)
    cells = _Cells.of(values)
    tokens = {normalise.token(m) for m in rule.missing}
    missing = [blank(u) or normalise.token(u) in tokens for u in cells.uniques]
    if rule.values:
        return _declared(cells, rule, missing)
    if rule.kind in ("count", "coordinate"):
        return _number(cells.numbers([None if m or isinstance(u, bool | np.bool_)
                                      else _to_float(u)
                                      for u, m in zip(cells.uniques, missing, strict=True)]),
                       rule, cells.mask(missing, empty=True),
                       cells.mask([isinstance(u, str) and not m
                                   and contacts.leading_zero(normalise.token(u))
                                   for u, m in zip(cells.uniques, missing, strict=True)]))
    if rule.kind == "date":
        return _date(cells, rule, missing)
    text = [None if m else normalise.token(u) if isinstance(u, bool | np.bool_) else
            str(int(u)) if isinstance(u, float) and u.is_integer() else " ".join(str(u).split())
            for u, m in zip(cells.uniques, missing, strict=True)]
    return _strings(cells.strings(text), rule)


def _to_float(value) -> float | None:
    try:
        return float(normalise.token(value))
    except (TypeError, ValueError):
        return None


def _declared(cells: _Cells, rule: IndicatorRule, missing: list[bool]):
    canonical = [None if m else rule.canonical.get(normalise.token(u))
                 for u, m in zip(cells.uniques, missing, strict=True)]
    stray = cells.mask([c is None and not m for c, m in zip(canonical, missing, strict=True)])
    return cells.strings(canonical), [(f"not one of the {len(rule.values)} declared values "
                                       "(after case, spaces and synonyms)", stray)] \
        if stray.any() else []


def _number(numbers: pd.Series, rule: IndicatorRule, missing: np.ndarray,
            zero_led: np.ndarray | None = None):
    """Numbers within their bounds, whole for a count.

    One with a phone number's shape (a leading 0 as the export wrote it, or 9+ digits) is
    named as such whatever the bounds: a raised bound must not let a phone number through."""
    x = numbers.to_numpy(dtype="float64", na_value=np.nan, copy=True)
    x[missing] = np.nan
    shaped = contacts.phone_shaped(x) | (False if zero_led is None else zero_led)
    problems = [("has a phone number's shape (a leading 0, or 9 or more digits)", shaped)] \
        if shaped.any() else []
    x[shaped] = np.nan
    unreadable = np.isnan(x) & ~missing & ~shaped
    low, high = rule.limits
    if rule.kind == "count":
        # Whole, and exact as a float: beyond 2**53 a "count" is junk (and no int64 holds it).
        with np.errstate(invalid="ignore"):
            fractional = (np.trunc(x) != x) | (np.abs(x) > 2**53)
        fractional &= ~np.isnan(x)
        if (unreadable | fractional).any():
            problems.append(("not a whole number", unreadable | fractional))
        x[fractional] = np.nan
    elif unreadable.any():
        problems.append(("not a number", unreadable))
    with np.errstate(invalid="ignore"):
        outside = ~np.isnan(x) & ((x < low) | (x > high))
    if outside.any():
        problems.append((f"outside the bounds [{_fmt(low)}, {_fmt(high)}]", outside))
    x[outside] = np.nan
    valid = ~np.isnan(x)
    kind = pa.int64() if rule.kind == "count" else pa.float64()
    out = pa.array(np.where(valid, x, 0).astype(kind.to_pandas_dtype()), type=kind,
                   mask=~valid)
    return pd.Series(out, dtype=pd.ArrowDtype(kind)), problems


def _fmt(x: float) -> str:
    return "no limit" if x == np.inf else (str(int(x)) if float(x).is_integer() else str(x))


def _date(cells: _Cells, rule: IndicatorRule, missing: list[bool]):
    def parse(v) -> str | None:  # (isoformat: strftime writes the year 1 as "1")
        if isinstance(v, datetime | date | pd.Timestamp):
            return pd.Timestamp(v).date().isoformat()
        text = " ".join(unicodedata.normalize("NFKC", str(v)).split())
        if rule.date_format:  # the export's own format; ISO too (a conformed round's form)
            try:
                return datetime.strptime(text, rule.date_format).date().isoformat()
            except ValueError:
                pass
        try:
            parsed = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
            return (parsed.date() if isinstance(parsed, datetime) else parsed).isoformat()
        except ValueError:
            return None

    iso = [None if m else parse(u) for u, m in zip(cells.uniques, missing, strict=True)]
    unreadable = cells.mask([d is None and not m for d, m in zip(iso, missing, strict=True)])
    expected = rule.date_format or "YYYY-MM-DD"
    return cells.strings(iso), [(f"not a date ({expected})", unreadable)] \
        if unreadable.any() else []


def _strings(out: pd.Series, rule: IndicatorRule):
    """Text kinds: NFKC, spaces tidied, the contract's missing tokens emptied; key, admin and
    round values match their pattern, or else carry no phone number or e-mail address. In
    pyarrow compute, so a million-site round is not a million Python calls; a column that
    repeats its values (admin names, round ids) is worked on once per distinct value."""
    cells = as_arrow(out)
    codes = None
    if repeats(cells):
        codes, cells = _distinct(cells)
    cells = pc.utf8_trim_whitespace(_collapse_spaces(pc.utf8_normalize(cells, "NFKC")))
    blank = pc.equal(cells, "")
    if rule.missing:
        tokens = pa.array([normalise.token(m) for m in rule.missing])
        blank = pc.or_(blank, pc.is_in(pc.utf8_lower(cells), value_set=tokens))
    cells = pc.if_else(pc.fill_null(blank, True), None, cells)
    bad, problem = None, ""
    if rule.kind in ("key", "admin", "round"):
        cells = _plain(cells)
        # A round column is an id whatever its rule says: free text there shipped as it was.
        pattern = rule.pattern or (ROUND_ID_PATTERN if rule.kind == "round" else None)
        if pattern is not None:
            matched = pd.Series(cells, dtype="string[pyarrow]").str.fullmatch(pattern)
            bad = ~matched.fillna(True).to_numpy(dtype=bool)
            problem = "does not match the declared pattern"
        else:  # nothing declares its shape: at least no phone number or e-mail address
            bad = contacts.found(cells, normalised=True)
            problem = "holds what looks like a phone number or e-mail address"
    if codes is not None:  # back to one cell per row
        bad = None if bad is None else np.append(bad, False)[codes]
        cells = cells.take(pa.array(codes, mask=codes < 0))
    problems = [(problem, bad)] if bad is not None and bad.any() else []
    return pd.Series(cells, dtype="string[pyarrow]"), problems


_DIGIT = re.compile(r"\d")


def _plain(cells: pa.Array) -> pa.Array:
    """Identifiers as people read them: digits in ASCII, invisible format characters (zero-width
    spaces, direction marks) dropped. NFKC keeps both: ``BFA-S٠٠٠٠١`` passed the pattern
    ``BFA-S\\d{5}`` (Python's ``\\d`` matches any script's digits) and, like ``NGA-S00001`` with a
    zero-width space, was another key than the same site's. Only non-ASCII cells go through
    Python."""
    other = pc.invert(pc.fill_null(pc.string_is_ascii(cells), True))
    if not pc.any(other).as_py():
        return cells
    folded = [None if v is None else _DIGIT.sub(
        lambda m: str(unicodedata.digit(m[0])),
        "".join(c for c in v if unicodedata.category(c) != "Cf"))
        for v in pc.filter(cells, other).to_pylist()]
    return pc.replace_with_mask(cells, other, pa.array(folded, cells.type))


def _arrow_strings(values: pd.Series) -> bool:
    return isinstance(values.dtype, pd.StringDtype | pd.ArrowDtype) and \
        pd.api.types.is_string_dtype(values.dtype) and values.dtype != object


def _distinct(cells: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Row codes into the distinct values (-1: null) and those values, hashed in Arrow."""
    encoded = pc.dictionary_encode(cells)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    return codes.astype(np.int64, copy=False), encoded.dictionary


def _collapse_spaces(cells: pa.Array) -> pa.Array:
    """Every run of whitespace as one space; only the cells that need it are rewritten."""
    odd = pc.fill_null(pc.match_substring_regex(cells, r"\s{2,}|[^\S ]"), False)
    if not pc.any(odd).as_py():
        return cells
    fixed = pc.replace_substring_regex(pc.filter(cells, odd), r"\s+", " ")
    return pc.replace_with_mask(cells, odd, fixed)
