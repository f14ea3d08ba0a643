"""Queue: runs and jobs by status with cancel, requeue and priority; live per-epoch curves, log and ETA.

The live panel is an ``st.fragment`` that reruns on its own every few seconds, so the curves of a
training run move without rerunning the whole page.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from webapp import resources, state
from webapp.components import charts, links
from webapp.components.layout import empty_state, fmt_duration, fmt_time, member_names, page_header, query_int
from webapp.errors import guard

__all__ = ["render", "live_panel", "stale_workers"]

PAGE = "queue"
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def _k(name: str) -> str:
    return state.widget_key(PAGE, name)


def stale_workers(workers: list, running: list, *, now: dt.datetime | None = None) -> dict[str, str]:
    """Worker names that run something but are offline or silent, with a message per run.

    Args:
        workers: ``WorkerRead`` rows (the service already shows silent workers as offline).
        running: ``RunSummary`` rows of running runs.
        now: The time to measure silence against (UTC).

    Returns:
        ``{run name: message}`` for each running run whose worker disappeared.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    by_name = {w.name: w for w in workers}
    out = {}
    for r in running:
        if not r.worker_name:
            continue
        w = by_name.get(r.worker_name) or next((w for w in workers if r.worker_name.startswith(w.name)), None)
        if w is None:
            out[r.name] = (f"its worker {r.worker_name} never registered or was removed; the reaper requeues the "
                           "run when its lease expires, and it resumes from its last checkpoint")
        elif w.status.value == "offline":
            silent = (now - w.last_seen_at).total_seconds()
            out[r.name] = (f"its worker {w.name} has not been seen for {fmt_duration(silent)}; the reaper requeues "
                           "the run when its lease expires, and it resumes from its last checkpoint")
    return out


def _table(runs: list, names: dict) -> None:
    st.dataframe(
        pd.DataFrame(
            [
                {"id": r.id, "run": r.name, "status": r.status.value + (" (cancelling)" if r.cancel_requested and
                                                                       r.status.value == "running" else ""),
                 "priority": r.priority, "owner": names.get(r.owner_id, "?"), "model": f"{r.arch} / {r.encoder}",
                 "epoch": f"{r.current_epoch or 0}/{r.total_epochs or '?'}",
                 "img/s": r.images_per_s, "ETA": fmt_duration(r.eta_s) if r.status.value == "running" else "",
                 "worker": r.worker_name or "", "device": r.device or "", "attempt": r.attempt,
                 "workers lost": r.lost_count,
                 "queued": fmt_time(r.queued_at),
                 "error": (r.error_message or "").strip().split("\n")[0][:120],
                 "detail": links.page_url("run", run=r.id)}
                for r in runs
            ]
        ),
        hide_index=True, width="stretch", key=_k("runs"),
        column_config={"detail": st.column_config.LinkColumn(display_text="open"),
                       "img/s": st.column_config.NumberColumn(format="%.1f")},
    )


def _actions(run) -> None:
    from worker.services import lifecycle

    status = run.status.value
    c = st.columns([1, 1, 2])
    if c[0].button("Cancel", key=_k("cancel"), disabled=status not in ("queued", "running"),
                   help="A queued run is cancelled at once; a running one is stopped by its worker within seconds."):
        with guard(f"Cancelling run {run.id}") as outcome:
            after = resources.write(lifecycle.request_cancel, run_id=run.id)
        if not outcome.failed:
            state.flash(f"Run {run.id} " + ("cancelled." if after.value == "cancelled" else "is being stopped."))
            st.rerun()
    if c[1].button("Requeue", key=_k("requeue"), disabled=status not in ("failed", "cancelled"),
                   help="Run a failed or cancelled run again; it resumes from its last checkpoint."):
        with guard(f"Requeueing run {run.id}") as outcome:
            _, problem = resources.submit(lifecycle.requeue, run_id=run.id,
                                          queued=lambda _: resources.Queued(run_ids=(run.id,)))
        if not outcome.failed:
            state.flash(f"Run {run.id} is queued again.")
            if problem:
                state.flash(problem, "warning")
            st.rerun()
    with c[2]:
        p = st.number_input("Priority (0 lowest, 9 highest)", min_value=0, max_value=9, value=int(run.priority),
                            key=_k(f"priority_{run.id}"), disabled=status != "queued" and status != "running")
        if st.button("Set priority", key=_k("set_priority"), disabled=status not in ("queued", "running")):
            with guard(f"Changing the priority of run {run.id}") as outcome:
                _, problem = resources.submit(lifecycle.set_priority, run_id=run.id, priority=int(p),
                                              queued=lambda again: resources.Queued(run_ids=(run.id,) if again else ()))
            if not outcome.failed:
                state.flash(f"Run {run.id} now has priority {int(p)}.")
                if problem:
                    state.flash(problem, "warning")
                st.rerun()


def live_panel(run_id: int) -> None:
    """Progress, ETA, curves and the log tail of one run (the body of the auto-refreshing fragment)."""
    from worker.services import runs as svc

    with guard(f"Reading run {run_id}") as outcome:
        run = resources.read(svc.get_run, run_id=run_id)
        epochs = resources.read(svc.epoch_metrics, run_id=run_id)
        lines = resources.read(svc.run_logs, run_id=run_id, limit=500)
    if outcome.failed:
        return
    total = run.total_epochs or 0
    done = run.current_epoch or 0
    within = (run.epoch_progress or 0.0) if run.status.value == "running" else 0.0
    st.progress(min((done + within) / total, 1.0) if total else 0.0,
                text=f"{run.name}: {run.status.value}, epoch {done}/{total or '?'}"
                     + (f", ETA {fmt_duration(run.eta_s)}" if run.status.value == "running" else "")
                     + (f", {run.images_per_s:.1f} img/s" if run.images_per_s else ""))
    if epochs:
        st.plotly_chart(charts.training_curves(epochs, monitor=run.monitor_metric), key=_k(f"live_{run_id}"))
    else:
        st.caption("No epoch has finished yet.")
    if run.error_message:
        st.error(f"Failed: {run.error_message}")
    st.code("\n".join(f"{fmt_time(x.ts)} {x.level.value.upper():7s} {x.message}" for x in lines[-40:])
            or "(no log lines yet)", language="log")


