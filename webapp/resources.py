"""The dashboard's access to the worker: cached settings and engine, service calls, cached queries.

Nothing here runs at import time. Settings come from :func:`worker.settings.get_settings` the first
time a page needs them and are kept with ``st.cache_resource`` together with the engine and its
session factory. Pages never open sessions themselves:

- :func:`read` runs one service function in its own read transaction;
- :func:`write` runs one service function as the acting member (:func:`acting_member`: the
  logged-in one, never a URL parameter; a write without one is refused), commits, and clears the cached
  queries so the next run of any page sees the change;
- :func:`submit` does the same for a function that queues runs or jobs, and sends their messages
  after the commit (:func:`submit_unit` for several calls in one transaction);
- the query functions at the end (``members()``, ``queue_summary()``, ``leaderboard()``...) wrap the
  service reads that pages repeat on every rerun in ``st.cache_data`` with a short time to live
  (workers write progress behind the dashboard's back).

Example:
    >>> from worker.services import runs
    >>> run = read(runs.get_run, run_id=3)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st
from sqlalchemy.orm import Session, sessionmaker

from webapp import state
from worker.services import runtime
from worker.services.outbox import Queued
from worker.services.runtime import Artifacts, Settings

__all__ = [
    "app_settings",
    "acting_member",
    "session_factory",
    "read",
    "write",
    "transaction",
    "submit",
    "submit_unit",
    "Queued",
    "cached",
    "clear_cached_queries",
    "reset",
    "members",
    "datasets",
    "queue_summary",
    "workers",
    "runs",
    "count_runs",
    "jobs",
    "recent_events",
    "ensembles",
    "groups",
    "pseudo_rounds",
    "leaderboard",
    "correlation",
]

T = TypeVar("T")

# The cached query functions, cleared together after every write.
_CACHED: list[Any] = []


@st.cache_resource(show_spinner=False)
def _settings() -> Settings:
    return runtime.get_settings()


def app_settings() -> Settings:
    """The settings of this dashboard process (``SEGBOARD_*`` variables or the settings file).

    Raises:
        ValueError: a setting is invalid; the message names it.
    """
    return _settings()


@st.cache_resource(show_spinner=False)
def _factory(database_url: str, _settings: Settings) -> sessionmaker[Session]:
    return runtime.session_factory(_settings)


@st.cache_resource(show_spinner=False)
def _artifacts(root: str, cache: str, options: str, _settings: Settings) -> Artifacts:
    return runtime.artifacts(_settings)


def artifacts() -> Artifacts:
    """The artifact root: stored locations are fetched through it when it is remote (s3://...)."""
    s = app_settings()
    return _artifacts(str(s.artifact_root), str(s.artifact_cache_dir), json.dumps(s.storage_options, sort_keys=True), s)


def session_factory() -> sessionmaker[Session]:
    """The session factory over the one engine of this process (built on first use)."""
    s = app_settings()
    return _factory(str(s.database_url), s)


def transaction() -> Any:
    """One transaction over the dashboard's engine: commits when the block succeeds."""
    return runtime.transaction(session_factory())


def acting_member() -> int:
    """The id of the member every write of this session is recorded under.

    It is the logged-in member's (:func:`webapp.auth.require_login` sets it on every script run),
    or in single-user mode the one picked in the sidebar; never a URL parameter.

    Raises:
        PermissionDenied: nobody is acting; a write without an actor would run as the system.
    """
    from worker.errors import PermissionDenied

    actor = state.actor_id()
    if actor is None:
        raise PermissionDenied("nobody is acting: log in again (in single-user mode, pick or add a member in the "
                               "sidebar) and retry")
    return actor


def read(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """Run the read-side service function ``fn(session, **kwargs)`` in its own transaction."""
    with transaction() as session:
        return fn(session, **kwargs)


def write(fn: Callable[..., T], /, *, with_actor: bool = True, **kwargs: Any) -> T:
    """Run the service function ``fn`` as the acting member, commit, and clear the cached queries.

    Args:
        fn: A write-side service function (``session`` first, keyword-only arguments).
        with_actor: Pass ``actor=`` (the logged-in member, or the one picked in single-user mode);
            False for a function that takes no actor or is given one explicitly.
        **kwargs: The function's arguments.

    Returns:
        What ``fn`` returned (a read model), after the commit.

    Raises:
        PermissionDenied: nobody is acting (not logged in, or no member picked in single-user mode).
    """
    if with_actor:
        kwargs["actor"] = acting_member()
    with transaction() as session:
        result = fn(session, **kwargs)
    clear_cached_queries()
    return result


def submit(fn: Callable[..., T], /, *, queued: Callable[[T], Queued], **kwargs: Any) -> tuple[T, str | None]:
    """Run the service function ``fn`` as the acting member, commit, then send what it queued.

    Args:
        fn: A write-side service function (``session`` first, ``actor``, keyword-only arguments).
        queued: What its result queued, e.g. ``lambda job: Queued(job_ids=(job.id,))``.
        **kwargs: The function's arguments.

    Returns:
        ``fn``'s result, and None when the messages were sent, else why not (the reaper sends them).
    """
    return submit_unit(lambda session, actor: fn(session, actor=actor, **kwargs), queued=queued)


def submit_unit(work: Callable[[Session, int | None], T], /, *, queued: Callable[[T], Queued]) -> tuple[T, str | None]:
    """Several service calls ``work(session, actor)`` in one transaction; commit, then send what they queued.

    The one "commit, then publish" (:func:`worker.services.outbox.commit_then_publish`); cached
    queries are cleared after the commit.
    """
    from worker.services.outbox import commit_then_publish

    actor = acting_member()
    try:
        result, sent = commit_then_publish(session_factory(), lambda session: work(session, actor), queued=queued,
                                           send=_send)
    finally:
        clear_cached_queries()
    return result, sent.problem


def _send(queued: Queued) -> int:
    return runtime.sender(_celery(), session_factory())(queued)


@st.cache_resource(show_spinner=False)
def _celery_app(redis_url: str | None, _settings: Settings) -> Any:
    return runtime.queue_app(_settings)


def _celery() -> Any:
    """The Celery app used only to send messages (built on first use, kept for the process)."""
    s = app_settings()
    return _celery_app(s.redis_url, s)


def cached(ttl: float) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """``st.cache_data`` with a time to live, registered so that :func:`write` clears it.

    Args:
        ttl: Seconds a result stays fresh (workers change runs without the dashboard knowing).
    """

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        wrapped = st.cache_data(ttl=ttl, show_spinner=False, max_entries=256)(fn)
        _CACHED.append(wrapped)
        return wrapped

    return wrap


def clear_cached_queries() -> None:
    """Forget every cached query result (after a write)."""
    for fn in _CACHED:
        fn.clear()


def reset() -> None:
    """Forget the cached settings, engine and queries (tests; a changed environment)."""
    clear_cached_queries()
    _celery_app.clear()
    _factory.clear()
    _settings.clear()
    _artifacts.clear()


# ---------------------------------------------------------------------------------------------
# Cached queries. Arguments are plain values (they form the cache key); results are read models.


@cached(ttl=60)
def members() -> list[Any]:
    """Every team member, by name."""
    from worker.services import members as svc

    return read(svc.list_members)


@cached(ttl=60)
def datasets() -> list[Any]:
    """Every registered dataset, by name."""
    from worker.services import datasets as svc

    return read(svc.list_datasets)


@cached(ttl=5)
def queue_summary(limit: int = 50) -> Any:
    """Run and job counts by status, the running and next queued runs, workers online."""
    from worker.services import runs as svc

    return read(svc.queue_summary, limit=limit)


@cached(ttl=5)
def workers() -> list[Any]:
    """Every worker as last seen (silent ones shown offline)."""
    from worker.services import workers as svc

    return read(svc.list_workers)


@cached(ttl=5)
def runs(**filters: Any) -> list[Any]:
    """Run rows filtered like :func:`worker.services.runs.list_runs`."""
    from worker.services import runs as svc

    return read(svc.list_runs, **filters)


@cached(ttl=5)
def count_runs(**filters: Any) -> int:
    """How many runs match the filters."""
    from worker.services import runs as svc

    return read(svc.count_runs, **filters)


@cached(ttl=5)
def jobs(limit: int = 100, status: tuple[str, ...] | None = None) -> list[Any]:
    """Jobs, newest first."""
    from worker.services import jobs as svc

    return read(svc.list_jobs, status=list(status) if status else None, limit=limit)


@cached(ttl=10)
def recent_events(limit: int = 30) -> list[Any]:
    """The newest audit events."""
    from worker.services import audit as svc

    return read(svc.list_events, limit=limit)


@cached(ttl=30)
def ensembles(dataset_id: int | None = None) -> list[Any]:
    """Ensembles, best validation score first."""
    from worker.services import ensembles as svc

    return read(svc.list_ensembles, dataset_id=dataset_id)


@cached(ttl=30)
def groups(dataset_id: int | None = None, experiment_id: int | None = None) -> list[Any]:
    """Run groups, newest first."""
    from worker.services import groups as svc

    return read(svc.list_groups, dataset_id=dataset_id, experiment_id=experiment_id)


def pseudo_rounds(dataset_id: int | None = None) -> list[Any]:
    """Pseudo-label rounds in creation order, read afresh on every run: their jobs finish behind the
    dashboard's back, and a round whose dataset was just written must offer its students at once."""
    from worker.services import pseudo as svc

    return read(svc.list_pseudo_rounds, dataset_id=dataset_id)


@cached(ttl=10)
def leaderboard(
    dataset_id: int | None = None,
    owner_id: int | None = None,
    arch: str | None = None,
    tag: str | None = None,
    kinds: tuple[str, ...] = ("run", "group", "ensemble", "student"),
    sort: str = "val",
    descending: bool = True,
    limit: int = 200,
    offset: int = 0,
) -> list[Any]:
    """Leaderboard rows (see :func:`worker.services.leaderboard.leaderboard`)."""
    from worker.services import leaderboard as svc

    return read(svc.leaderboard, dataset_id=dataset_id, owner_id=owner_id, arch=arch, tag=tag, kinds=list(kinds),
                sort=sort, descending=descending, limit=limit, offset=offset)


@cached(ttl=60)
def run_tags(dataset_id: int | None = None) -> list[str]:
    """Every tag on a run (of the dataset), for tag pickers."""
    from worker.services import runs as svc

    return read(svc.run_tags, dataset_id=dataset_id)


@cached(ttl=60)
def crop_preview(dataset_id: int, sections: str) -> str:
    """What ``data.crop_size`` comes to on a dataset; ``sections``: the config's data and model as JSON."""
    from worker.services import datasets as svc

    return read(svc.preview_crop, dataset_id=dataset_id, config=json.loads(sections))


@cached(ttl=10)
def correlation(dataset_id: int) -> Any:
    """How each validation metric kind tracks the public score on a dataset."""
    from worker.services import public_scores

    return read(public_scores.correlation, dataset_id=dataset_id)
