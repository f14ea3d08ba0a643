"""Every ``st.session_state`` key the dashboard uses, and the small accessors around them.

Pages never spell a session-state key themselves: they call these functions, so a key is named
in exactly one place and two pages cannot collide on one by accident. Widget keys are built with
:func:`widget_key` (``"<page>.<name>"``), which keeps them out of the names below.

Example:
    >>> widget_key("leaderboard", "dataset")
    'leaderboard.dataset'
"""

from __future__ import annotations

from typing import Any

import streamlit as st

__all__ = [
    "ACTOR",
    "LOGIN",
    "FLASH",
    "EXPERIMENT_DRAFT",
    "EXPERIMENT_ERRORS",
    "CLONE_SOURCE",
    "ENSEMBLE_MEMBERS",
    "ENSEMBLE_CANDIDATE",
    "PSEUDO_PREVIEW",
    "widget_key",
    "actor_id",
    "set_actor_id",
    "flash",
    "pop_flashes",
    "get",
    "put",
    "drop",
]

# The acting team member's id: the logged-in member's, resolved on every script run (webapp.auth), or
# in single-user mode the one picked in the sidebar. Never taken from the URL.
ACTOR = "segboard.actor_id"
# The logged-in member (a MemberRead) of this script run; absent in single-user mode.
LOGIN = "segboard.login"
# Messages to show once, after the rerun that follows a write: list of (level, text).
FLASH = "segboard.flash"
# The experiment being edited on the New experiment page: a config dict shared by the form and the YAML tab.
EXPERIMENT_DRAFT = "segboard.experiment.draft"
# Validation problems of the last submitted draft: {dotted field path: message}.
EXPERIMENT_ERRORS = "segboard.experiment.errors"
# A run to clone, handed from a run's page to the New experiment page (consumed there once).
CLONE_SOURCE = "segboard.experiment.clone_source"
# Leaderboard rows picked for the ensemble builder: list of {"kind", "id"}.
ENSEMBLE_MEMBERS = "segboard.ensemble.members"
# The last candidate ensemble scored on the builder (its inputs and scores).
ENSEMBLE_CANDIDATE = "segboard.ensemble.candidate"
# The last pseudo-label preview report (its inputs and report).
PSEUDO_PREVIEW = "segboard.pseudo.preview"


def widget_key(page: str, name: str) -> str:
    """The session-state key of a widget ``name`` on ``page``."""
    return f"{page}.{name}"


def get(key: str, default: Any = None) -> Any:
    """The value stored under ``key`` (one of this module's constants), or ``default``."""
    return st.session_state.get(key, default)


def put(key: str, value: Any) -> None:
    """Store ``value`` under ``key`` (one of this module's constants)."""
    st.session_state[key] = value


def drop(*keys: str) -> None:
    """Forget the values under ``keys``; missing keys are ignored."""
    for key in keys:
        st.session_state.pop(key, None)


def actor_id() -> int | None:
    """The acting member's id, or None when nobody is logged in (or, single-user, picked yet).

    Only :func:`webapp.auth.require_login` (from the login) and the single-user member picker set
    it; a URL never does.
    """
    value = st.session_state.get(ACTOR)
    return int(value) if value is not None else None


def set_actor_id(member_id: int | None) -> None:
    """Make ``member_id`` the acting member (the login's member, or the single-user pick)."""
    st.session_state[ACTOR] = member_id


def flash(text: str, level: str = "success") -> None:
    """Queue a message for the next run of the page (after ``st.rerun``).

    Args:
        text: The message.
        level: ``success``, ``info``, ``warning`` or ``error``.
    """
    st.session_state.setdefault(FLASH, []).append((level, text))


def pop_flashes() -> list[tuple[str, str]]:
    """The queued messages, oldest first; the queue is emptied."""
    return st.session_state.pop(FLASH, None) or []