def _jobs(names: dict) -> None:
    from worker.services import lifecycle

    jobs = resources.jobs(limit=100)
    if not jobs:
        st.caption("No prediction, submission, ensemble or pseudo-label job yet.")
        return
    st.dataframe(
        pd.DataFrame([{"job": j.id, "kind": j.kind.value, "status": j.status.value, "priority": j.priority,
                       "target": str(j.target),
                       "by": names.get(j.created_by, "?"), "worker": j.worker_name or "",
                       "queued": fmt_time(j.queued_at), "finished": fmt_time(j.finished_at),
                       "error": j.error_message or ""} for j in jobs]),
        hide_index=True, width="stretch", key=_k("jobs"),
    )
    ids = [j.id for j in jobs]
    by_id = {j.id: j for j in jobs}
    c = st.columns([2, 1, 1, 1])
    job_id = c[0].selectbox("Job", ids, key=_k("job"), format_func=lambda i: f"job {i} ({by_id[i].kind.value}, "
                            f"{by_id[i].status.value})")
    job = by_id[job_id]
    with c[3]:
        p = st.number_input("Job priority (0 lowest, 9 highest)", min_value=0, max_value=9, value=int(job.priority),
                            key=_k(f"job_priority_{job_id}"))
        if st.button("Set job priority", key=_k("set_job_priority"), disabled=job.status.value != "queued",
                     help="Only a job that still waits in the queue can be moved."):
            with guard(f"Changing the priority of job {job_id}") as outcome:
                _, problem = resources.submit(lifecycle.set_job_priority, job_id=job_id, priority=int(p),
                                              queued=lambda again: resources.Queued(job_ids=(job_id,) if again else ()))
            if not outcome.failed:
                state.flash(f"Job {job_id} now has priority {int(p)}.")
                if problem:
                    state.flash(problem, "warning")
                st.rerun()
    if c[1].button("Cancel job", key=_k("cancel_job"), disabled=job.status.value not in ("queued", "running")):
        with guard(f"Cancelling job {job_id}") as outcome:
            resources.write(lifecycle.request_cancel_job, job_id=job_id)
        if not outcome.failed:
            state.flash(f"Job {job_id} cancelled (or being stopped).")
            st.rerun()
    if c[2].button("Requeue job", key=_k("requeue_job"), disabled=job.status.value not in ("failed", "cancelled")):
        with guard(f"Requeueing job {job_id}") as outcome:
            _, problem = resources.submit(lifecycle.requeue_job, job_id=job_id,
                                          queued=lambda _: resources.Queued(job_ids=(job_id,)))
        if not outcome.failed:
            state.flash(f"Job {job_id} is queued again.")
            if problem:
                state.flash(problem, "warning")
            st.rerun()


def render() -> None:
    """Draw the page."""
    page_header("Queue", "Runs and jobs by status. Cancel, requeue, change priority; watch a run train live.")
    summary = resources.queue_summary()
    names = member_names(resources.members())
    c = st.columns(len(STATUSES) + 1)
    for col, s in zip(c, STATUSES, strict=False):
        col.metric(s.capitalize(), summary.runs_by_status.get(s, 0))
    c[-1].metric("Workers online", summary.workers_online)
    if sum(summary.runs_by_status.values()) == 0:
        empty_state("The queue is empty.", page=links.NEW_EXPERIMENT, label="Start an experiment")
    else:
        if summary.runs_by_status.get("queued") and summary.workers_online == 0:
            st.warning("Runs are queued but no worker is online: start one with `segboard worker` (or `segboard up`).")
        for name, msg in stale_workers(resources.workers(), list(summary.running)).items():
            st.warning(f"Run {name}: {msg}.", icon=":material/portable_wifi_off:")
        statuses = st.multiselect("Status", list(STATUSES), default=["queued", "running"], key=_k("status"))
        runs = resources.runs(status=tuple(statuses) or None, order="queue", limit=200)
        total = resources.count_runs(status=tuple(statuses) or None)
        st.caption(f"{len(runs)} of {total} runs" + (" (the first 200 in queue order)" if total > len(runs) else ""))
        if runs:
            auto = st.toggle("Refresh the table and the live panel every 5 s", value=True, key=_k("auto"))
            # the table refreshes with the live panel, so its img/s and epochs never lag the panel's
            st.fragment(lambda: _table(resources.runs(status=tuple(statuses) or None, order="queue", limit=200),
                                       names), run_every=5 if auto else None)()
            by_id = {r.id: r for r in runs}
            wanted = query_int("run")
            ids = list(by_id)
            index = ids.index(wanted) if wanted in by_id else 0
            run_id = st.selectbox("Run", ids, index=index, key=_k("run"),
                                  format_func=lambda i: f"{i}: {by_id[i].name} ({by_id[i].status.value})")
            _actions(by_id[run_id])
            st.fragment(live_panel, run_every=5 if auto else None)(run_id)
        else:
            st.info("No run has these statuses; pick others above (finished runs are on the Leaderboard).")
    st.subheader("Other jobs")
    _jobs(names)


if __name__ == "__main__":
    render()
