"""What every request of the API needs: the process's settings, engine and queue sender, and the caller.

Nothing is built at import time or when the app is created: :class:`Runtime` builds the settings,
one engine with its session factory, the artifact root and the queue sender on the first request
(or the app's startup, when it runs standalone) and keeps them for the process.

Each request is one unit of work (:class:`Caller`): its token is checked and its service calls run
in one transaction, with the token's member as the actor; a request that queues runs or jobs sends
their messages after the commit (:func:`worker.services.outbox.commit_then_publish`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from worker.errors import AuthenticationFailed
from worker.services import accounts, runtime
from worker.services.confinement import DataRoots
from worker.services.outbox import Queued, Sender, commit_then_publish
from worker.settings import Settings

__all__ = ["Runtime", "Built", "Caller", "caller", "NO_TOKEN", "DEFAULT_SEND"]

T = TypeVar("T")

#: The 401 message of a request without a bearer token.
NO_TOKEN = ("send your API token in the header 'Authorization: Bearer <token>'; an admin creates one with "
            "`segboard token create --member NAME`")

#: ``send=`` when none is given: a Celery sender over ``settings.redis_url``, or none without one.
DEFAULT_SEND: Any = object()

_bearer = HTTPBearer(auto_error=False, scheme_name="API token",
                     description="An API token: `segboard token create --member NAME` prints one.")


@dataclasses.dataclass(frozen=True)
class Built:
    """The parts of the process the API uses, built once."""

    settings: Settings
    factory: sessionmaker[Session]
    artifacts: runtime.Artifacts
    send: Sender | None
    roots: DataRoots


class Runtime:
    """Builds :class:`Built` on first use and keeps it; thread-safe.

    Args:
        settings: The settings to use; None reads them (``SEGBOARD_*`` variables or the settings file)
            on first use.
        factory: A session factory to use instead of one over a new engine (tests).
        send: The queue sender; by default one over ``settings.redis_url``, or none without a Redis
            URL (the reaper then publishes what the API queued).
    """

    def __init__(self, settings: Settings | None = None, *, factory: sessionmaker[Session] | None = None,
                 send: Sender | None | Any = DEFAULT_SEND) -> None:
        self._settings = settings
        self._factory = factory
        self._send = send
        self._built: Built | None = None
        self._owned_engine = factory is None
        self._lock = threading.Lock()

    def get(self) -> Built:
        """The built parts (built now on the first call).

        Raises:
            ValueError: a setting is invalid; the message names it.
        """
        built = self._built
        if built is not None:
            return built
        with self._lock:
            if self._built is None:
                self._built = self._build()
            return self._built

    def _build(self) -> Built:
        settings = self._settings if self._settings is not None else runtime.get_settings()
        factory = self._factory if self._factory is not None else runtime.session_factory(settings)
        send = self._send
        if send is DEFAULT_SEND:
            send = runtime.sender(runtime.queue_app(settings), factory) if settings.redis_url else None
        return Built(settings=settings, factory=factory, artifacts=runtime.artifacts(settings), send=send,
                     roots=DataRoots.from_settings(settings))

    def close(self) -> None:
        """Dispose of the engine this runtime built (not one passed in)."""
        with self._lock:
            built, self._built = self._built, None
        if built is not None and self._owned_engine:
            engine = built.factory.kw.get("bind")
            if engine is not None:
                engine.dispose()


# The web app's login cookie (webapp/auth.py sets it): the dashboard's download links reach the API with it.
LOGIN_COOKIE = "segboard_session"


class Caller:
    """One request's unit of work, acting as the member of its API token (or of the browser's web login;
    or, for reads in single-user mode, as nobody in particular)."""

    def __init__(self, built: Built, token: str = "", *, login: str = "") -> None:
        self.built = built
        self._token = token
        self._login = login

    def _actor(self, session: Session) -> int:
        if self._token:
            return accounts.authenticate_token(session, token=self._token).id
        if self._login:
            s = self.built.settings
            member = accounts.resolve_login(session, token=self._login, idle_minutes=s.session_idle_minutes,
                                            max_days=s.session_max_days)
            if member is None:
                raise AuthenticationFailed("your web login has ended; log in again (or send an API token)")
            return member.id
        return None  # type: ignore[return-value]  # a read in single-user mode: the system reads

    def run(self, work: Callable[[Session, int], T]) -> T:
        """``work(session, actor)`` in one transaction (the token is checked in it); commits when it succeeds."""
        with runtime.transaction(self.built.factory) as session:
            return work(session, self._actor(session))

    def submit(self, work: Callable[[Session, int], T], *, queued: Callable[[T], Queued]) -> tuple[T, str | None]:
        """``work(session, actor)`` in one transaction; after the commit, send the messages of what it queued.

        Returns:
            ``work``'s result, and None when the messages went out, else why not (the reaper sends them).
        """
        result, sent = commit_then_publish(self.built.factory, lambda s: work(s, self._actor(s)), queued=queued,
                                           send=self.built.send)
        return result, sent.problem


def _runtime(request: Request) -> Runtime:
    return request.app.state.segboard


def caller(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008 - FastAPI's dependency idiom
) -> Caller:
    """The dependency of every endpoint: the request's :class:`Caller`.

    Raises:
        AuthenticationFailed: no ``Authorization: Bearer`` header and no web login (in single-user mode,
            reads need neither); a wrong token fails in the unit of work.
    """
    built = _runtime(request).get()
    token = credentials.credentials.strip() if credentials is not None else ""
    if token:
        return Caller(built, token)
    login = request.cookies.get(LOGIN_COOKIE, "").strip()
    if login and built.settings.accounts_enabled and request.method == "GET":  # reads only: a cookie rides along
        return Caller(built, login=login)                                      # with requests other sites make
    if request.method == "GET" and not built.settings.accounts_enabled:
        return Caller(built)  # single-user mode (bound to 127.0.0.1): the dashboard's downloads read as the system
    raise AuthenticationFailed(NO_TOKEN)
