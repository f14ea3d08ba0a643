"""The entry module for Celery's command line: ``celery -A worker.queue.celery_main worker``.

This is the one module that builds an app at import time, from the environment's settings
(``SEGBOARD_*`` variables or ``SEGBOARD_SETTINGS_FILE``), because ``-A`` needs a module-level app.
Without ``SEGBOARD_REDIS_URL`` it uses the Redis of a running ``segboard up`` of the same home.
Everything else calls :func:`worker.queue.celery_app.make_celery` with explicit settings; prefer
``segboard worker --gpus 0,1``, which does the same (``SEGBOARD_WORKER_DEVICES=0,1`` here).
"""

from __future__ import annotations

import os

from worker.execution.process import DEVICES_ENV, install_worker_hooks, parse_devices
from worker.queue.celery_app import make_celery
from worker.queue.embedded import embedded_broker_url
from worker.settings import get_settings

__all__ = ["app"]

_settings = get_settings()
app = make_celery(_settings, broker_url=_settings.redis_url or embedded_broker_url(_settings))
# one pool child per device: SEGBOARD_WORKER_DEVICES=0,1 (GPU indices) or cpu (the default)
app.conf.segboard_devices = parse_devices(os.environ.get(DEVICES_ENV))
app.conf.worker_concurrency = len(app.conf.segboard_devices)
install_worker_hooks(app)
