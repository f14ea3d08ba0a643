"""Small helpers shared by the service modules."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import Member
from worker.errors import InvalidInput, NotFound

T = TypeVar("T")


def get_or_raise(session: Session, model: type[T], object_id: int, kind: str, hint: str = "") -> T:
    """The row of ``model`` with ``object_id``, or :class:`NotFound`."""
    if not isinstance(object_id, int) or isinstance(object_id, bool):
        raise InvalidInput(f"{kind} id must be an integer, got {object_id!r}")
    obj = session.get(model, object_id)
    if obj is None:
        raise NotFound(kind, object_id, hint)
    return obj


def check_actor(session: Session, actor: int | None) -> None:
    """Refuse an ``actor`` id that names no member (None is the system)."""
    if actor is None:
        return
    get_or_raise(session, Member, actor, "member", "pick an existing member as the acting person in the sidebar")


def as_float(value: Any, *, name: str) -> float:
    """A finite float from a number or numeric text.

    Raises:
        InvalidInput: naming ``name`` when the value is not a finite number.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"{name} must be a number such as 0.8123, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            raise InvalidInput(f"{name} must be a number such as 0.8123, got the text {text!r}") from None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a number such as 0.8123, got {value!r}") from None
    if not math.isfinite(f):
        raise InvalidInput(f"{name} must be a finite number, got {f}")
    return f


def check_priority(priority: Any) -> int:
    """A queue priority: an integer from 0 (lowest) to 9 (highest), the steps the broker keeps apart.

    Raises:
        InvalidInput: anything else, named.
    """
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise InvalidInput(f"priority must be an integer from 0 (lowest) to 9 (highest), got {priority!r}")
    return int(priority)


_MARKUP = re.compile(r"[<>`]|\]\(|\]\[|!\[")


def check_name(name: str, *, what: str, max_chars: int = 200) -> str:
    """A name shown on pages (an experiment's, a dataset's, a member's, a tag): plain text, no markup.

    Refuses control characters and what HTML or Markdown would read as markup (``<``, ``>``, backticks,
    link and image brackets such as ``[text](url)``), so a name is shown as typed wherever it appears.

    Returns:
        The name without surrounding spaces.

    Raises:
        InvalidInput: naming ``what`` and the characters to drop.
    """
    name = name.strip()
    if any(not c.isprintable() for c in name):
        raise InvalidInput(f"{what} must be one line of plain text without control characters")
    if len(name) > max_chars:
        raise InvalidInput(f"{what} must be at most {max_chars} characters, got {len(name)}")
    if _MARKUP.search(name):
        raise InvalidInput(f"{what} must be plain text: drop '<', '>', backticks and link brackets such as "
                           "'[text](url)'")
    return name


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Strip, drop empties and duplicates, keep order."""
    if isinstance(tags, str):
        tags = [tags]
    out: list[str] = []
    for t in tags:
        if not isinstance(t, str):
            raise InvalidInput(f"tags must be text, got {t!r}")
        t = check_name(t, what="a tag", max_chars=100)
        if t and t not in out:
            out.append(t)
    return out


def json_array_contains(session: Session, column: Any, value: str) -> sa.ColumnElement[bool]:
    """``value`` is an element of the JSON array in ``column`` (SQLite and PostgreSQL)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        elems = sa.func.json_array_elements_text(column).table_valued("value").alias("tag_elems")
        return sa.exists(sa.select(1).select_from(elems).where(elems.c.value == value))
    elems = sa.func.json_each(column).table_valued("value").alias("tag_elems")
    return sa.exists(sa.select(1).select_from(elems).where(elems.c.value == value))
