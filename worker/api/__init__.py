"""SegBoard's HTTP API (FastAPI) over the service layer; the Python client talks to it (docs/client.md).

``segboard up`` and the compose web service serve it under ``/api`` of the web app, with its OpenAPI
page at ``/api/docs``. Each request authenticates with an API token (``Authorization: Bearer ...``),
runs its service calls in one transaction as the token's member, and answers service errors with
their HTTP status (:mod:`worker.api._errors`). Routers: ``_experiments`` (submit, datasets, me),
``_runs`` (runs, metrics, logs, cancel, requeue, store and checkpoint downloads), ``_results``
(leaderboard, predictions, jobs, submissions, public scores, ensembles).

Example:
    >>> from worker.api import create_app
    >>> app = create_app()  # reads the settings on the first request
"""

from worker.api._app import create_app

__all__ = ["create_app"]
