"""Overview: what is running and queued, the workers and their devices, the best runs, recent activity."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from webapp import resources
from webapp.components import links
from webapp.components.layout import empty_state, fmt_duration, fmt_score, fmt_time, member_names, page_header

__all__ = ["render", "run_rows"]


def run_rows(runs: list, names: dict) -> pd.DataFrame:
    """Queue rows of running or queued runs as a table."""
    return pd.DataFrame(
        [
            {
                "id": r.id,
                "run": r.name,
                "status": r.status.value,
                "owner": names.get(r.owner_id, "?"),
                "model": f"{r.arch} / {r.encoder}",
                "epoch": f"{r.current_epoch or 0}/{r.total_epochs or '?'}",
                "worker": r.worker_name or "",
                "device": r.device or "",
                "ETA": fmt_duration(r.eta_s),
                "priority": r.priority,
            }
            for r in runs
        ]
    )


def _best_per_dataset(datasets: list) -> None:
    st.subheader("Best per dataset")
    if not datasets:
        empty_state("No dataset registered yet.", page=links.DATASETS, label="Register a dataset")
        return
    for ds in datasets:
        rows = resources.leaderboard(dataset_id=ds.id, limit=3)
        st.markdown(f"**{ds.name}**")
        if not rows:
            st.caption("No finished run yet.")
            continue
        st.dataframe(
            pd.DataFrame(
                [
                    {"kind": r.kind.value, "name": r.name, "monitor": r.monitor_metric, "val": fmt_score(r.val_score),
                     "public": fmt_score(r.public_score)}
                    for r in rows
                ]
            ),
            hide_index=True,
            width="stretch",
        )


def render() -> None:
    """Draw the page."""
    page_header("Overview", "The team's queue, workers and best results at a glance.")
    summary = resources.queue_summary()
    names = member_names(resources.members())
    c = st.columns(5)
    c[0].metric("Running", summary.runs_by_status.get("running", 0))
    c[1].metric("Queued", summary.runs_by_status.get("queued", 0))
    c[2].metric("Succeeded", summary.runs_by_status.get("succeeded", 0))
    c[3].metric("Failed", summary.runs_by_status.get("failed", 0))
    c[4].metric("Workers online", summary.workers_online)

    left, right = st.columns([3, 2])
    with left:
        st.subheader("Running and queued")
        active = list(summary.running) + list(summary.queued)
        if active:
            st.dataframe(run_rows(active, names), hide_index=True, width="stretch")
            st.page_link(links.QUEUE, label="Open the queue", icon=":material/queue:")
        else:
            empty_state("Nothing is running or queued.", page=links.NEW_EXPERIMENT, label="Start an experiment")
        jobs_active = {k: v for k, v in summary.jobs_by_status.items() if k in ("queued", "running") and v}
        if jobs_active:
            st.caption("Other jobs: " + ", ".join(f"{v} {k}" for k, v in jobs_active.items()))
        _best_per_dataset(resources.datasets())
    with right:
        st.subheader("Workers")
        workers = resources.workers()
        if workers:
            st.dataframe(
                pd.DataFrame(
                    [
                        {"worker": w.name, "status": w.status.value,
                         "devices": ", ".join(str(d) for d in w.devices) or "cpu",
                         "current run": w.current_run_id or "", "last seen": fmt_time(w.last_seen_at)}
                        for w in workers
                    ]
                ),
                hide_index=True,
                width="stretch",
            )
        else:
            st.info("No worker has reported yet. Start one with `segboard worker` (or `segboard up`).")
        st.subheader("Recent activity")
        events = resources.recent_events(limit=20)
        if events:
            st.dataframe(
                pd.DataFrame(
                    [
                        {"when": fmt_time(e.ts), "who": names.get(e.actor_id, "?"), "action": e.action,
                         "object": f"{e.object_kind} {e.object_id or ''}".strip()}
                        for e in events
                    ]
                ),
                hide_index=True,
                width="stretch",
            )
        else:
            st.caption("Nothing has happened yet.")


if __name__ == "__main__":
    render()
