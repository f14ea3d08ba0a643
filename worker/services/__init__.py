"""The service layer: the only way the web app, the CLI and the tasks read or write the database.

One module per concept. Every function is keyword-only after the ``Session``; the caller owns
the transaction (functions flush, never commit); every write takes ``actor`` (the acting
member's id, None for the system) and records an audit event; results are pydantic read models
from :mod:`worker.schemas`.

Example:
    >>> from worker.db.session import make_engine, make_session_factory, session_scope
    >>> from worker.services import experiments
    >>> factory = make_session_factory(make_engine(settings))
    >>> with session_scope(factory) as session:
    ...     exp = experiments.create_experiment(session, actor=1, config=cfg, n_folds=5)
    >>> # after commit: publish exp.run_ids to the queue
"""

from worker.services import (
    audit,
    candidates,
    datasets,
    ensembles,
    experiments,
    groups,
    inspection,
    jobs,
    leaderboard,
    members,
    probabilities,
    pseudo,
    public_scores,
    runs,
    submissions,
    workers,
)

__all__ = [
    "audit",
    "datasets",
    "ensembles",
    "experiments",
    "candidates",
    "groups",
    "inspection",
    "jobs",
    "leaderboard",
    "members",
    "probabilities",
    "pseudo",
    "public_scores",
    "runs",
    "submissions",
    "workers",
]
