"""The FastAPI app: its routers, error answers and the runtime it builds on first use."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from worker.api import _experiments, _files, _results, _runs
from worker.api._context import DEFAULT_SEND, Runtime
from worker.api._errors import install_handlers
from worker.settings import Settings

__all__ = ["create_app"]

_DESCRIPTION = """\
SegBoard's HTTP API: submit experiments, follow runs, read metrics and the leaderboard, download
probability stores and checkpoints, enter public scores, make submissions and ensembles.

Every request sends an API token, `Authorization: Bearer <token>` (an admin creates one with
`segboard token create --member NAME`), and acts as its member, with that member's role. The Python
client, `worker.client.Client`, wraps these endpoints (docs/client.md).
"""


def create_app(
    settings: Settings | None = None,
    *,
    session_factory: sessionmaker[Session] | None = None,
    send: Any = DEFAULT_SEND,
) -> FastAPI:
    """Build the API app. Nothing is read or connected until the first request.

    Mounted under ``/api`` of the web app (``webapp/app.py``), which ``segboard up`` and compose serve;
    its OpenAPI page is then ``/api/docs``.

    Args:
        settings: The settings; None reads them (``SEGBOARD_*`` variables or the settings file) on
            the first request.
        session_factory: Use this session factory rather than one over a new engine (tests).
        send: The queue sender (:data:`worker.services.outbox.Sender`), or None for no queue; by
            default one over ``settings.redis_url`` when it is set.

    Example:
        >>> from fastapi.testclient import TestClient  # doctest: +SKIP
        >>> client = TestClient(create_app(get_settings(home=tmp)))  # doctest: +SKIP
        >>> client.get("/runs", headers={"Authorization": f"Bearer {token}"}).json()  # doctest: +SKIP
        []
    """
    runtime = Runtime(settings, factory=session_factory, send=send)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # served on its own: dispose of the engine at shutdown (mounted in the web app, no lifespan runs)
        try:
            yield None
        finally:
            runtime.close()

    app = FastAPI(title="SegBoard API", version="1", description=_DESCRIPTION, docs_url="/docs",
                  redoc_url=None, openapi_url="/openapi.json", lifespan=lifespan)
    app.state.segboard = runtime
    install_handlers(app)
    for module in (_experiments, _runs, _results, _files):
        app.include_router(module.router)
    return app
