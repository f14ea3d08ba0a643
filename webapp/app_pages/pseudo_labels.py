"""Pseudo-label rounds: pick a teacher, set pixel and image thresholds, preview what the round keeps
(images, per-class pixels, sample overlays) before creating it; start student runs on the original
plus pseudo-labelled data; follow the rounds' lineage with their validation and public scores.
"""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from webapp import resources, state
from webapp.components import links
from webapp.components.layout import empty_state, fmt_score, fmt_time, member_names, page_header
from webapp.components.overlays import overlay_mask, render_legend
from webapp.components.tables import row_key, row_label
from webapp.errors import guard
from worker.services import candidates

__all__ = ["render", "preview_signature", "pixel_chart"]

PAGE = "pseudo_labels"


def _k(name: str) -> str:
    return state.widget_key(PAGE, name)


def preview_signature(teacher: str, params: dict[str, Any]) -> str:
    """A key of what was previewed, so changed thresholds ask for a new preview."""
    return f"{teacher}|" + "|".join(f"{k}={params[k]}" for k in sorted(params))


def pixel_chart(class_pixels: dict[str, int]) -> go.Figure:
    """Pseudo-labelled pixels per class over the kept images."""
    fig = go.Figure(go.Bar(x=list(class_pixels), y=list(class_pixels.values()), marker_color="#1f77b4"))
    fig.update_layout(title="Pseudo-labelled pixels per class (kept images)", yaxis_title="pixels",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=320)
    return fig


def _teacher(rows: list) -> tuple[str, dict[str, Any]] | None:
    by_key = {row_key(r): r for r in rows}
    key = st.selectbox("Teacher (a finished run, group or ensemble with stored test predictions)", list(by_key),
                       key=_k("teacher"), format_func=lambda k: row_label(by_key[k]))
    return key, {"kind": key.split(":")[0], "id": int(key.split(":")[1])}


def _thresholds(classes: list[str]) -> dict[str, Any]:
    c = st.columns(3)
    pixel = c[0].slider("Pixel threshold", 0.5, 1.0, 0.9, 0.01, key=_k("pixel"),
                        help="A pixel keeps its predicted label only when the teacher is at least this confident; "
                             "other pixels are ignored by the student's loss.")
    image = c[1].slider("Image threshold", 0.0, 1.0, 0.8, 0.01, key=_k("image"),
                        help="A foreground pixel whose max probability is below this counts as uncertain.")
    share = c[2].slider("Max uncertain share", 0.0, 1.0, 0.1, 0.01, key=_k("share"),
                        help="Drop an image when more than this share of its foreground pixels is uncertain.")
    limit = st.number_input("At most this many images (0: all)", min_value=0, value=0, step=10, key=_k("limit"))
    per_class: dict[str, float] = {}
    with st.expander("Per-class pixel thresholds"):
        cols = st.columns(4)
        for i, name in enumerate(classes):
            v = cols[i % 4].number_input(name, min_value=0.0, max_value=1.0, value=None, step=0.01,
                                         key=_k(f"class_{i}"), placeholder=f"{pixel:.2f}")
            if v is not None:
                per_class[name] = float(v)
    return {"pixel_threshold": float(pixel), "image_threshold": float(image), "max_low_confidence": float(share),
            "limit": int(limit) or None,
            "per_class": per_class}


def _show_preview(preview: dict[str, Any], ignore_index: int) -> None:
    report = preview["report"]
    kept, dropped = report["kept"], report["dropped"]
    c = st.columns(4)
    c[0].metric("Images kept", kept)
    c[1].metric("Images dropped", dropped)
    c[2].metric("Ignored pixels (kept images)", f"{report['ignored_pixels']:,}")
    conf = report.get("mean_confidence")
    c[3].metric("Mean confidence", fmt_score(conf, 3) if conf is not None else "–")
    st.plotly_chart(pixel_chart(report["class_pixels"]), key=_k("pixels"))
    st.dataframe(
        pd.DataFrame([{"image": d["id"], "kept": d["kept"], "reason": d["reason"] or "",
                       "foreground px": d["foreground_pixels"], "low-confidence share": d["low_confidence_fraction"],
                       "mean confidence": d["mean_confidence"]} for d in report["images"]]),
        hide_index=True, width="stretch", key=_k("decisions"),
        column_config={"low-confidence share": st.column_config.NumberColumn(format="%.3f"),
                       "mean confidence": st.column_config.NumberColumn(format="%.3f")},
    )
    classes = preview["classes"]
    if preview["samples"]:
        cols = st.columns(min(len(preview["samples"]), 4))
        for i, s in enumerate(preview["samples"]):
            cols[i % len(cols)].image(overlay_mask(s["image"], s["mask"], num_classes=len(classes),
                                                   ignore_index=ignore_index, background=preview.get("background")),
                                      caption=f"{s['id']} (pseudo-labels)", width="stretch")
        render_legend(classes, background=preview.get("background"))
    elif kept == 0:
        st.warning("No image passes these thresholds: lower them.")


