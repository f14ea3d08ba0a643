"""Leaderboard: runs, fold/seed groups, ensembles and pseudo-label students in one table.

A column per validation metric kind, the public score and the val-public gap; the CV-vs-public
scatter with Pearson and Spearman per metric kind; a flag where the public score rose while the
validation score fell; filters; metric definitions one click away; one click from a row to its
detail, to Inspect, or into the ensemble builder.
"""

from __future__ import annotations

import streamlit as st

from segcore import catalog
from webapp import resources, state
from webapp.components import charts, links
from webapp.components.layout import empty_state, member_names, page_header
from webapp.components.tables import METRIC_COLUMNS, correlation_frame, leaderboard_frame, row_key, row_label
from webapp.errors import guard

__all__ = ["render"]

PAGE = "leaderboard"
_KINDS = ("run", "group", "ensemble", "student")
_SORTS = ("val", *METRIC_COLUMNS, "public", "gap", "created_at")
ALL = "All"


def _k(name: str) -> str:
    return state.widget_key(PAGE, name)


def _metric_definitions() -> None:
    with st.popover("Metric definitions", icon=":material/help:"):
        for name, text in catalog.METRICS.items():
            st.markdown(f"**{name}**: {text}")
        st.caption("Longer definitions with formulas: docs/metrics.md in the repository.")


def _filters(datasets: list, members: list) -> dict:
    c = st.columns([2, 2, 2, 2, 3])
    ds_names = {d.id: d.name for d in datasets}
    ds_ids = [None, *ds_names]
    default_ds = 1 if len(datasets) == 1 else 0
    dataset_id = c[0].selectbox("Dataset", ds_ids, index=default_ds, key=_k("dataset"),
                                format_func=lambda i: ALL if i is None else ds_names[i])
    owners = {m.id: m.name for m in members}
    owner_id = c[1].selectbox("Owner", [None, *owners], key=_k("owner"),
                              format_func=lambda i: ALL if i is None else owners[i])
    arch = c[2].selectbox("Architecture", [None, *catalog.ARCHITECTURES], key=_k("arch"),
                          format_func=lambda a: ALL if a is None else a)
    tags = resources.run_tags(dataset_id)
    tag = c[3].selectbox("Tag", [None, *tags], key=_k("tag"), format_func=lambda t: ALL if t is None else t,
                         help="Runs and groups carrying this tag (set at submission or on the run page).")
    kinds = c[4].multiselect("Rows", list(_KINDS), default=list(_KINDS), key=_k("kinds"))
    c2 = st.columns([2, 1, 1, 4])
    sort = c2[0].selectbox("Sort by", list(_SORTS), key=_k("sort"))
    descending = c2[1].toggle("Highest first", value=True, key=_k("desc"))
    limit = int(c2[2].selectbox("Rows per page", [50, 200, 1000], index=1, key=_k("limit")))
    page = int(c2[3].number_input("Page", min_value=1, value=1, step=1, key=_k("page")))
    return {"dataset_id": dataset_id, "owner_id": owner_id, "arch": arch, "tag": tag, "kinds": tuple(kinds),
            "sort": sort, "descending": descending, "limit": limit, "offset": (page - 1) * limit}


def _table(rows: list, names: dict) -> list:
    frame = leaderboard_frame(rows, names, inspect=links.inspect_available())
    column_config = {
        "detail": st.column_config.LinkColumn("detail", display_text="open", width="small"),
        "val": st.column_config.NumberColumn("val", format="%.4f", help="The row's monitored metric (a group's OOF "
                                             "score when recorded, else the mean over its runs)."),
        "OOF": st.column_config.NumberColumn(format="%.4f"),
        "public": st.column_config.NumberColumn(format="%.4f", help="Best public leaderboard score entered."),
        "gap": st.column_config.NumberColumn(format="%+.4f", help="public - val"),
        "public↑ val↓": st.column_config.CheckboxColumn(help="Public score rose while validation fell, compared "
                                                        "with the row in 'flag vs'."),
        **{k: st.column_config.NumberColumn(k, format="%.4f", help=catalog.METRICS.get(k)) for k in METRIC_COLUMNS},
    }
    if "inspect" in frame:
        column_config["inspect"] = st.column_config.LinkColumn("inspect", display_text="inspect", width="small")
    event = st.dataframe(frame, hide_index=True, width="stretch", column_config=column_config, key=_k("table"),
                         on_select="rerun", selection_mode="multi-row")
    picked = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    return [rows[i] for i in picked if i < len(rows)]


def _flags(rows: list) -> None:
    flagged = [r for r in rows if r.public_up_val_down]
    if flagged:
        st.warning(
            "Public score rose while validation fell (a sign of leaderboard overfitting or a validation split "
            "that does not match the test set): "
            + "; ".join(f"**{r.name}** (vs {r.flag_reference})" for r in flagged),
            icon=":material/warning:",
        )


