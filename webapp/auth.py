"""Who is logged in: the login cookie or the OIDC identity, resolved to a member on every script run.

With accounts configured (``settings.auth`` other than ``none``, docs/access.md), the acting member
is the one a login resolves to, never a URL parameter or a widget:

- a local login is the ``segboard_session`` cookie set by ``POST /segboard/login``
  (:mod:`webapp.app`); :func:`worker.services.accounts.resolve_login` turns it into a member, or
  into None once it expired, was ended or was revoked (a password change revokes);
- an OIDC login is Streamlit's own ``st.login`` identity (``st.user``);
  :func:`worker.services.accounts.resolve_oidc_login` creates a viewer on a first login and says
  None once an admin revoked it or it expired, and the script then calls ``st.logout``.

The ASGI middleware in :mod:`webapp.app` turns unauthenticated page loads away before Streamlit
serves them; :func:`require_login` checks again on every script run, so a session whose login
ended meanwhile sees only a login notice. In single-user mode (``auth = "none"``) nobody logs in:
the sidebar's member picker chooses the acting member (session state only).

Example:
    >>> safe_next("https://evil.example/")
    '/'
    >>> safe_next("/queue?run=3")
    '/queue?run=3'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import streamlit as st

__all__ = [
    "SESSION_COOKIE",
    "LOGIN_PATH",
    "LOGOUT_PATH",
    "OIDC_LOGIN_PATH",
    "local_enabled",
    "oidc_enabled",
    "safe_next",
    "login_url",
    "oidc_claims",
    "resolve_member",
    "current_member",
    "require_login",
    "log_out",
]

# The cookie that carries a local login's token (HttpOnly; set and cleared by webapp.app only).
SESSION_COOKIE = "segboard_session"
LOGIN_PATH = "/segboard/login"
LOGOUT_PATH = "/segboard/logout"
OIDC_LOGIN_PATH = "/segboard/login/oidc"

# st.user keys that describe Streamlit's cookie, not the identity provider's claims.
_NOT_CLAIMS = frozenset({"is_logged_in", "provider", "origin", "tokens"})


def local_enabled(settings: Any) -> bool:
    """Whether SegBoard's own accounts (name and password) may log in."""
    return settings.auth in ("local", "local+oidc")


def oidc_enabled(settings: Any) -> bool:
    """Whether the organisation's OpenID Connect provider may log people in (``st.login``)."""
    return settings.auth in ("oidc", "local+oidc")


def safe_next(value: str | None) -> str:
    """Where to go after logging in: ``value`` when it is a path on this site, else ``/``.

    Only relative paths that start with one ``/`` pass: no scheme, no host, no ``//host`` or
    ``/\\host`` (which browsers read as another site), no control characters.
    """
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 32 or ord(c) == 127 or c == "\\" for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    if parts.path.startswith("/segboard/"):  # never back to the login or logout routes
        return "/"
    return value


def login_url(next_path: str | None = None) -> str:
    """The login page's URL, coming back to ``next_path`` (a path on this site) afterwards."""
    target = safe_next(next_path)
    return LOGIN_PATH if target == "/" else f"{LOGIN_PATH}?{urlencode({'next': target})}"


def oidc_claims(user: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The identity provider's claims from ``st.user`` (or a decoded Streamlit identity cookie).

    Returns:
        The claims without Streamlit's own keys; None when nobody is logged in through OIDC.
    """
    if not user or not user.get("is_logged_in", True) or not user.get("sub"):
        return None
    return {k: v for k, v in user.items() if k not in _NOT_CLAIMS}


def resolve_member(session: Any, settings: Any, *, token: str | None, claims: Mapping[str, Any] | None) -> Any:
    """The member a login cookie or an OIDC identity belongs to, or None.

    The one resolver of the web app: the ASGI middleware and the Streamlit script both call it.

    Args:
        session: A session; the caller commits (resolving a login records its last use).
        settings: The dashboard's settings (auth mode, idle and maximum login age, OIDC role map).
        token: The ``segboard_session`` cookie, if any.
        claims: The OIDC identity (:func:`oidc_claims`), if any.

    Returns:
        A ``MemberRead``, or None when neither is a live login.
    """
    from worker.errors import AuthenticationFailed
    from worker.services import accounts

    if token and local_enabled(settings):
        member = accounts.resolve_login(session, token=token, idle_minutes=settings.session_idle_minutes,
                                        max_days=settings.session_max_days)
        if member is not None:
            return member
    iat = (claims or {}).get("iat")
    if claims and oidc_enabled(settings) and isinstance(iat, (int, float)) and not isinstance(iat, bool):
        try:
            return accounts.resolve_oidc_login(
                session, subject=str(claims["sub"]), issued_at=iat, claims=dict(claims),
                role_claim=settings.oidc_role_claim, role_map=dict(settings.oidc_role_map),
                idle_minutes=settings.session_idle_minutes, max_days=settings.session_max_days,
            )
        except AuthenticationFailed:  # an identity without a usable subject is nobody
            return None
    return None


def _user() -> dict[str, Any]:
    try:
        return dict(st.user.to_dict())
    except Exception:  # noqa: BLE001 - no identity (no [auth] secrets, a test harness): nobody via OIDC
        return {}


def _cookie(name: str) -> str | None:
    value = st.context.cookies.get(name)
    return value if isinstance(value, str) and value else None


def current_member() -> Any:
    """The member this browser session is logged in as (resolved again on every call), or None.

    An OIDC identity that no longer resolves (revoked, expired) is logged out of Streamlit too.
    """
    from webapp import resources

    settings = resources.app_settings()
    token = _cookie(SESSION_COOKIE) if local_enabled(settings) else None
    claims = oidc_claims(_user()) if oidc_enabled(settings) else None
    if not token and not claims:
        return None
    with resources.transaction() as session:
        member = resolve_member(session, settings, token=token, claims=claims)
    if member is None and claims is not None:
        st.logout()
    return member


def _login_notice() -> None:
    st.title("SegBoard")
    st.info("You are not logged in, or your login has ended. Reload the page to reach the login page, "
            "or open it here.", icon=":material/lock:")
    st.link_button("Log in", LOGIN_PATH, type="primary")


def require_login() -> Any:
    """Resolve the acting member for this script run; without one, draw only a login notice and stop.

    In single-user mode this returns None and leaves the member to the sidebar's picker.

    Returns:
        The logged-in ``MemberRead`` (None in single-user mode).
    """
    from webapp import resources, state

    if not resources.app_settings().accounts_enabled:
        state.drop(state.LOGIN)
        return None
    member = current_member()
    if member is None:
        state.drop(state.LOGIN)
        state.set_actor_id(None)
        _login_notice()
        st.stop()
    state.put(state.LOGIN, member)
    state.set_actor_id(member.id)
    return member


def log_out() -> None:
    """End this browser's login: the local login ends in the database, the OIDC identity is
    logged out of Streamlit, and the browser goes back to the start (which shows the login page)."""
    from webapp import resources, state
    from worker.services import accounts

    token = _cookie(SESSION_COOKIE)
    if token:
        with resources.transaction() as session:
            accounts.end_login(session, token=token)
    state.drop(state.LOGIN)
    state.set_actor_id(None)
    st.logout()  # clears Streamlit's identity cookie and reloads the app; the middleware then sends the login page
    st.stop()
