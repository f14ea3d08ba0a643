"""Ensemble builder: pick finished runs or fold/seed groups, a method, optional weight search and a
TTA policy; see the candidate's validation score next to each member's BEFORE anything is saved or
queued; save it as an ensemble (a leaderboard row with its lineage) and queue its test prediction
and submission. ``?ensemble=<id>`` shows a saved ensemble.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from webapp import resources, state
from webapp.components import charts, links
from webapp.components.downloads import file_picker
from webapp.components.forms import tta_input
from webapp.components.layout import empty_state, fmt_score, fmt_time, member_names, page_header, query_int
from webapp.components.submissions import render_submissions
from webapp.components.tables import row_key, row_label
from webapp.errors import guard
from worker.services import candidates
from worker.services.ensembles import ENSEMBLE_METHODS

__all__ = ["render", "METHODS", "candidate_signature"]

PAGE = "ensemble_builder"
METHODS = {m.name: m.description for m in ENSEMBLE_METHODS.values()}


def _k(name: str) -> str:
    return state.widget_key(PAGE, name)


def candidate_signature(members: list[dict[str, Any]], method: str, search: str) -> str:
    """A key of what was scored, so a changed selection asks to score again."""
    parts = [f"{m['kind']}:{m['id']}:{float(m.get('weight', 1.0)):.6g}" for m in members]
    return "|".join(parts) + f"|{method}|{search}"


def _saved(ensemble_id: int) -> None:
    from worker.services import ensembles

    with guard(f"Loading ensemble {ensemble_id}") as outcome:
        ens = resources.read(ensembles.get_ensemble, ensemble_id=ensemble_id)
    if outcome.failed:
        return
    names = member_names(resources.members())
    st.subheader(f"Ensemble {ens.id}: {ens.name}")
    c = st.columns(2)
    c[0].metric(f"Validation {ens.monitor_metric}", fmt_score(ens.val_score))
    c[1].metric("Members", len(ens.members))
    # words (a method, a status) go in a line of text: a metric tile cuts them ("succee...")
    st.markdown(f"Method **{ens.method.value}** · test prediction **{ens.status.value}**")
    st.caption(f"By {names.get(ens.owner_id, '?')} on {fmt_time(ens.created_at)} · TTA "
               f"{ens.tta or 'none'}" + (f" · {ens.note}" if ens.note else ""))
    if ens.error_message:
        st.error(f"Ensemble {ens.id} {ens.status.value}: {ens.error_message}")
    scores = list(ens.member_scores or [])
    rows = []
    for i, m in enumerate(ens.members):
        s = scores[i] if i < len(scores) else None
        score = s.get("score") if isinstance(s, dict) else s
        link = links.page_url("run", run=m.id) if m.kind.value == "run" else links.page_url("run", group=m.id)
        rows.append({"member": f"{m.kind.value} {m.id}", "weight": m.weight, "score": score, "detail": link})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key=_k("saved_members"),
                 column_config={"detail": st.column_config.LinkColumn(display_text="open"),
                                "score": st.column_config.NumberColumn(format="%.4f")})
    if rows:
        st.plotly_chart(charts.member_scores([r["member"] for r in rows], [r["score"] for r in rows],
                                             candidate=ens.val_score, metric=ens.monitor_metric), key=_k("saved_chart"))
    links.link_inspect(ensemble=ens.id)
    if ens.test_store:
        file_picker([], {"test predictions (zip)": f"stores/ensemble/{ens.id}?split=test"}, key=_k("file"))
    st.markdown("#### Submissions")
    render_submissions(ensemble_id=ens.id, test_store=ens.test_store, names=names)


def _members_picker(rows: list) -> list[dict[str, Any]]:
    by_key = {row_key(r): r for r in rows}
    pending = state.get(state.ENSEMBLE_MEMBERS)
    if pending is not None:  # arriving from the leaderboard or a group page
        st.session_state[_k("members")] = [f"{m['kind']}:{m['id']}" for m in pending if
                                           f"{m['kind']}:{m['id']}" in by_key]
        state.drop(state.ENSEMBLE_MEMBERS)
    picked = st.multiselect("Members (finished runs and fold/seed groups with stored validation predictions)",
                            list(by_key), key=_k("members"), format_func=lambda k: row_label(by_key[k]))
    return [{"kind": k.split(":")[0], "id": int(k.split(":")[1]), "name": by_key[k].name,
             "val": by_key[k].val_score, "metric": by_key[k].monitor_metric} for k in picked]


def _show_candidate(result: dict[str, Any]) -> None:
    metric = result["metric"]
    best = max((m["score"] for m in result["members"] if m["score"] is not None), default=None)
    c = st.columns(3)
    delta = result["score"] - best if best is not None else None
    c[0].metric(f"Candidate {metric}", fmt_score(result["score"]),
                delta=f"{delta:+.4f} vs best member" if delta is not None else None)
    c[1].metric("Images scored", result["n_images"])
    c[2].metric("Best member", fmt_score(best))
    frame = pd.DataFrame([{"member": m["name"], "kind": m["kind"], "id": m["id"], "weight": w,
                           metric: m["score"], "recorded score": m["recorded"]}
                          for m, w in zip(result["members"], result["weights"], strict=True)])
    frame.loc[len(frame)] = {"member": "candidate ensemble", "kind": "ensemble", "id": None, "weight": 1.0,
                             metric: result["score"], "recorded score": None}
    st.dataframe(frame, hide_index=True, width="stretch", key=_k("candidate_table"),
                 column_config={metric: st.column_config.NumberColumn(format="%.4f"),
                                "recorded score": st.column_config.NumberColumn(format="%.4f"),
                                "weight": st.column_config.NumberColumn(format="%.3f")})
    st.plotly_chart(charts.member_scores([m["name"] for m in result["members"]],
                                         [m["score"] for m in result["members"]], candidate=result["score"],
                                         metric=metric), key=_k("candidate_chart"))
    if result.get("search"):
        s = result["search"]
        st.caption(f"Weight search ({s['method']}): {s['evaluations']} weightings scored in {s['seconds']:.2f} s on a "
                   f"{s['max_side']}px grid; the scores above are at full resolution.")


def _save(members: list[dict[str, Any]], method: str, search: str, tta: Any) -> None:
    from worker.services import ensembles

    with st.form(_k("save")):
        st.markdown("**Save the ensemble** (a leaderboard row) and queue its test prediction")
        name = st.text_input("Name", key=_k("name"), placeholder="e.g. fpn+unet soft")
        note = st.text_input("Note", key=_k("note"))
        if not st.form_submit_button("Save and queue", type="primary"):
            return
    settings = resources.app_settings()
    # the service scores the candidate again and decides which jobs its test prediction needs
    with guard("Saving the ensemble") as outcome:
        saved, problem = resources.submit(
            ensembles.save_candidate, name=name, members=_picked(members), method=method, weight_search=search,
            tta=tta, note=note, dataset_root=settings.dataset_root, artifacts=resources.artifacts(),
            queued=lambda c: resources.Queued.of(job_ids=[c.job.id] if c.job is not None else []))
    if outcome.failed:
        return
    ens = saved.ensemble
    state.drop(state.ENSEMBLE_CANDIDATE)
    state.flash(f"Ensemble {ens.name} saved (validation {ens.monitor_metric} {ens.val_score:.4f}); {saved.next_step}.")
    if problem:
        state.flash(problem, "warning")
    st.query_params["ensemble"] = str(ens.id)
    st.rerun()


def _picked(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"kind": m["kind"], "id": m["id"], "weight": m.get("weight", 1.0)} for m in members]


def _builder() -> None:
    datasets = resources.datasets()
    if not datasets:
        empty_state("Register a dataset and train a few runs first.", page=links.DATASETS, label="Datasets")
        return
    by_id = {d.id: d for d in datasets}
    pending = state.get(state.ENSEMBLE_MEMBERS)
    if pending:  # arriving with a selection: open on the dataset the picked rows belong to
        from worker.services import ensembles

        first = pending[0]
        picked_ds = resources.read(ensembles.source_dataset_id, kind=first["kind"], source_id=first["id"])
        if picked_ds in by_id:
            st.session_state[_k("dataset")] = picked_ds
    ds_id = st.selectbox("Dataset", list(by_id), key=_k("dataset"), format_func=lambda i: by_id[i].name)
    rows = resources.leaderboard(dataset_id=ds_id, kinds=("run", "group", "student"), limit=1000)
    if len(rows) < 2:
        empty_state("An ensemble needs at least two finished runs or groups on this dataset.",
                    page=links.NEW_EXPERIMENT, label="Start an experiment")
        return
    members = _members_picker(rows)
    c = st.columns([2, 1])
    method = c[0].radio("Method", list(METHODS), key=_k("method"), horizontal=True,
                        captions=list(METHODS.values()))
    search = c[1].selectbox("Weight search", ["none", "greedy", "optimize"], key=_k("search"),
                            help="greedy: forward selection with replacement (Caruana); optimize: coordinate search "
                                 "of the weights. Both on the validation predictions.")
    if method == "weighted" and search == "none" and members:
        cols = st.columns(min(len(members), 4))
        for i, m in enumerate(members):
            m["weight"] = cols[i % len(cols)].number_input(f"weight of {m['kind']} {m['id']}", min_value=0.0,
                                                           value=1.0, step=0.1, key=_k(f"w_{m['kind']}_{m['id']}"))
    tta = tta_input(_k("tta"), label="TTA for the test prediction")
    st.caption("Validation scores use the stored validation / out-of-fold predictions (no TTA), so members and "
               "candidates compare like with like.")
    if len(members) < 2:
        st.info("Pick at least two members.")
        return
    signature = candidate_signature(members, method, search)
    if st.button("Compute the candidate's validation score", type="primary", key=_k("score")):
        settings = resources.app_settings()
        with guard("Scoring the candidate") as outcome, st.spinner("Combining the stored predictions..."):
            # the rows are read in a short transaction; the scoring runs after it closed
            loaded = resources.read(candidates.load_candidate, members=_picked(members), method=method,
                                    weight_search=search, dataset_root=settings.dataset_root,
                                    artifacts=resources.artifacts())
            result = candidates.score(loaded)
        if not outcome.failed:
            state.put(state.ENSEMBLE_CANDIDATE, {"signature": signature, "result": result})
    candidate = state.get(state.ENSEMBLE_CANDIDATE)
    if not candidate:
        return
    if candidate["signature"] != signature:
        st.info("The selection changed since the last score; compute it again before saving.")
        return
    _show_candidate(candidate["result"])
    _save(members, method, search, tta)


def render() -> None:
    """Draw the page."""
    page_header("Ensemble builder", "Combine finished runs and groups; see the score before you spend a submission.")
    ensemble_id = query_int("ensemble")
    if ensemble_id is not None:
        _saved(ensemble_id)
        st.divider()
        st.markdown("#### Build another")
    _builder()


if __name__ == "__main__":
    render()