def _actions(rows: list, table_picked: list) -> None:
    by_key = {row_key(r): r for r in rows}
    options = list(by_key)
    picked = st.multiselect(
        "Selected rows (or tick rows in the table)", options, format_func=lambda k: row_label(by_key[k]),
        key=_k("picked"),
    )
    for r in table_picked:
        if row_key(r) not in picked:
            picked.append(row_key(r))
    chosen = [by_key[k] for k in picked]
    c = st.columns(3)
    if c[0].button("Build an ensemble from the selection", disabled=len(chosen) < 2, key=_k("to_ensemble"),
                   help="Pick at least two finished runs, groups or ensembles."):
        state.put(state.ENSEMBLE_MEMBERS, [{"kind": k.split(":")[0], "id": int(k.split(":")[1])} for k in picked])
        st.switch_page(links.ENSEMBLE_BUILDER)
    if len(chosen) == 1:
        r = chosen[0]
        kind = r.kind.value
        with c[1]:
            if kind in ("run", "student"):
                links.link_run(r.id, label=f"Open run {r.id}")
            elif kind == "group":
                st.page_link(links.RUN_DETAIL, label=f"Open group {r.id}", query_params={"group": str(r.id)})
        with c[2]:
            if kind in ("run", "student"):
                links.link_inspect(run=r.id)
            elif kind == "ensemble":
                links.link_inspect(ensemble=r.id)
    runs = [r for r in chosen if r.kind.value in ("run", "student")]
    if len(runs) >= 2:
        _overlaid_curves(runs)


def _overlaid_curves(rows: list) -> None:
    """The selected runs' validation curves on one chart (the monitored metric, or any other)."""
    from worker.services import runs as svc

    metric = st.selectbox("Curves of", [*METRIC_COLUMNS, "loss"], key=_k("curve_metric"),
                          index=[*METRIC_COLUMNS, "loss"].index(rows[0].monitor_metric)
                          if rows[0].monitor_metric in (*METRIC_COLUMNS, "loss") else 0)
    with guard("Reading the runs' curves") as outcome:
        series = {f"{r.name} ({r.id})": resources.read(svc.epoch_metrics, run_id=r.id) for r in rows}
    if not outcome.failed:
        st.plotly_chart(charts.overlaid_curves(series, metric=metric), key=_k("overlaid"))


def _scatter(dataset_id: int | None, datasets: list) -> None:
    st.subheader("Does validation track the public leaderboard?")
    if dataset_id is None:
        if not datasets:
            return
        st.caption("Pick a dataset above to see how each validation metric kind correlates with the public score.")
        return
    report = resources.correlation(dataset_id)
    frame = correlation_frame(report)
    st.dataframe(frame, hide_index=True, width="stretch", key=_k("correlation"),
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                                ("pearson", "pearson p", "spearman", "spearman p", "slope")})
    best = frame.dropna(subset=["spearman"])
    metrics = list(report.metrics)
    default = 0
    if not best.empty:
        top = best.sort_values("spearman", ascending=False).iloc[0]
        default = metrics.index(top["metric"])
        st.caption(f"**{top['metric']}** tracks the public score best here (Spearman {top['spearman']:.3f}, "
                   f"n={int(top['n'])}).")
    elif max((c.n for c in report.metrics.values()), default=0) < 3:
        st.info("Record public scores of at least three submissions (run detail page) to see correlations.")
    # one scatter at a time: building a figure per metric kind costs more than the whole table
    metric = st.segmented_control("Scatter of", metrics, default=metrics[default], key=_k("scatter_metric"))
    metric = metric or metrics[default]
    st.plotly_chart(charts.cv_public_scatter(report.metrics[metric], metric), key=_k("scatter"))


def render() -> None:
    """Draw the page."""
    page_header("Leaderboard", "Runs, fold/seed groups, ensembles and pseudo-label students side by side.")
    _metric_definitions()
    datasets = resources.datasets()
    members = resources.members()
    f = _filters(datasets, members)
    if not f["kinds"]:
        st.info("Pick at least one row kind.")
        return
    # one row beyond the page says whether a next page exists
    rows = resources.leaderboard(**{**f, "limit": f["limit"] + 1})
    more = len(rows) > f["limit"]
    rows = rows[: f["limit"]]
    if not rows and f["offset"]:
        st.info(f"No rows on this page: the ranking has {f['offset']} rows or fewer. Go back to page 1.")
        return
    if not rows:
        if resources.count_runs() == 0:
            empty_state("No runs yet: the leaderboard fills as runs finish.", page=links.NEW_EXPERIMENT,
                        label="Start an experiment")
        else:
            st.info("No finished run, group or ensemble matches these filters.")
        _scatter(f["dataset_id"], datasets)
        return
    first = f["offset"] + 1
    st.caption(f"Rows {first}-{first + len(rows) - 1}" + ("; more on the next page" if more else " (the last)"))
    _flags(rows)
    if any((r.validated_on or "").startswith("fold ") for r in rows) and len({r.validated_on for r in rows}) > 1:
        st.warning("Fold runs are scored on one fold's images only, so they do not compare with groups (scored "
                   "on every image, out-of-fold) or hold-out runs: see the **validated on** column, and rank "
                   "a k-fold experiment by its group.", icon=":material/compare_arrows:")
    table_picked = _table(rows, member_names(members))
    _actions(rows, table_picked)
    _scatter(f["dataset_id"], datasets)


if __name__ == "__main__":
    render()

