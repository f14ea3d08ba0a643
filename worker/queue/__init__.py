"""The queue: Celery app and tasks, publishing messages, the reaper, the embedded broker.

A message carries ids only; the database is the source of truth (:mod:`worker.services.lifecycle`).

- ``celery_app``: ``make_celery(settings)``, task names, priorities;
- ``celery_main``: the module ``celery -A worker.queue.celery_main`` loads;
- ``tasks``: the two thin tasks (train a run, execute a job);
- ``dispatch``: send the messages of committed queued runs and jobs, read the broker's queues;
- ``reaper``: re-publish lost messages, settle expired leases;
- ``embedded``: ``segboard up`` (a local Redis, worker and web app).
"""