def _create(teacher: dict[str, Any], params: dict[str, Any], preview: dict[str, Any], rounds: list) -> None:
    from worker.services import jobs, pseudo

    with st.form(_k("create")):
        st.markdown("**Create the round** (a worker writes the pseudo-labelled dataset)")
        name = st.text_input("Round name", key=_k("name"), placeholder="e.g. round 1 from fpn+unet")
        by_id = {r.id: r for r in rounds}
        parent = st.selectbox("Previous round (lineage)", [None, *by_id], key=_k("parent"),
                              format_func=lambda i: "none" if i is None else f"{i}: {by_id[i].name}")
        if not st.form_submit_button("Create the round", type="primary"):
            return
    report = {k: v for k, v in preview["report"].items() if k != "images"}
    report["kept_ids"] = [d["id"] for d in preview["report"]["images"] if d["kept"]]

    def create(session: Any, actor: int | None) -> tuple[Any, Any]:
        rnd = pseudo.create_pseudo_round(session, actor=actor, name=name, teacher_kind=teacher["kind"],
                                         teacher_id=teacher["id"], params=params, report=report,
                                         parent_round_id=parent)
        return rnd, jobs.create_job(session, actor=actor, kind="pseudo", target={"round_id": rnd.id}, params=params)

    with guard("Creating the round") as outcome:
        (rnd, job), problem = resources.submit_unit(create, queued=lambda r: resources.Queued(job_ids=(r[1].id,)))
    if outcome.failed:
        return
    state.drop(state.PSEUDO_PREVIEW)
    state.flash(f"Round {rnd.name} created; job {job.id} writes its pseudo-labelled dataset.")
    if problem:
        state.flash(problem, "warning")
    st.rerun()


def _students(rounds: list) -> None:
    from worker.services import confinement, datasets, experiments, runs

    ready = [r for r in rounds if r.dataset_id is not None]
    if not ready:
        st.caption("Student runs can start once a round's job has written its pseudo-labelled dataset.")
        return
    by_id = {r.id: r for r in ready}
    c = st.columns([2, 1, 1, 1])
    round_id = c[0].selectbox("Round", list(by_id), key=_k("student_round"),
                              format_func=lambda i: f"{i}: {by_id[i].name}")
    base_run = c[1].number_input("Config of run", min_value=1, step=1, value=None, key=_k("student_base"),
                                 help="The student trains with this run's config on original + pseudo data.")
    n_folds = int(c[2].number_input("k folds", min_value=1, max_value=20, value=1, key=_k("student_folds"),
                                    help="The teacher's k (of a fold run or group) keeps the scores comparable."))
    seeds = int(c[3].number_input("Seeds", min_value=1, max_value=10, value=1, key=_k("student_seeds")))
    if not st.button("Start student runs", key=_k("student_go"), disabled=base_run is None):
        return
    rnd = by_id[round_id]
    with guard("Starting the student runs") as outcome:
        base = resources.read(runs.get_run, run_id=int(base_run))
        pseudo_ds = resources.read(datasets.get_dataset, dataset_id=rnd.dataset_id)
        cfg = copy.deepcopy(base.config)
        cfg["name"] = f"{cfg.get('name', base.name)}-student-r{rnd.id}"
        cfg.setdefault("data", {})["pseudo_labels"] = [pseudo_ds.source["root"]]
        cfg["data"].pop("fingerprint", None)
        split = cfg["data"].get("split") or {}
        if split.get("kind") == "kfold" and n_folds < 2:  # one student run: a hold-out, not one fold of k
            cfg["data"]["split"] = {"kind": "holdout"}
        elif split.get("kind") == "kfold":
            cfg["data"]["split"] = {**split, "n_folds": n_folds, "fold": 0}
        created, problem = resources.submit(
            # the config's name, numbered when a round's students are started again (names are unique)
            experiments.create_experiment, config=cfg, n_folds=n_folds, seeds=list(range(seeds)),
            dataset_id=base.dataset_id, parent_run_id=base.id, pseudo_round_id=rnd.id,
            tags=["pseudo", f"round-{rnd.id}"], queued=lambda c: resources.Queued.of(run_ids=c.run_ids),
            roots=confinement.data_roots(resources.app_settings()))
    if outcome.failed:
        return
    state.flash(f"{len(created.run_ids)} student run(s) queued for round {rnd.name}.")
    if problem:
        state.flash(problem, "warning")
    st.rerun()


