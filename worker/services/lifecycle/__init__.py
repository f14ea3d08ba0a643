"""State transitions of runs and jobs: the queue's source of truth.

Every function takes the session first and the rest keyword-only; none commits (the caller owns
the transaction). What a person does (cancel, requeue, priority) is written to the audit log with
the optional ``actor``; what workers and the reaper do is written to the run's log. A run moves
``queued -> running -> succeeded | failed | cancelled``; ``requeue`` puts a failed or cancelled run
back to ``queued``, and the reaper puts a running run whose lease
expired back to ``queued`` (it resumes from its last checkpoint).

Exclusive execution rests on two rules:

1. :func:`claim_run` is one conditional ``UPDATE ... WHERE status='queued' AND NOT
   cancel_requested``: of any number of deliveries of the same message, one claims the run and
   the others are no-ops.
2. A claim is identified by ``(worker_name, claimed_at)``, the *claim token*. The holder renews
   its lease with :func:`heartbeat`; every later write of the holder is conditioned on the token,
   so a process that lost its lease (the reaper gave the run to someone else) can no longer
   change the run, and learns so from the next heartbeat.

Example:
    >>> with session_scope(factory) as s:
    ...     token = claim_run(s, run_id=7, worker_name="box1/cuda:0", device="cuda:0", lease_s=30)
    >>> token is not None   # False for a second delivery of the same run
    True

The package's parts: ``_claims`` (claims, leases, endings), ``_progress`` (what a training
reports), ``_control`` (cancel, requeue, priority), ``_publication`` (publication and the reaper),
``_base`` (the claim token and shared helpers).
"""

from __future__ import annotations

from worker.services.lifecycle._base import (
    ClaimToken,
    LeaseState,
    Outgoing,
)
from worker.services.lifecycle._claims import (
    claim_job,
    claim_run,
    fail_job,
    fail_run,
    finish_job,
    finish_run,
    heartbeat,
    heartbeat_job,
    mark_cancelled,
    mark_job_cancelled,
    release,
)
from worker.services.lifecycle._control import (
    request_cancel,
    request_cancel_job,
    requeue,
    requeue_job,
    set_job_priority,
    set_priority,
)
from worker.services.lifecycle._progress import (
    record_checkpoint,
    record_epoch,
    record_log,
    record_progress,
    start_training,
)
from worker.services.lifecycle._publication import (
    MAX_WORKERS_LOST,
    pending_publication,
    publish_queued,
    publish_queued_jobs,
    reap,
    reap_jobs,
    requeue_dead_worker,
)

__all__ = [
    "MAX_WORKERS_LOST",
    "ClaimToken",
    "LeaseState",
    "Outgoing",
    "claim_run",
    "claim_job",
    "heartbeat",
    "heartbeat_job",
    "record_epoch",
    "record_progress",
    "start_training",
    "record_log",
    "record_checkpoint",
    "finish_run",
    "finish_job",
    "fail_run",
    "fail_job",
    "mark_cancelled",
    "mark_job_cancelled",
    "release",
    "request_cancel",
    "request_cancel_job",
    "requeue",
    "requeue_job",
    "set_priority",
    "set_job_priority",
    "publish_queued",
    "publish_queued_jobs",
    "pending_publication",
    "reap",
    "reap_jobs",
    "requeue_dead_worker",
]
