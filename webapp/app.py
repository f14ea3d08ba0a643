"""The dashboard's server: Streamlit's ASGI app with SegBoard's login routes and a login check.

Run with ``streamlit run webapp/app.py`` (``segboard up`` does; ``streamlit run`` finds the ``app``
below and serves it with uvicorn). The Streamlit script is :mod:`webapp.streamlit_app`. What this
adds, with accounts configured (docs/access.md):

- ``GET /segboard/login``: a small server-rendered login page (name, password; with OIDC also
  "Log in with <provider>", which starts Streamlit's own ``st.login`` flow);
- ``POST /segboard/login``: checks the password, starts a login and sets the ``segboard_session``
  cookie (HttpOnly, SameSite=Lax, Secure over https), then goes to ``next`` (a path on this site);
- ``GET|POST /segboard/logout``: ends the login, clears the cookie, back to the login page;
- a middleware that sends every page load without a live login to the login page, so an
  unauthenticated browser sees nothing else. Streamlit's assets, its WebSocket, health and OIDC
  routes pass; the script checks the login again on every run (:func:`webapp.auth.require_login`).

In single-user mode (``auth = "none"``) the routes send visitors to the dashboard, and the app
refuses to start on an address other than loopback (:meth:`worker.settings.Settings.check_web_host`).

The ``app`` object has to be built at import time: that is how ``streamlit run`` discovers it. It
reads no settings then; those are read on the first request, through :mod:`webapp.resources`.
"""

from __future__ import annotations

import contextlib
import html
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from webapp import auth
from worker.api import create_app as create_api

__all__ = ["app", "LoginRequired", "login_page", "log_in", "log_out", "oidc_start", "routes"]

log = logging.getLogger("webapp")

SCRIPT = Path(__file__).resolve().with_name("streamlit_app.py")
# Streamlit's own cookie with the OIDC identity (signed with [auth] cookie_secret).
_STREAMLIT_USER_COOKIE = "_streamlit_user"
# What an unauthenticated browser may still load: Streamlit's assets, WebSocket, health and OIDC
# routes, and the login routes themselves. Everything else is a page.
# The HTTP API under /api checks its own API tokens (docs/client.md).
_OPEN_PREFIXES = ("/_stcore/", "/static/", "/media/", "/component/", "/app/static/", "/auth/", "/segboard/",
                  "/api/")
_OPEN_PATHS = frozenset({"/oauth2callback", "/favicon.png", "/manifest.json", "/robots.txt"})
_WRONG = "wrong name or password"
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _resources() -> Any:
    # imported on first use: webapp.resources declares Streamlit caches, which belong to the runtime
    from webapp import resources

    return resources


def _settings() -> Any:
    return _resources().app_settings()


def _is_open(path: str) -> bool:
    return path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES)


def _streamlit_identity(request: Request) -> dict[str, Any] | None:
    """The OIDC identity in Streamlit's signed cookie (set by its ``/oauth2callback``), if valid."""
    if _STREAMLIT_USER_COOKIE not in request.cookies:
        return None
    import json

    try:  # Streamlit's reader of its own (signed, possibly chunked) identity cookie
        from streamlit.web.server.starlette.starlette_websocket import _get_signed_cookie_with_chunks
    except ImportError:  # another Streamlit layout: the script still resolves st.user
        return None
    raw = _get_signed_cookie_with_chunks(dict(request.cookies), _STREAMLIT_USER_COOKIE)
    if not raw:
        return None
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _identify(request: Request) -> Any:
    """The member of this request's login cookie or OIDC identity; None without a live login."""
    settings = _settings()
    token = request.cookies.get(auth.SESSION_COOKIE) if auth.local_enabled(settings) else None
    claims = auth.oidc_claims(_streamlit_identity(request)) if auth.oidc_enabled(settings) else None
    if not token and not claims:
        return None
    with _resources().transaction() as session:
        return auth.resolve_member(session, settings, token=token, claims=claims)


