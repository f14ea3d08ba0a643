"""Sweeps: a search with a budget (Optuna) or an ablation grid, shown as one object.

A table of the searched values (grid axes) against the score, a parallel-coordinates plot of the
same, and the validation curves of its runs overlaid. A new sweep is created from a YAML spec
(docs/sweeps.md); its owner can queue waiting trials again or cancel it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import yaml

from webapp import resources, state
from webapp.components import links
from webapp.components.layout import empty_state, fmt_score, fmt_time, page_header, query_int
from webapp.errors import guard
from worker.services import runs, sweeps

__all__ = ["render", "points_frame", "parallel_coordinates", "overlaid_curves", "spec_template"]

PAGE = "sweeps"
MAX_CURVES = 40


def _k(name: str) -> str:
    return state.widget_key(PAGE, name)


# ------------------------------------------------------------------ figures (pure functions of read models)


def _shown(value: Any) -> Any:
    """A parameter value as a table cell: numbers and text as they are, anything else as compact YAML."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()


def points_frame(view: Any) -> pd.DataFrame:
    """One row per trial (or grid group): its parameter values, the score, its status and runs."""
    rows = []
    for p in view.points:
        row: dict[str, Any] = {"": p.label}
        row.update({name: _shown(p.params.get(name)) for name in view.params})
        row[view.metric] = p.score
        row["status"] = p.status
        row["runs"] = ", ".join(map(str, p.run_ids))
        rows.append(row)
    return pd.DataFrame(rows, columns=["", *view.params, view.metric, "status", "runs"])


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def parallel_coordinates(view: Any) -> go.Figure | None:
    """A parallel-coordinates plot: one axis per parameter and one for the score, a line per scored point
    (categorical values get one tick each); None when no point has a score yet."""
    points = [p for p in view.points if p.score is not None and math.isfinite(p.score)]
    if not points:
        return None
    dims = []
    for name in view.params:
        values = [_shown(p.params.get(name)) for p in points]
        if _numeric(values):
            dims.append({"label": name, "values": [float(v) for v in values]})
            continue
        labels = sorted({str(v) for v in values})
        code = {label: i for i, label in enumerate(labels)}
        dims.append({"label": name, "values": [code[str(v)] for v in values], "tickvals": list(range(len(labels))),
                     "ticktext": [t if len(t) <= 24 else t[:21] + "..." for t in labels]})
    scores = [p.score for p in points]
    dims.append({"label": view.metric, "values": scores})
    fig = go.Figure(go.Parcoords(
        line={"color": scores, "colorscale": "Viridis", "showscale": True,
              "reversescale": view.direction == "minimize"},
        dimensions=dims,
    ))
    fig.update_layout(height=380, margin={"l": 60, "r": 40, "t": 50, "b": 30})
    return fig


def overlaid_curves(curves: dict[str, Sequence[Any]], metric: str) -> go.Figure | None:
    """The validation ``metric`` per epoch of each run, overlaid; None when no run has an epoch yet."""
    fig = go.Figure()
    for label, epochs in curves.items():
        xs = [e.epoch for e in epochs if (e.val or {}).get(metric) is not None]
        ys = [e.val[metric] for e in epochs if (e.val or {}).get(metric) is not None]
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label))
    if not fig.data:
        return None
    fig.update_layout(height=360, xaxis_title="epoch", yaxis_title=f"validation {metric}",
                      margin={"l": 50, "r": 20, "t": 30, "b": 40}, legend={"font": {"size": 10}})
    return fig


# ------------------------------------------------------------------ the page


def spec_template(dataset: Any) -> str:
    """A starting sweep spec for a registered dataset: its base config and a small search space."""
    from webapp.app_pages.new_experiment import base_config

    spec = {
        "name": f"{dataset.name}-search",
        "config": base_config(dataset),
        "search": {"optimizer.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
                   "model.encoder": ["resnet18", "resnet34"]},
        "budget": 8,
        "parallelism": 2,
        "sampler": "tpe",
    }
    return yaml.safe_dump(spec, sort_keys=False)


def _create(datasets: list[Any]) -> None:
    by_id = {d.id: d for d in datasets}
    ds_id = st.selectbox("Dataset", list(by_id), key=_k("new_dataset"),
                         format_func=lambda i: f"{by_id[i].name} ({len(by_id[i].classes)} classes)")
    if st.session_state.get(_k("new_for")) != ds_id:
        st.session_state[_k("new_for")] = ds_id
        st.session_state[_k("new_spec")] = spec_template(by_id[ds_id])
    st.text_area("Sweep spec (YAML)", key=_k("new_spec"), height=360,
                 help="name, config, search (config path: {low, high, log} or a list of choices), budget, "
                      "parallelism, sampler (tpe or random), metric; see docs/sweeps.md")
    if not st.button("Create the sweep", type="primary", key=_k("create")):
        return
    from worker.services import confinement
    from worker.services.outbox import Queued

    with guard("Creating the sweep") as outcome:
        spec = yaml.safe_load(st.session_state.get(_k("new_spec")) or "")
        if not isinstance(spec, dict):
            raise ValueError("the spec must be a YAML mapping with name, config, search and budget")
        spec["dataset_id"] = ds_id
        sweep, problem = resources.submit(sweeps.create_sweep, spec=spec,
                                          roots=confinement.data_roots(resources.app_settings()),
                                          queued=lambda w: Queued.of(run_ids=w.queued_run_ids))
    if outcome.failed:
        return
    state.flash(f"Sweep {sweep.name}: {len(sweep.queued_run_ids)} trial run(s) queued of a budget of "
                f"{sweep.budget}.")
    if problem:
        state.flash(problem, "warning")
    st.query_params["sweep"] = str(sweep.id)
    st.rerun()


