"""Celery tasks: thin adapters that receive an id and call the runner.

Every task is safe to run twice: the runner's claim is one conditional UPDATE, so a redelivered
message (visibility timeout, a worker lost, a republish by the reaper) finds the run claimed,
finished or cancelled and does nothing. The logic lives in :mod:`worker.execution.runner` and
:mod:`worker.services.lifecycle`; training lives in segcore.
"""

from __future__ import annotations

import logging

from celery import shared_task

from worker.queue.celery_app import JOB_TASK, TRAIN_TASK

__all__ = ["train_run", "run_job"]

log = logging.getLogger(__name__)


@shared_task(name=TRAIN_TASK, bind=True, ignore_result=True)
def train_run(self, run_id: int) -> str:
    """Train run ``run_id`` on this worker process's device (a no-op if it is not queued)."""
    from worker.execution.process import current_context
    from worker.execution.runner import execute_run

    outcome = execute_run(current_context(self.app), run_id=int(run_id))
    log.info("run %s: %s", run_id, outcome.value)
    return outcome.value


@shared_task(name=JOB_TASK, bind=True, ignore_result=True)
def run_job(self, job_id: int) -> str:
    """Execute job ``job_id`` (predict, evaluate, ensemble, ...) (a no-op if it is not queued)."""
    from worker.execution.job_runner import execute_job
    from worker.execution.process import current_context

    outcome = execute_job(current_context(self.app), job_id=int(job_id))
    log.info("job %s: %s", job_id, outcome.value)
    return outcome.value