class LoginRequired:
    """ASGI middleware: a page request without a live login goes to the login page (303).

    GET and HEAD requests are redirected with ``next`` set to the page asked for; other methods
    get 401. WebSockets and the open paths pass (the script checks the login on every run).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        settings = await run_in_threadpool(_settings)
        if not settings.accounts_enabled:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if await run_in_threadpool(_identify, request) is not None:
            await self.app(scope, receive, send)
            return
        response: Response
        if request.method in ("GET", "HEAD"):
            query = request.url.query
            target = request.url.path + (f"?{query}" if query else "")
            response = RedirectResponse(auth.login_url(target), status_code=303, headers={"Cache-Control": "no-store"})
        else:
            response = PlainTextResponse("log in first: /segboard/login", status_code=401)
        await response(scope, receive, send)


# ------------------------------------------------------------------ the login page


def _oidc_provider() -> str | None:
    """The OIDC provider's name for the login page (its metadata host), or None when not configured."""
    try:
        section = st.secrets.get("auth")
    except Exception:  # noqa: BLE001 - no or unreadable secrets.toml: OIDC is not configured
        return None
    if not section or not section.get("server_metadata_url"):
        return None
    return urlsplit(str(section["server_metadata_url"])).hostname or "your organisation"


def _page(*, next_path: str, error: str | None, local: bool, provider: str | None, note: str | None = None) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'><title>Log in · SegBoard</title>",
        "<style>body{font-family:system-ui,sans-serif;background:#f6f7f9;margin:0}"
        "main{max-width:22rem;margin:12vh auto;background:#fff;padding:2rem;border-radius:.5rem;"
        "box-shadow:0 1px 4px #0002}h1{margin-top:0;font-size:1.5rem}label{display:block;margin:.8rem 0 .2rem}"
        "input{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}"
        "button,a.oidc{display:block;width:100%;box-sizing:border-box;margin-top:1.2rem;padding:.6rem;"
        "font-size:1rem;text-align:center;border-radius:.3rem;border:1px solid #ff4b4b;cursor:pointer}"
        "button{background:#ff4b4b;color:#fff}a.oidc{color:#ff4b4b;text-decoration:none;background:#fff}"
        ".error{color:#b00020;margin:.8rem 0 0}.note{color:#555}</style></head><body><main>",
        "<h1>SegBoard</h1>",
    ]
    if error:
        parts.append(f"<p class='error' role='alert'>{e(error)}</p>")
    if note:
        parts.append(f"<p class='note'>{e(note)}</p>")
    if local:
        parts.append(
            f"<form method='post' action='{auth.LOGIN_PATH}'>"
            "<label for='name'>Name</label>"
            "<input id='name' name='name' autocomplete='username' required autofocus maxlength='100'>"
            "<label for='password'>Password</label>"
            "<input id='password' name='password' type='password' autocomplete='current-password' required "
            "maxlength='1024'>"
            f"<input type='hidden' name='next' value='{e(next_path, quote=True)}'>"
            "<button type='submit'>Log in</button></form>"
        )
    if provider:
        parts.append(f"<a class='oidc' href='{auth.OIDC_LOGIN_PATH}'>Log in with {e(provider)}</a>")
    parts.append("</main></body></html>")
    return "".join(parts)


def _render(*, next_path: str, error: str | None = None, status: int = 200, note: str | None = None) -> HTMLResponse:
    settings = _settings()
    provider = _oidc_provider() if auth.oidc_enabled(settings) else None
    if auth.oidc_enabled(settings) and provider is None and not auth.local_enabled(settings):
        note = note or ("OIDC login is not configured yet: an administrator adds the [auth] section to "
                        ".streamlit/secrets.toml (docs/access.md).")
    body = _page(next_path=next_path, error=error, local=auth.local_enabled(settings), provider=provider, note=note)
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


async def login_page(request: Request) -> Response:
    """``GET /segboard/login``: the login form (the dashboard itself for someone logged in already)."""
    settings = await run_in_threadpool(_settings)
    next_path = auth.safe_next(request.query_params.get("next"))
    if not settings.accounts_enabled or await run_in_threadpool(_identify, request) is not None:
        return RedirectResponse(next_path, status_code=303)
    return _render(next_path=next_path)


def _same_origin(request: Request) -> bool:
    """Whether a form post comes from this site (browsers send Origin on POST; none is accepted)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", "")


def _is_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


async def _form(request: Request) -> dict[str, str]:
    """The login form's fields (URL-encoded, as the page posts them; at most 16 KiB)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > 16384:
            return {}
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    except ValueError:  # more fields than the form has
        return {}
    return {k: v[0] for k, v in fields.items() if v}


