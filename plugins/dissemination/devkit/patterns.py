"""Values drawn from a declared pattern: a synthetic round for any contract.

A country's site key or admin codes follow its own convention (``XNG-[A-Z]{2}-\\d{5}``); the
synthetic round must hold values its contract accepts, or ``synth``, the demo and the UI stop
there. This walks the pattern as Python's regular-expression parser reads it and draws each part:
literals, classes and the escapes ``\\d \\w \\s`` (and their negations), ``.``, the quantifiers
``{n} {n,m} ? + *`` (an open one at most 3 past its minimum), alternation, groups and anchors.
Lookarounds and back-references are refused by name. Drawn characters are ASCII (letters and
digits first; a space only where nothing else fits), so the contract's NFKC and its tidied spaces
leave them as drawn. The same pattern and seed give the same values, in the same order.
"""

from __future__ import annotations

import random
import string
from re import _constants as sre  # the parser's own (sre_parse warns on import since 3.11)
from re import _parser as sre_parse

#: What classes and ``.`` draw from, in order of preference: letters and digits, then the
#: punctuation codes use, then a space (last: the contract trims spaces at a value's ends).
_PLAIN = string.ascii_uppercase + string.digits + string.ascii_lowercase
_PUNCTUATION = "-_./:"
_SPACE = " "
#: An open quantifier (``*``, ``+``, ``{n,}``) repeats at most this many times past its minimum.
OPEN_REPEAT = 3

_CATEGORIES = {
    sre.CATEGORY_DIGIT: lambda c: c in string.digits,
    sre.CATEGORY_NOT_DIGIT: lambda c: c not in string.digits,
    sre.CATEGORY_WORD: lambda c: c in _PLAIN or c == "_",
    sre.CATEGORY_NOT_WORD: lambda c: c not in _PLAIN and c != "_",
    sre.CATEGORY_SPACE: lambda c: c in string.whitespace,
    sre.CATEGORY_NOT_SPACE: lambda c: c not in string.whitespace,
}


class PatternUnsupported(ValueError):
    pass


def examples(pattern: str, count: int, seed: str, distinct: bool = True) -> list[str]:
    """``count`` values matching ``pattern`` in full, drawn with ``seed``; ``distinct``: all
    different (a key's), refused when the pattern allows too few.

    A longer list from the same seed starts with the shorter one: a site keeps its key when
    a round has more sites."""
    parsed = sre_parse.parse(pattern)
    rng = random.Random(f"{seed}\0{pattern}")
    if not distinct:
        return [_draw(parsed, rng) for _ in range(count)]
    seen: dict[str, None] = {}
    for _ in range(20 * count + 100):
        if len(seen) == count:
            break
        seen.setdefault(_draw(parsed, rng))
    if len(seen) < count:
        raise PatternUnsupported(f"pattern {pattern!r} gave {len(seen)} different values in "
                                 f"{20 * count + 100} draws, fewer than the {count} needed")
    return list(seen)


def _draw(parsed, rng: random.Random) -> str:
    return "".join(_node(op, av, rng) for op, av in parsed)


def _node(op, av, rng: random.Random) -> str:
    """One parsed item of the pattern, drawn."""
    if op is sre.LITERAL:
        return chr(av)
    if op is sre.AT:
        return ""  # ^ $ \A \Z \b: a whole value is drawn, so anchors hold
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        low, high, item = av
        high = low + OPEN_REPEAT if high == sre.MAXREPEAT else high
        return "".join(_draw(item, rng) for _ in range(rng.randint(low, high)))
    if op is sre.SUBPATTERN:
        return _draw(av[-1], rng)
    if op is sre.ATOMIC_GROUP:
        return _draw(av, rng)
    if op is sre.BRANCH:
        return _draw(rng.choice(av[1]), rng)
    if op is sre.IN:
        return _pick(_candidates(av), lambda c: _in_class(av, c), rng)
    if op is sre.NOT_LITERAL:
        return _pick(_PLAIN + _PUNCTUATION, lambda c: c != chr(av), rng)
    if op is sre.ANY:
        return rng.choice(_PLAIN)
    raise PatternUnsupported(f"{str(op).lower()} (a lookaround or back-reference) cannot be "
                             "drawn: declare the column's values, or a pattern without it")


def _candidates(items) -> str:
    """The class's own characters (a literal, a range's first ones) after the plain ones."""
    own = []
    for op, av in items:
        if op is sre.LITERAL:
            own.append(chr(av))
        elif op is sre.RANGE:
            own.extend(chr(c) for c in range(av[0], min(av[1], av[0] + 25) + 1))
    return _PLAIN + _PUNCTUATION + "".join(own) + _SPACE


def _in_class(items, char: str) -> bool:
    negate = bool(items) and items[0][0] is sre.NEGATE
    inside = any(_item_holds(op, av, char) for op, av in items[negate:])
    return inside != negate


def _item_holds(op, av, char: str) -> bool:
    if op is sre.LITERAL:
        return char == chr(av)
    if op is sre.RANGE:
        return av[0] <= ord(char) <= av[1]
    if op is sre.CATEGORY:
        return _CATEGORIES[av](char)
    raise PatternUnsupported(f"{str(op).lower()} in a character class cannot be drawn")


def _pick(candidates: str, fits, rng: random.Random) -> str:
    """A character that fits: a non-space one when there is any."""
    chosen = [c for c in dict.fromkeys(candidates) if fits(c)]
    solid = [c for c in chosen if not c.isspace()]
    if not chosen:
        raise PatternUnsupported("a character class no letter, digit, punctuation or space "
                                 "fits cannot be drawn")
    return rng.choice(solid or chosen)
