"""Optuna's RDB storage on the caller's session, and the study of a sweep (used by :mod:`worker.services.sweeps`).

Optuna's tables live in the platform's database (created on first use, left out of Alembic's
autogenerate). The storage runs on the session's own connection and each of Optuna's commits is a
savepoint: what a sweep tells and asks commits with the caller's transaction, or not at all, and
a SQLite writer never waits on a second connection of its own.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from worker.db.models import Sweep
from worker.schemas import SweepSpec

__all__ = ["study_storage", "load_study", "distributions"]


@functools.cache
def _joined_storage_class() -> type:
    from optuna.storages import RDBStorage
    from sqlalchemy import orm

    class JoinedRDBStorage(RDBStorage):  # type: ignore[misc]  # optuna ships no stubs
        """Optuna's RDB storage on an open connection: each of its commits is a savepoint of the caller's
        transaction. Optuna's version bookkeeping is skipped; its tables are created (if missing) on
        the same connection."""

        def __init__(self, connection: sa.Connection) -> None:
            self.engine_kwargs: dict[str, Any] = {}
            self.url = connection.engine.url.render_as_string(hide_password=False)
            self.skip_compatibility_check = True
            self.heartbeat_interval = None
            self.grace_period = None
            self.heartbeat_stale_trial_callback = None
            self.failed_trial_callback = None
            self.engine = connection.engine
            self.scoped_session = orm.scoped_session(
                orm.sessionmaker(bind=connection, join_transaction_mode="create_savepoint"))

    return JoinedRDBStorage


def study_storage(session: Session) -> Any:
    """Optuna's RDB storage on ``session``'s connection, creating Optuna's tables if they are missing.

    Optuna's writes join the session's transaction: the caller commits them. Call after the
    transaction wrote something (SQLite starts its transaction at the first write).
    """
    from optuna.storages._rdb import models as optuna_models

    connection = session.connection()
    if not sa.inspect(connection).has_table("trial_values"):  # one query, not one per table, on later calls
        optuna_models.BaseModel.metadata.create_all(connection, checkfirst=True)
    return _joined_storage_class()(connection)


def distributions(spec: SweepSpec) -> dict[str, Any]:
    """The spec's search space as Optuna distributions, keyed by config path."""
    from optuna import distributions as d

    out: dict[str, Any] = {}
    for path, p in spec.search.items():
        if p.type == "categorical":
            out[path] = d.CategoricalDistribution(list(p.choices or []))
        elif p.type == "int":
            out[path] = d.IntDistribution(int(p.low or 0), int(p.high or 0), log=p.log, step=int(p.step or 1))
        else:
            out[path] = d.FloatDistribution(float(p.low or 0), float(p.high or 0), log=p.log, step=p.step)
    return out


def load_study(session: Session, sweep: Sweep, spec: SweepSpec, asked: int) -> Any:
    """The sweep's study, with a sampler seeded from the spec's seed and the trials asked so far (a new
    sampler per transaction must not repeat the last one's draws)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = spec.seed * 100_003 + asked
    sampler = (optuna.samplers.RandomSampler(seed=seed) if spec.sampler == "random" else
               optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                          n_startup_trials=max(2, min(10, spec.budget // 3))))
    return optuna.load_study(study_name=sweep.study_name, storage=study_storage(session), sampler=sampler)
