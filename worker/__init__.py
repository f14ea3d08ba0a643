"""SegBoard's backend: persistence (SQLAlchemy + Alembic), the service layer and the job queue.

- ``db/``: models, sessions, migrations;
- ``services/``: the only way the web app, the CLI and the tasks read or write the database;
- ``queue/``: the Celery app and tasks, publishing, the reaper, the embedded broker;
- ``execution/``: what a worker process does with a claimed run or job;
- ``cli``: the ``segboard`` command.

Nothing is built at import time: settings come from :func:`worker.settings.get_settings`,
engines from :func:`worker.db.session.make_engine`.
"""

__all__: list[str] = []
