"""Page furniture shared by every page: the title with pending messages, empty states, formatting."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import streamlit as st

from webapp import state

__all__ = ["page_header", "empty_state", "fmt_score", "fmt_duration", "fmt_time", "member_names", "query_int"]


def page_header(title: str, caption: str | None = None) -> None:
    """The page title, its caption, and the messages queued by the last write (see ``state.flash``)."""
    st.title(title)
    if caption:
        st.caption(caption)
    for level, text in state.pop_flashes():
        getattr(st, level, st.info)(text)


def empty_state(message: str, *, page: str | None = None, label: str | None = None) -> None:
    """A friendly note for an empty list, with a link to where the user can fill it."""
    st.info(message, icon=":material/info:")
    if page and label:
        st.page_link(page, label=label, icon=":material/arrow_forward:")


def fmt_score(x: float | None, digits: int = 4) -> str:
    """A score with ``digits`` decimals, or an en dash for none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def fmt_duration(seconds: float | None) -> str:
    """``1h 05m``, ``3m 20s`` or ``12s``; an en dash for none."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)) or seconds < 0:
        return "–"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def fmt_time(t: dt.datetime | None) -> str:
    """A UTC time as ``2026-11-23 10:47``."""
    return t.strftime("%Y-%m-%d %H:%M") if t else "–"


def member_names(members: list[Any]) -> dict[int | None, str]:
    """Member id -> name (None -> "system")."""
    out: dict[int | None, str] = {m.id: m.name for m in members}
    out[None] = "system"
    return out


def query_int(name: str) -> int | None:
    """An integer query parameter (``?run=3``), or None when absent or not a number."""
    raw = st.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(str(raw))
    except ValueError:
        return None