def _lineage(rounds: list, names: dict) -> None:
    if not rounds:
        st.caption("No round yet.")
        return
    by_id = {r.id: r for r in rounds}
    frame = pd.DataFrame([
        {"round": r.id, "name": r.name, "teacher": f"{r.teacher_kind.value} {r.teacher_id}",
         "after round": r.parent_round_id or "", "status": r.status.value,
         "images kept": (r.report or {}).get("kept"), "students": len(r.student_run_ids),
         "best student val": r.best_student_val, "student validated on": r.student_validated_on or "",
         "teacher validated on": r.teacher_validated_on or "", "best student public": r.best_student_public,
         "by": names.get(r.created_by, "?"), "created": fmt_time(r.created_at)}
        for r in rounds
    ])
    st.dataframe(frame, hide_index=True, width="stretch", key=_k("rounds"),
                 column_config={"best student val": st.column_config.NumberColumn(format="%.4f"),
                                "best student public": st.column_config.NumberColumn(format="%.4f")})
    for r in rounds:
        if r.error_message:
            st.error(f"Round {r.id} ({r.name}) {r.status.value}: {r.error_message}")
    apart = [r for r in rounds if r.best_student_val is not None and not r.comparable_with_teacher]
    if apart:
        st.warning("Validated on other images than their teacher, so their validation score is not drawn on the "
                   "line with the teacher's: " + "; ".join(
                       f"round {r.id} (student: {r.student_validated_on}; teacher: {r.teacher_validated_on})"
                       for r in apart) + ". Give the student the teacher's split (k folds of a fold group) to compare.")
    # one line per chain of rounds, each round's scores in order; validation only where on the teacher's images
    fig = go.Figure()
    heads = [r for r in rounds if not any(o.parent_round_id == r.id for o in rounds)]
    for head in heads:
        chain, cur, seen = [], head, set()
        while cur is not None and cur.id not in seen:
            seen.add(cur.id)
            chain.append(cur)
            cur = by_id.get(cur.parent_round_id) if cur.parent_round_id else None
        chain.reverse()
        labels = [f"round {r.id}" for r in chain]
        fig.add_trace(go.Scatter(x=labels, y=[r.best_student_val if r.comparable_with_teacher else None
                                              for r in chain], mode="lines+markers", name=f"val ({chain[0].name})"))
        fig.add_trace(go.Scatter(x=labels, y=[r.best_student_public for r in chain], mode="lines+markers",
                                 name=f"public ({chain[0].name})", line={"dash": "dash"}))
    fig.update_layout(title="Best student per round: validation and public",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=320)
    st.plotly_chart(fig, key=_k("lineage_chart"))


def render() -> None:
    """Draw the page."""
    page_header("Pseudo-label rounds", "Teach a student on the test images the teacher is sure about.")
    datasets = resources.datasets()
    if not datasets:
        empty_state("Register a dataset with unlabelled test images first.", page=links.DATASETS, label="Datasets")
        return
    names = member_names(resources.members())
    by_id = {d.id: d for d in datasets}
    ds_id = st.selectbox("Dataset", list(by_id), key=_k("dataset"), format_func=lambda i: by_id[i].name)
    ds = by_id[ds_id]
    rounds = resources.pseudo_rounds(dataset_id=ds_id)
    new, students, lineage = st.tabs(["New round", "Student runs", "Lineage"], key=_k("tabs"), on_change="rerun")
    with new:
        rows = resources.leaderboard(dataset_id=ds_id, kinds=("run", "group", "ensemble", "student"), limit=1000)
        if not rows:
            empty_state("No finished run, group or ensemble on this dataset to act as teacher.",
                        page=links.NEW_EXPERIMENT, label="Start an experiment")
        else:
            key, teacher = _teacher(rows)
            params = _thresholds(list(ds.classes))
            signature = preview_signature(key, params)
            if st.button("Preview the round", type="primary", key=_k("preview")):
                with guard("Previewing the round") as outcome, st.spinner("Filtering the teacher's predictions..."):
                    # the rows are read in a short transaction; the filtering runs after it closed
                    loaded = resources.read(candidates.load_teacher, teacher_kind=teacher["kind"],
                                            teacher_id=teacher["id"],
                                            dataset_root=resources.app_settings().dataset_root,
                                            artifacts=resources.artifacts())
                    result = candidates.preview_pseudo(loaded, params=params, samples=4)
                if not outcome.failed:
                    state.put(state.PSEUDO_PREVIEW, {"signature": signature, "result": result})
            preview = state.get(state.PSEUDO_PREVIEW)
            if preview and preview["signature"] == signature:
                _show_preview(preview["result"], ds.ignore_index)
                _create(teacher, params, preview["result"], rounds)
            elif preview:
                st.info("The teacher or the thresholds changed since the last preview; preview again before "
                        "creating the round.")
    with students:
        _students(rounds)
    with lineage:
        _lineage(rounds, names)


if __name__ == "__main__":
    render()