def _sweep_header(sweep: Any) -> None:
    ended = sum(t.state is not None for t in sweep.trials)
    c = st.columns(5)
    c[0].metric("Status", sweep.status.value)
    c[1].metric("Trials ended", f"{ended} / {sweep.budget}")
    c[2].metric("At once", sweep.parallelism)
    c[3].metric(f"Best {sweep.metric}", fmt_score(sweep.best_value),
                help=f"{sweep.direction}; trial {sweep.best_trial}" if sweep.best_trial is not None else None)
    c[4].metric("Sampler", str(sweep.spec.get("sampler", "tpe")))
    st.caption(f"Optuna study {sweep.study_name}, in the platform's database · created {fmt_time(sweep.created_at)}")
    if sweep.message:
        st.warning(sweep.message, icon=":material/hourglass:")
    from worker.services.outbox import Queued

    c = st.columns([1, 1, 4])
    if sweep.status.value == "running" and c[0].button("Queue waiting trials", key=_k(f"advance_{sweep.id}")):
        with guard("Queueing trials") as outcome:
            done, _ = resources.submit(sweeps.advance_sweep, sweep_id=sweep.id,
                                       queued=lambda w: Queued.of(run_ids=w.queued_run_ids))
        if not outcome.failed:
            state.flash(f"{len(done.queued_run_ids)} trial run(s) queued.")
            st.rerun()
    if sweep.status.value == "running" and c[1].button("Cancel the sweep", key=_k(f"cancel_{sweep.id}")):
        with guard("Cancelling the sweep") as outcome:
            resources.write(sweeps.cancel_sweep, sweep_id=sweep.id)
        if not outcome.failed:
            state.flash(f"Sweep {sweep.name} cancelled.")
            st.rerun()


def _show(view: Any) -> None:
    st.markdown(f"##### {'Trials' if view.kind == 'sweep' else 'Groups'}: values against {view.metric}")
    st.dataframe(points_frame(view), hide_index=True, width="stretch", key=_k("table"))
    fig = parallel_coordinates(view)
    if fig is None:
        st.caption("No score yet: the plot appears once a run has finished.")
    else:
        st.plotly_chart(fig, key=_k("parcoords"))
    st.markdown("##### Validation curves")
    run_ids = [(p.label, rid) for p in view.points for rid in p.run_ids][:MAX_CURVES]
    curves = {f"{label} · run {rid}": resources.read(runs.epoch_metrics, run_id=rid) for label, rid in run_ids}
    curve_fig = overlaid_curves(curves, view.metric)
    if curve_fig is None:
        st.caption("No epoch finished yet.")
    else:
        st.plotly_chart(curve_fig, key=_k("curves"))
    if run_ids:
        st.page_link(links.RUN_DETAIL, label="Open a run", icon=":material/monitoring:")


def _label(kind: str, obj: Any) -> str:
    if kind == "sweep":
        return f"search #{obj.id} · {obj.name} ({obj.status.value}, {len(obj.trials)}/{obj.budget} trials)"
    return f"grid · {obj.name} (experiment {obj.id}, {obj.expansion.axis})"


def render() -> None:
    """Draw the page."""
    page_header("Sweeps", "Searches with a budget and ablation grids as one object: values against the score.")
    datasets = resources.datasets()
    found = resources.read(sweeps.list_sweeps)
    grids = resources.read(sweeps.list_grid_experiments)
    with st.expander("New sweep", expanded=not found and not grids, icon=":material/add:"):
        if datasets:
            _create(datasets)
        else:
            empty_state("Register a dataset first: a sweep trains on a registered dataset.", page=links.DATASETS,
                        label="Register a dataset")
    objects = {("sweep", s.id): s for s in found} | {("grid", e.id): e for e in grids}
    if not objects:
        empty_state("No sweep or grid yet: create a sweep above, or queue an ablation grid.",
                    page=links.NEW_EXPERIMENT, label="New experiment")
        return
    keys = list(objects)
    wanted = ("sweep", query_int("sweep")) if query_int("sweep") else ("grid", query_int("grid"))
    index = keys.index(wanted) if wanted in objects else 0
    kind, object_id = st.selectbox("Sweep or grid", keys, index=index, key=_k("pick"),
                                   format_func=lambda key: _label(key[0], objects[key]))
    with guard("Reading the sweep"):
        if kind == "sweep":
            sweep = resources.read(sweeps.get_sweep, sweep_id=object_id)
            _sweep_header(sweep)
            view = resources.read(sweeps.sweep_view, sweep_id=object_id)
        else:
            view = resources.read(sweeps.grid_view, experiment_id=object_id)
        _show(view)


if __name__ == "__main__":
    render()
