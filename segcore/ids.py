"""Quoting values read from data files in error messages, safely.

An error message may end up on a web page. When it is built from a data file (a split list, a COCO
file, a submission CSV), a value is quoted only when it looks like an image id: short, printable, made
of the characters file stems use. At most :data:`MAX_QUOTED` are quoted; the rest are counted. So a
file that is not what the config says (a ``.env`` named as a split list) is reported by counts, and
its contents never reach a message.

Example:
    >>> quote_ids(["img_001", "AWS_SECRET_ACCESS_KEY=abc123", "img_002"])
    'img_001, img_002 and 1 entry that is not an image id'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = ["MAX_QUOTED", "MAX_ID_CHARS", "looks_like_id", "quote_id", "quote_ids", "partition_ids"]

MAX_QUOTED: Final = 5
"""How many values one message quotes at most."""
MAX_ID_CHARS: Final = 64
"""Longer values are never quoted."""

# letters and digits of any script, and the punctuation file stems commonly hold; no '=', ':', '/', quotes,
# markup or shell characters, so "KEY=value", "user:pass" or "<script>" lines are not ids
_ID = re.compile(r"[\w][\w.+\-()\[\]@~ ]*", re.UNICODE)


def looks_like_id(value: object) -> bool:
    """Whether ``value`` may be quoted: an int of at most 18 digits, or text like a file stem.

    Text qualifies when it is 1..``MAX_ID_CHARS`` characters of letters, digits, space and
    ``_ . + - ( ) [ ] @ ~``, starts with a letter or digit and ends with no space.
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 10**18
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS or value != value.strip():
        return False
    return _ID.fullmatch(value) is not None and value.isprintable()


def quote_id(value: object, *, what: str = "(a value that is not an id)") -> str:
    """``value`` as text when it looks like an id, else ``what`` (the value itself is never shown)."""
    return str(value) if looks_like_id(value) else what


def partition_ids(values: Iterable[object]) -> tuple[list[object], int]:
    """The values that look like ids (in order) and how many do not."""
    ids: list[object] = []
    other = 0
    for v in values:
        if looks_like_id(v):
            ids.append(v)
        else:
            other += 1
    return ids, other


def quote_ids(values: Sequence[object] | Iterable[object], *, limit: int = MAX_QUOTED, kind: str = "image id") -> str:
    """At most ``limit`` id-like values quoted, then counts of the rest and of the values that are not ids.

    ``kind`` names what the values should be in the count of those that are not (``image id``).

    Returns:
        e.g. ``"a, b and 3 more"``, ``"a and 2 entries that are not image ids"`` or
        ``"4 entries that are not image ids"``.
    """
    ids, other = partition_ids(values)
    shown = [quote_id(v) for v in ids[: max(limit, 0)]]
    parts = [", ".join(shown)] if shown else []
    if len(ids) > len(shown):
        parts.append(f"{len(ids) - len(shown)} more")
    if other:
        parts.append(f"1 entry that is not {'an' if kind[0] in 'aeiou' else 'a'} {kind}" if other == 1
                     else f"{other} entries that are not {kind}s")
    if not parts:
        return "none"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
