"""Run detail: config and its diff against the parent, curves, per-class metrics, artifacts,
"make submission" (queued), and the public leaderboard scores of the run's submissions.

Opened with ``?run=<id>`` (or ``?group=<id>`` for a fold/seed group).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
import yaml

from webapp import resources, state
from webapp.components import charts, links
from webapp.components.downloads import artifact_files, file_picker
from webapp.components.layout import fmt_duration, fmt_score, fmt_time, member_names, page_header, query_int
from webapp.components.notifications import render_experiment_hooks
from webapp.components.storage import render_disk_line
from webapp.components.submissions import render_submissions
from webapp.components.tables import data_policy_frame, per_class_frame
from webapp.errors import guard

__all__ = ["render"]

PAGE = "run_detail"


def _k(name: str) -> str:
    return state.widget_key(PAGE, name)


def _pick_run() -> int | None:
    st.caption("Open a run from the leaderboard or the queue, or type its id.")
    value = st.number_input("Run id", min_value=1, step=1, value=None, key=_k("pick"))
    return int(value) if value is not None else None


def _header(run, names: dict) -> None:
    c = st.columns(6)
    c[0].metric("Status", run.status.value)
    c[1].metric(f"Best {run.monitor_metric}", fmt_score(run.monitor_value))
    c[2].metric("Epoch", f"{run.current_epoch or 0}/{run.total_epochs or '?'}")
    c[3].metric("Model", f"{run.arch}")
    c[4].metric("Fold / seed", f"{'-' if run.fold is None else run.fold} / {run.seed}")
    c[5].metric("Owner", names.get(run.owner_id, "?"))
    st.caption(
        f"Encoder {run.encoder} · worker {run.worker_name or '–'} on {run.device or '–'} · attempt {run.attempt} · "
        f"queued {fmt_time(run.queued_at)} · started {fmt_time(run.started_at)} · finished {fmt_time(run.finished_at)}"
        + (f" · ETA {fmt_duration(run.eta_s)}" if run.status.value == "running" else "")
    )
    if run.error_message:
        st.error(f"The run failed: {run.error_message}")
    c = st.columns(4)
    with c[0]:
        links.link_inspect(run=run.id)
    if c[1].button("Clone into a new experiment", key=_k("clone")):
        state.put(state.CLONE_SOURCE, run.id)
        st.switch_page(links.NEW_EXPERIMENT)
    if run.group_id is not None:
        c[2].page_link(links.RUN_DETAIL, label=f"Its fold/seed group {run.group_id}",
                       query_params={"group": str(run.group_id)})
    if run.parent_run_id is not None:
        with c[3]:
            links.link_run(run.parent_run_id, label=f"Parent run {run.parent_run_id}")


def _data_policy(run, classes: list[str]) -> None:
    """How the run chose its training crop (and class weights), from its data_policy.json; nothing without one."""
    from worker.services import runs as svc

    with guard("Reading the run's data policy"):
        policy = resources.read(svc.data_policy, run_id=run.id, artifacts=resources.artifacts())
        if policy is None:
            return
        st.markdown("##### Data policy")
        st.markdown(f"Training crop, {policy.crop_rule} "
                    f"(from {policy.num_train_images} training image(s); validation on whole images)")
        frame = data_policy_frame(classes, policy)
        if len(frame.columns) > 1:
            with st.expander("Per class: pixel share and weights"):
                st.dataframe(frame, hide_index=True, width="stretch", key=_k("data_policy"),
                             column_config={"pixel share": st.column_config.NumberColumn(format="%.4f"),
                                            "crop weight": st.column_config.NumberColumn(format="%.3f"),
                                            "loss weight": st.column_config.NumberColumn(format="%.3f")})


def _curves(run) -> None:
    from worker.services import runs as svc

    epochs = resources.read(svc.epoch_metrics, run_id=run.id)
    if not epochs:
        st.info("No epoch has finished yet.")
        return
    st.plotly_chart(charts.training_curves(epochs, monitor=run.monitor_metric), key=_k("curves"))
    usage = charts.resource_usage(epochs)
    if usage is not None:
        st.plotly_chart(usage, key=_k("resources"))


def _per_class(run, classes: list[str]) -> None:
    frame = per_class_frame(classes, run.best_metrics)
    if frame.shape[1] <= 1:
        st.info("No per-class metrics yet (they arrive with the first validation).")
        return
    st.dataframe(frame, hide_index=True, width="stretch", key=_k("per_class"),
                 column_config={c: st.column_config.NumberColumn(format="%.4f") for c in frame.columns[1:]})
    st.plotly_chart(charts.per_class_metrics(classes, {k: frame[k].tolist() for k in frame.columns[1:]}),
                    key=_k("per_class_chart"))


def _config(run) -> None:
    from worker.services import runs as svc

    left, right = st.columns(2)
    with left:
        st.markdown("**Config**")
        st.code(yaml.safe_dump(run.config, sort_keys=False), language="yaml")
    with right:
        other = st.number_input("Compare with run id (default: the parent)", min_value=1, step=1, value=None,
                                key=_k("compare"))
        with guard("Comparing the configs"):
            changes = resources.read(svc.config_diff, run_id=run.id, other_run_id=int(other) if other else None)
            base = int(other) if other else run.parent_run_id
            if base is None:
                st.caption("This run has no parent; type a run id to compare with.")
            elif not changes:
                st.success(f"Same config as run {base}.")
            else:
                st.markdown(f"**Changes from run {base}**")
                st.dataframe(
                    pd.DataFrame([{"field": c.path, f"run {base}": repr(c.old), f"run {run.id}": repr(c.new)}
                                  for c in changes]),
                    hide_index=True, width="stretch", key=_k("diff"),
                )


def _artifacts(run) -> None:
    locations = {"run folder": run.artifact_dir, "checkpoint": run.checkpoint_dir, "validation predictions":
                 run.val_store, "test predictions": run.test_store}
    st.dataframe(pd.DataFrame([{"artifact": k, "location": v or "–"} for k, v in locations.items()]),
                 hide_index=True, width="stretch", key=_k("locations"))
    streamed = {label: path for label, path, there in (
        ("checkpoint (zip)", f"runs/{run.id}/checkpoint", run.checkpoint_dir),
        ("validation predictions (zip)", f"runs/{run.id}/store?split=val", run.val_store),
        ("test predictions (zip)", f"runs/{run.id}/store?split=test", run.test_store)) if there}
    file_picker(artifact_files(run.artifact_dir), streamed, key=_k("file"))


def _logs(run) -> None:
    from worker.services import runs as svc

    lines = resources.read(svc.run_logs, run_id=run.id, limit=500)
    if not lines:
        st.caption("No log lines yet.")
        return
    st.code("\n".join(f"{fmt_time(line.ts)} {line.level.value.upper():7s} {line.message}" for line in lines[-300:]),
            language="log")


def _render_run(run_id: int) -> None:
    from worker.services import datasets, runs

    with guard(f"Loading run {run_id}") as outcome:
        run = resources.read(runs.get_run, run_id=run_id)
    if outcome.failed:
        st.page_link(links.LEADERBOARD, label="Back to the leaderboard", icon=":material/arrow_back:")
        return
    st.subheader(run.name)
    names = member_names(resources.members())
    _header(run, names)
    render_disk_line("run", run.id, page=PAGE)
    classes = list(run.config.get("data", {}).get("classes") or [])
    if run.dataset_id is not None:
        with guard("Loading the dataset"):
            classes = resources.read(datasets.get_dataset, dataset_id=run.dataset_id).classes
    _data_policy(run, classes)
    render_experiment_hooks(run.experiment_id)
    # only the open tab runs (Streamlit's lazy tabs); it survives the rerun after a write
    tabs = st.tabs(["Curves", "Per-class metrics", "Config", "Artifacts", "Submissions", "Log"], key=_k("tabs"),
                   on_change="rerun")
    sections = [lambda: _curves(run), lambda: _per_class(run, classes), lambda: _config(run),
                lambda: _artifacts(run),
                lambda: render_submissions(run_id=run.id, test_store=run.test_store, names=names),
                lambda: _logs(run)]
    for tab, section in zip(tabs, sections):
        if tab.open:
            with tab:
                section()


def _render_group(group_id: int) -> None:
    from worker.services import groups

    with guard(f"Loading group {group_id}") as outcome:
        group = resources.read(groups.get_group, group_id=group_id)
    if outcome.failed:
        st.page_link(links.LEADERBOARD, label="Back to the leaderboard", icon=":material/arrow_back:")
        return
    st.subheader(f"Group {group.id}: {group.label}")
    c = st.columns(4)
    c[0].metric("Runs", len(group.run_ids))
    c[1].metric(f"OOF {group.monitor_metric}", fmt_score(group.oof_score))
    stat = group.metrics.get(group.monitor_metric)
    c[2].metric(f"Mean {group.monitor_metric}", fmt_score(stat.mean if stat else None))
    c[3].metric("Std", fmt_score(stat.std if stat else None))
    st.caption("Status: " + ", ".join(f"{n} {s}" for s, n in group.status_counts.items()))
    render_experiment_hooks(group.experiment_id)
    render_disk_line("group", group.id, page=PAGE)
    st.dataframe(
        pd.DataFrame([{"metric": k, "mean": s.mean, "std": s.std, "runs": s.n} for k, s in group.metrics.items()]),
        hide_index=True, width="stretch", key=_k("group_metrics"),
        column_config={"mean": st.column_config.NumberColumn(format="%.4f"),
                       "std": st.column_config.NumberColumn(format="%.4f")},
    )
    rows = resources.runs(group_id=group.id, order="oldest", limit=500)
    st.dataframe(
        pd.DataFrame([{"run": r.name, "status": r.status.value, "fold": r.fold, "seed": r.seed,
                       r.monitor_metric if rows else "val": r.monitor_value, "detail": links.page_url("run", run=r.id)}
                      for r in rows]),
        hide_index=True, width="stretch", key=_k("group_runs"),
        column_config={"detail": st.column_config.LinkColumn(display_text="open")},
    )
    if st.button("Use this group in an ensemble", key=_k("group_to_ensemble")):
        members = list(state.get(state.ENSEMBLE_MEMBERS) or [])
        if {"kind": "group", "id": group.id} not in members:
            members.append({"kind": "group", "id": group.id})
        state.put(state.ENSEMBLE_MEMBERS, members)
        st.switch_page(links.ENSEMBLE_BUILDER)
    st.markdown("#### Files")
    file_picker([], {label: path for label, path, there in (
        ("out-of-fold predictions (zip)", f"stores/group/{group.id}?split=val", group.oof_store),
        ("test predictions (zip)", f"stores/group/{group.id}?split=test", group.test_store)) if there},
        key=_k("group_file"))
    st.markdown("#### Submissions")
    render_submissions(group_id=group.id, test_store=group.test_store, names=member_names(resources.members()))


def render() -> None:
    """Draw the page."""
    page_header("Run detail")
    group_id = query_int("group")
    if group_id is not None:
        _render_group(group_id)
        return
    run_id = query_int("run") or _pick_run()
    if run_id is None:
        return
    _render_run(run_id)


if __name__ == "__main__":
    render()
