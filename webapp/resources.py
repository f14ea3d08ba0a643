"""The dashboard's access to the worker: cached settings and engine, service calls, cached queries.

Nothing here runs at import time. Settings come from :func:`worker.settings.get_settings` the first
time a page needs them and are kept with ``st.cache_resource`` together with the engine and its
session factory. Pages never open sessions themselves:

- :func:`read` runs one service function in its own read transaction;
- :func:`write` runs one service function as the acting member, commits, and clears the cached
  queries so the next run of any page sees the change;
- the query functions at the end (``members()``, ``queue_summary()``, ``leaderboard()``...) wrap the
  service reads that pages repeat on every rerun in ``st.cache_data`` with a short time to live
  (workers write progress behind the dashboard's back).

Example:
    >>> from worker.services import runs
    >>> run = read(runs.get_run, run_id=3)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import streamlit as st
from sqlalchemy.orm import Session, sessionmaker

from webapp import state
from worker.artifacts import Artifacts
from worker.settings import Settings, get_settings

__all__ = [
    "app_settings",
    "session_factory",
    "read",
    "write",
    "transaction",
    "unit_of_work",
    "publish",
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

log = logging.getLogger("webapp")

T = TypeVar("T")

# The cached query functions, cleared together after every write.
_CACHED: list[Any] = []


@st.cache_resource(show_spinner=False)
def _settings() -> Settings:
    return get_settings()


def app_settings() -> Settings:
    """The settings of this dashboard process (``SEGBOARD_*`` variables or the settings file).

    Raises:
        ValueError: a setting is invalid; the message names it.
    """
    return _settings()


@st.cache_resource(show_spinner=False)
def _factory(database_url: str, _settings: Settings) -> sessionmaker[Session]:
    from worker.db.session import make_engine, make_session_factory

    engine = make_engine(_settings, pool_pre_ping=True)
    return make_session_factory(engine)


@st.cache_resource(show_spinner=False)
def _artifacts(root: str, cache: str, options: str, _settings: Settings) -> Artifacts:
    return Artifacts.from_settings(_settings)


def artifacts() -> Artifacts:
    """The artifact root: stored locations are fetched through it when it is remote (s3://...)."""
    s = app_settings()
    return _artifacts(str(s.artifact_root), str(s.artifact_cache_dir), json.dumps(s.storage_options, sort_keys=True), s)


def session_factory() -> sessionmaker[Session]:
    """The session factory over the one engine of this process (built on first use)."""
    s = app_settings()
    return _factory(str(s.database_url), s)


def transaction() -> Any:
    """A ``session_scope`` over the dashboard's engine: commits when the block succeeds."""
    from worker.db.session import session_scope

    return session_scope(session_factory())


def read(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """Run the read-side service function ``fn(session, **kwargs)`` in its own transaction."""
    with transaction() as session:
        return fn(session, **kwargs)


def write(fn: Callable[..., T], /, *, with_actor: bool = True, **kwargs: Any) -> T:
    """Run the service function ``fn`` as the acting member, commit, and clear the cached queries.

    Args:
        fn: A write-side service function (``session`` first, keyword-only arguments).
        with_actor: Pass ``actor=`` (the member chosen in the sidebar); False for a function
            that takes no actor.
        **kwargs: The function's arguments.

    Returns:
        What ``fn`` returned (a read model), after the commit.
    """
    if with_actor:
        kwargs["actor"] = state.actor_id()
    with transaction() as session:
        result = fn(session, **kwargs)
    clear_cached_queries()
    return result


def publish(*, run_ids: Iterable[int] = (), job_ids: Iterable[int] = ()) -> str | None:
    """Send the queue messages of committed queued runs and jobs (commit first, then send).

    The database is the source of truth: a queued run whose message was not sent is published
    again by the reaper, so a broker that is down is reported, not fatal.

    Returns:
        None when the messages were sent, else a message saying why they were not and what happens.
    """
    run_ids, job_ids = list(run_ids), list(job_ids)
    if not run_ids and not job_ids:
        return None
    from worker import dispatch

    try:
        dispatch.publish(_celery(), session_factory(), run_ids=run_ids, job_ids=job_ids)
    except Exception as exc:  # noqa: BLE001 - the broker is a boundary; the reaper covers a lost message
        log.warning("publishing runs %s / jobs %s failed: %s", run_ids, job_ids, exc)
        return (
            f"Saved as queued, but the queue cannot be reached ({type(exc).__name__}: {exc}). "
            "Nothing is lost: the reaper publishes queued work again once Redis and a worker are up "
            "(`segboard up`, or set SEGBOARD_REDIS_URL)."
        )
    return None


@st.cache_resource(show_spinner=False)
def _celery_app(redis_url: str | None, _settings: Settings) -> Any:
    from worker.celery_app import make_celery

    return make_celery(_settings)


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


@cached(ttl=30)
def pseudo_rounds(dataset_id: int | None = None) -> list[Any]:
    """Pseudo-label rounds in creation order."""
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


@cached(ttl=10)
def correlation(dataset_id: int) -> Any:
    """How each validation metric kind tracks the public score on a dataset."""
    from worker.services import leaderboard as svc

    return read(svc.correlation, dataset_id=dataset_id)


class unit_of_work:  # noqa: N801 - used like a function: ``with unit_of_work() as (session, actor):``
    """Several service calls in one transaction as the acting member; cached queries cleared after commit.

    Example:
        >>> with unit_of_work() as (session, actor):  # doctest: +SKIP
        ...     sub = submissions.create_submission(session, actor=actor, run_id=3)
        ...     job = jobs.create_job(session, actor=actor, kind="submission", target={"submission_id": sub.id})
    """

    def __enter__(self) -> tuple[Session, int | None]:
        self._scope = transaction()
        session = self._scope.__enter__()
        return session, state.actor_id()

    def __exit__(self, *exc: Any) -> bool | None:
        try:
            return self._scope.__exit__(*exc)
        finally:
            if exc[0] is None:
                clear_cached_queries()
