"""Execution: what a worker process does with a claimed run or job.

- ``context``: ``WorkerContext`` (settings, database, name, device) and ``LeaseKeeper`` (heartbeats);
- ``runner``: ``execute_run``: claim, train with progress callbacks, record the end;
- ``job_runner``: ``execute_job``: claim a job and run its handler;
- ``handlers``: one handler per job kind (predict, evaluate, ensemble, pseudo, submission);
- ``process``: worker processes, one per device, and their hooks.
"""