def _password_login(name: str, password: str) -> str:
    from worker.services import accounts

    with _resources().transaction() as session:  # one transaction: the check and the new login
        member = accounts.authenticate_password(session, name=name, password=password)
        return accounts.start_login(session, member_id=member.id, method="password")


async def log_in(request: Request) -> Response:
    """``POST /segboard/login``: name and password; sets the login cookie and goes to ``next``."""
    from worker.errors import AuthenticationFailed, InvalidInput

    settings = await run_in_threadpool(_settings)
    form = await _form(request)
    next_path = auth.safe_next(form.get("next"))
    if not settings.accounts_enabled:
        return RedirectResponse(next_path, status_code=303)
    if not auth.local_enabled(settings):
        return _render(next_path=next_path, status=403,
                       error="password logins are off here: log in through your organisation")
    if not _same_origin(request):
        return _render(next_path=next_path, status=403, error="this login form was sent from another site")
    name, password = form.get("name", "")[:200], form.get("password", "")[:2048]
    try:
        token = await run_in_threadpool(_password_login, name, password)
    except (AuthenticationFailed, InvalidInput):
        return _render(next_path=next_path, error=_WRONG, status=401)
    response = RedirectResponse(next_path, status_code=303, headers={"Cache-Control": "no-store"})
    response.set_cookie(auth.SESSION_COOKIE, token, max_age=settings.session_max_days * 86400, path="/",
                        secure=_is_https(request), httponly=True, samesite="lax")
    return response


def _end_login(token: str) -> None:
    from worker.services import accounts

    with _resources().transaction() as session:
        accounts.end_login(session, token=token)


async def log_out(request: Request) -> Response:
    """``GET|POST /segboard/logout``: end the login, clear the cookie, back to the login page.

    An OIDC identity goes on through Streamlit's ``/auth/logout`` (which clears its cookie).
    """
    token = request.cookies.get(auth.SESSION_COOKIE)
    if token:
        await run_in_threadpool(_end_login, token)
    target = "/auth/logout" if _STREAMLIT_USER_COOKIE in request.cookies else auth.LOGIN_PATH
    response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
    response.delete_cookie(auth.SESSION_COOKIE, path="/", secure=_is_https(request), httponly=True, samesite="lax")
    return response


async def oidc_start(request: Request) -> Response:
    """``GET /segboard/login/oidc``: start Streamlit's OIDC flow (what ``st.login()`` does)."""
    settings = await run_in_threadpool(_settings)
    if not auth.oidc_enabled(settings):
        return RedirectResponse(auth.LOGIN_PATH, status_code=303)
    from streamlit.errors import StreamlitAuthError
    from streamlit.user_info import generate_login_redirect_url

    try:
        from streamlit.auth_util import validate_auth_credentials

        validate_auth_credentials("default")
        url = generate_login_redirect_url("default")
    except (StreamlitAuthError, ImportError) as exc:
        log.warning("OIDC login is not configured: %s", exc)
        return _render(next_path="/", status=503,
                       error="OIDC login is not configured on this server: an administrator adds the [auth] "
                             "section to .streamlit/secrets.toml (docs/access.md)")
    return RedirectResponse(url, status_code=303)


def routes() -> list[Route]:
    """The login routes (under ``/segboard/``, outside Streamlit's reserved prefixes)."""
    return [
        Route(auth.LOGIN_PATH, login_page, methods=["GET"]),
        Route(auth.LOGIN_PATH, log_in, methods=["POST"]),
        Route(auth.OIDC_LOGIN_PATH, oidc_start, methods=["GET"]),
        Route(auth.LOGOUT_PATH, log_out, methods=["GET", "POST"]),
    ]


@contextlib.asynccontextmanager
async def _lifespan(_app: Any) -> AsyncIterator[None]:
    """Fail fast: invalid settings, or single-user mode on an address other than loopback."""
    from streamlit import config

    settings = await run_in_threadpool(_settings)
    settings.check_web_host(config.get_option("server.address"))
    yield None


# The HTTP API (worker.api, docs/client.md) at /api, its OpenAPI page at /api/docs; it reads its
# settings on its first request.
app = st.App(str(SCRIPT), routes=[*routes(), Mount("/api", app=create_api())], middleware=[Middleware(LoginRequired)],
             lifespan=_lifespan)
