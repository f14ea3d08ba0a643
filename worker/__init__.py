"""SegBoard's backend: persistence (SQLAlchemy + Alembic), the service layer and the job queue.

Nothing is built at import time: settings come from :func:`worker.settings.get_settings`,
engines from :func:`worker.db.session.make_engine`.
"""

__all__: list[str] = []
