"""Inspect: where and how a run, fold/seed group or ensemble is wrong, from its stored validation predictions.

Opened with ``?run=<id>``, ``?ensemble=<id>`` or ``?group=<id>`` (the leaderboard's and run page's
"inspect" links). Charts: per-class metrics, the confusion matrix, the error taxonomy
(under-prediction, over-prediction, wrong class), boundary vs interior errors, recall by object
size and confidence histograms; a gallery of the worst images and an overlay viewer (image, ground
truth, prediction, error map) with opacity, class toggles and a zoom that renders only the visible
region; and a comparison with a second run or ensemble on the images both have.

Everything comes from :mod:`worker.services.inspection`, which reads stored probabilities and
caches its reports; nothing here trains or predicts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from segcore.config import TaskType
from webapp import resources, state
from webapp.components import inspection_charts as charts, links
from webapp.components.layout import empty_state, fmt_score, page_header, query_int
from webapp.errors import guard

__all__ = ["render", "viewport", "KINDS", "VIEW_PIXELS"]

PAGE = "inspect"
KINDS = ("run", "ensemble", "group")
#: Longest side, in screen pixels, of a rendered overlay panel (the viewport is downscaled to fit).
VIEW_PIXELS = 640
_ZOOMS = [1, 2, 4, 8, 16]


def _k(name: str) -> str:
    return state.widget_key(PAGE, name)


def viewport(height: int, width: int, zoom: int, cy: float, cx: float, max_pixels: int = VIEW_PIXELS
             ) -> tuple[tuple[int, int, int, int], int]:
    """The region ``(y0, x0, y1, x1)`` shown at ``zoom`` around the centre ``(cy, cx)`` (fractions),
    and the downscale step that keeps its longest side within ``max_pixels``.

    Example:
        >>> viewport(2048, 2048, 1, 0.5, 0.5)
        ((0, 0, 2048, 2048), 4)
        >>> viewport(2048, 2048, 4, 0.5, 0.5)
        ((768, 768, 1280, 1280), 1)
    """
    zoom = max(1, int(zoom))
    vh, vw = max(1, math.ceil(height / zoom)), max(1, math.ceil(width / zoom))
    y0 = int(round(cy * height - vh / 2))
    x0 = int(round(cx * width - vw / 2))
    y0, x0 = min(max(0, y0), height - vh), min(max(0, x0), width - vw)
    step = max(1, math.ceil(max(vh, vw) / max_pixels))
    return (y0, x0, y0 + vh, x0 + vw), step


# --------------------------------------------------------------------------- cached service calls


def _settings() -> Any:
    return resources.app_settings()


@st.cache_resource(ttl=30, show_spinner=False, max_entries=16)
def _load(source: tuple[str, int]) -> Any:
    """The object's rows, read in a short transaction; the analyses below run after it closed. Kept for 30 s
    (one object, shared by every cached call below: its stores and dataset are opened, and its folds drawn, once)."""
    from worker.services import inspection

    return resources.read(inspection.load, source=source, settings=_settings())


@st.cache_data(ttl=30, show_spinner=False, max_entries=64)
def _describe(kind: str, object_id: int) -> Any:
    return _load((kind, object_id)).target


@st.cache_data(ttl=30, show_spinner=False, max_entries=64)
def _report(kind: str, object_id: int, fold: int | None, classes: tuple[str, ...], boundary_px: int) -> Any:
    from worker.services import inspection

    return inspection.analyse(_load((kind, object_id)), settings=_settings(), fold=fold,
                              classes=list(classes) or None, boundary_px=boundary_px)


@st.cache_data(ttl=30, show_spinner=False, max_entries=32)  # a viewport is a few MB
def _overlay(kind: str, object_id: int, image_id: str, show: tuple[str, ...] | None, alpha: float,
             region: tuple[int, int, int, int] | None, downscale: int) -> Any:
    from worker.services import inspection

    return inspection.overlay_loaded(_load((kind, object_id)), image_id=image_id,
                                     show_classes=list(show) if show is not None else None, alpha=alpha,
                                     region=region, downscale=downscale)


@st.cache_data(ttl=30, show_spinner=False, max_entries=32)
def _compare(a: tuple[str, int], b: tuple[str, int]) -> Any:
    from worker.services import inspection

    return inspection.compare_loaded(_load(a), _load(b), settings=_settings())


@st.cache_data(ttl=30, show_spinner=False, max_entries=64)
def _compare_overlay(a: tuple[str, int], b: tuple[str, int], image_id: str, show: tuple[str, ...] | None,
                     alpha: float, region: tuple[int, int, int, int] | None, downscale: int) -> Any:
    from worker.services import inspection

    return inspection.compare_overlay_loaded(_load(a), _load(b), image_id=image_id,
                                             show_classes=list(show) if show is not None else None, alpha=alpha,
                                             region=region, downscale=downscale)


# --------------------------------------------------------------------------- picking what to inspect


def _candidates(kind: str) -> dict[int, str]:
    """Id -> label of the finished runs, the ensembles or the groups."""
    if kind == "run":
        return {r.id: f"run {r.id} · {r.name} · {r.monitor_metric} {fmt_score(r.monitor_value)}"
                for r in resources.runs(status="succeeded", order="best", limit=500)}
    if kind == "ensemble":
        return {e.id: f"ensemble {e.id} · {e.name} · {e.monitor_metric} {fmt_score(e.val_score)}"
                for e in resources.ensembles()}
    return {g.id: f"group {g.id} · {g.label} · {len(g.run_ids)} runs" for g in resources.groups()}


def _from_query() -> tuple[str, int] | None:
    for kind in KINDS:
        value = query_int(kind)
        if value is not None:
            return kind, value
    return None


def _set_query(kind: str, object_id: int | None) -> None:
    for k in KINDS:
        if k in st.query_params:
            del st.query_params[k]
    if object_id is not None:
        st.query_params[kind] = str(object_id)


def _pick_source() -> tuple[str, int] | None:
    asked = _from_query()
    c = st.columns([1, 3])
    kind = c[0].radio("Inspect a", KINDS, index=KINDS.index(asked[0]) if asked else 0, horizontal=True,
                      key=_k(f"kind.{asked}"))
    with guard("Listing what can be inspected") as outcome:
        options = _candidates(kind)
    if outcome.failed:
        return None
    if asked and asked[0] == kind and asked[1] not in options:
        options = {asked[1]: f"{kind} {asked[1]}", **options}
    if not options:
        with c[1]:
            empty_state(f"No {kind} to inspect yet: finished runs appear here with their stored validation "
                        "predictions.", page=links.LEADERBOARD, label="Open the leaderboard")
        return None
    ids = list(options)
    default = ids.index(asked[1]) if asked and asked[0] == kind and asked[1] in ids else 0
    picked = c[1].selectbox(kind.capitalize(), ids, index=default, format_func=lambda i: options.get(i, str(i)),
                            key=_k(f"id.{kind}.{asked}"))
    if picked is None:
        return None
    if asked != (kind, int(picked)):
        _set_query(kind, int(picked))
    return kind, int(picked)


# --------------------------------------------------------------------------- sections


def _headline(report: Any, target: Any) -> None:
    pooled = report.pooled
    shares = report.taxonomy.shares
    c = st.columns(6)
    c[0].metric("Images", report.n_images)
    c[1].metric("Mean IoU", fmt_score(pooled.mean_iou))
    c[2].metric("Mean Dice", fmt_score(pooled.mean_dice))
    c[3].metric("Pixel accuracy", fmt_score(pooled.pixel_accuracy))
    c[4].metric("Errors on boundaries", "–" if report.boundary.boundary_error_share is None
                else f"{report.boundary.boundary_error_share:.0%}")
    parts = [f"{charts.ERROR_COLOURS[k][0]} {v:.0%}" for k, v in shares.items()
             if v is not None and k in charts.ERROR_COLOURS]
    c[5].metric("Wrong pixels", f"{sum(report.taxonomy.totals.values()):,}")
    if parts:
        st.caption("Error taxonomy: " + " · ".join(parts))
    if target.background is None and target.task == TaskType.MULTICLASS:
        st.caption("The dataset has no background class, so every error counts as a wrong class (under- and "
                   "over-prediction need one: declare it on the Datasets page, Edit).")


def _classes_section(report: Any, target: Any) -> None:
    c = st.columns(2)
    with c[0]:
        st.plotly_chart(charts.per_class_metrics(report.pooled), key=_k("chart.metrics"))
    with c[1]:
        if report.confusion is not None:
            st.plotly_chart(charts.confusion_heatmap(report.confusion, report.parameters.classes),
                            key=_k("chart.confusion"))
        else:
            st.info("Multilabel classes overlap, so there is no single confusion matrix; the per-class false "
                    "negatives and positives are in the taxonomy chart.")
    if len(report.folds) > 1:
        rows = [{"fold": f.fold, "images": f.n_images, "mean IoU": f.mean_iou, "mean Dice": f.mean_dice,
                 "pixel accuracy": f.pixel_accuracy} for f in report.folds]
        st.dataframe(pd.DataFrame(rows), hide_index=True, key=_k("folds"))


def _errors_section(report: Any) -> None:
    c = st.columns(2)
    with c[0]:
        st.plotly_chart(charts.taxonomy_bars(report.taxonomy), key=_k("chart.taxonomy"))
    with c[1]:
        st.plotly_chart(charts.boundary_bars(report.boundary), key=_k("chart.boundary"))
    c = st.columns(2)
    with c[0]:
        st.plotly_chart(charts.object_recall(report.objects), key=_k("chart.objects"))
    with c[1]:
        conf = report.confidence
        if conf is None or not conf.classes:
            st.info("No confidence histograms: the stored predictions carry no probabilities.")
        else:
            names = {x.class_index: x.name for x in conf.classes}
            worst = max(conf.classes, key=lambda x: sum(x.wrong))
            picked = st.selectbox("Confidence of class", list(names), index=list(names).index(worst.class_index),
                                  format_func=names.get, key=_k("conf_class"))
            st.plotly_chart(charts.confidence_histogram(conf, picked), key=_k("chart.confidence"))


def _thumb_step(height: int, width: int, size: int = 160) -> int:
    return max(1, math.ceil(max(height, width) / size))


def _gallery(source: tuple[str, int], report: Any, target: Any) -> list[str]:
    st.markdown("#### Worst images")
    classes = [c for c in report.worst_images if report.worst_images[c]]
    by = st.selectbox("Worst for class", ["all classes", *classes], key=_k("worst_by"))
    if by == "all classes":
        ranked = sorted(report.images, key=lambda im: (1.0 if im.mean_iou is None else im.mean_iou,
                                                       -sum(im.errors), im.image_id))
        items = [(im.image_id, im.mean_iou, sum(im.errors)) for im in ranked[:8]]
    else:
        items = [(w.image_id, w.iou, w.errors) for w in report.worst_images[by][:8]]
    if not items:
        st.info("No images to show.")
        return []
    cols = st.columns(4)
    for n, (image_id, iou, errors) in enumerate(items):
        with cols[n % 4]:
            with guard(f"Rendering {image_id}") as outcome:
                full = _overlay(source[0], source[1], image_id, None, 0.7, None, 1_000_000)
                step = _thumb_step(full.height, full.width)
                thumb = _overlay(source[0], source[1], image_id, None, 0.7, None, step)
            if outcome.failed:
                continue
            st.image(thumb.panels.errors, caption=f"{image_id} · IoU {fmt_score(iou, 3)} · {errors:,} px wrong",
                     width=160)
            st.button("View", key=_k(f"view.{image_id}"), on_click=_choose_image, args=(image_id,))
    return [i for i, _, _ in items]


def _choose_image(image_id: str) -> None:
    st.session_state[_k("image")] = image_id


def _view_controls(ids: list[str], classes: list[str]) -> tuple[str, float, list[str], int, float, float]:
    if st.session_state.get(_k("image")) not in ids:
        st.session_state[_k("image")] = ids[0]
    c = st.columns([2, 1, 3])
    image_id = c[0].selectbox("Image", ids, key=_k("image"))
    alpha = c[1].slider("Opacity", 0.0, 1.0, 0.6, 0.05, key=_k("alpha"))
    shown = c[2].multiselect("Classes drawn", classes, default=classes, key=_k("shown"))
    c = st.columns(3)
    zoom = c[0].select_slider("Zoom", _ZOOMS, value=1, format_func=lambda z: f"{z}x", key=_k("zoom"))
    cx = c[1].slider("Horizontal centre", 0.0, 1.0, 0.5, 0.01, key=_k("cx"), disabled=zoom == 1)
    cy = c[2].slider("Vertical centre", 0.0, 1.0, 0.5, 0.01, key=_k("cy"), disabled=zoom == 1)
    return image_id, alpha, shown, int(zoom), cy, cx


def _viewer(source: tuple[str, int], target: Any, ids: list[str]) -> None:
    st.markdown("#### Overlay viewer")
    drawable = [c for i, c in enumerate(target.classes) if i != target.background]  # the background is never drawn
    image_id, alpha, shown, zoom, cy, cx = _view_controls(ids, drawable)
    with guard(f"Rendering {image_id}") as outcome:
        # the full size comes with a one-pixel render; then only the visible region is drawn
        size = _overlay(source[0], source[1], image_id, None, 0.5, None, 1_000_000)
        region, step = viewport(size.height, size.width, zoom, cy, cx)
        view = _overlay(source[0], source[1], image_id, tuple(shown), float(alpha), region, step)
    if outcome.failed:
        return
    st.html(charts.legend_html(view.legend))
    y0, x0, y1, x1 = view.region
    st.caption(f"{image_id}: {view.height}x{view.width} px; showing rows {y0}-{y1 - 1}, columns {x0}-{x1 - 1}"
               + (f", every {view.downscale}th pixel" if view.downscale > 1 else ""))
    c = st.columns(4)
    for col, (panel, caption) in zip(c, [(view.panels.image, "image"), (view.panels.ground_truth, "ground truth"),
                                         (view.panels.prediction, "prediction"), (view.panels.errors, "errors")],
                                     strict=True):
        col.image(panel, caption=caption, width="stretch")
    palette = [(name, tuple(int(v) for v in view.palette[i])) for i, name in enumerate(view.classes)
               if i != target.background and name in shown]
    if palette:
        st.html(charts.legend_html(palette))


def _compare_section(source: tuple[str, int], target: Any, alpha: float) -> None:
    st.markdown("#### Compare with another run or ensemble")
    st.caption("On the validation images both have: where A (this one) is right and B wrong, and the reverse.")
    c = st.columns([1, 3])
    kind = c[0].radio("B is a", KINDS, horizontal=True, key=_k("b_kind"))
    with guard("Listing what to compare with") as outcome:
        options = {i: label for i, label in _candidates(kind).items() if (kind, i) != source}
    if outcome.failed:
        return
    if not options:
        st.info(f"No other {kind} to compare with.")
        return
    b_id = c[1].selectbox("B", list(options), index=None, format_func=options.get, placeholder=f"Pick a {kind}",
                          key=_k(f"b.{kind}"))
    if b_id is None:
        return
    b = (kind, int(b_id))
    with guard("Comparing") as outcome:
        report = _compare(source, b)
    if outcome.failed:
        return
    m = st.columns(3)
    m[0].metric("A right, B wrong", f"{report.a_right_b_wrong:,} px")
    m[1].metric("B right, A wrong", f"{report.b_right_a_wrong:,} px")
    m[2].metric("Both wrong", f"{report.both_wrong:,} px")
    st.plotly_chart(charts.comparison_bars(report), key=_k("chart.compare"))
    gains = report.top_images(8, better="b")
    ids = [im.image_id for im in gains] or [im.image_id for im in report.images]
    image_id = st.selectbox("Image (where B gains most first)", ids, key=_k("b_image"))
    with guard("Rendering the comparison") as outcome:
        size = _overlay(source[0], source[1], image_id, None, 0.5, None, 1_000_000)
        step = max(1, math.ceil(max(size.height, size.width) / VIEW_PIXELS))
        drawn, legend = _compare_overlay(source, b, image_id, None, float(alpha), None, step)
    if outcome.failed:
        return
    st.html(charts.legend_html(legend))
    st.image(np.ascontiguousarray(drawn), caption=f"{image_id}: A = {report.names[0]}, B = {report.names[1]}",
             width=min(VIEW_PIXELS, drawn.shape[1] * 4))


def render() -> None:
    """Draw the page."""
    page_header("Inspect", "Where and how a model is wrong, from its stored validation predictions.")
    source = _pick_source()
    if source is None:
        return
    kind, object_id = source
    with guard(f"Inspecting {kind} {object_id}") as outcome:
        target = _describe(kind, object_id)
    if outcome.failed:
        if kind == "run":
            links.link_run(object_id, label=f"Open run {object_id}")
        return
    c = st.columns([1, 3, 1])
    fold_labels = {"all folds": None, **{f"fold {f}": f for f in target.folds}}
    fold = fold_labels[c[0].selectbox("Fold", list(fold_labels), key=_k(f"fold.{kind}.{object_id}"),
                                      disabled=len(target.folds) < 2,
                                      help="A group's or ensemble's out-of-fold images come from several folds.")]
    chosen = c[1].multiselect("Classes", target.classes, default=[], placeholder="all classes",
                              key=_k(f"classes.{kind}.{object_id}"))
    boundary_px = int(c[2].number_input("Boundary band (px)", min_value=1, max_value=32, value=3, step=1,
                                        key=_k("boundary_px")))
    with guard(f"Analysing {kind} {object_id}") as outcome:
        with st.spinner("Analysing the stored predictions..."):
            report = _report(kind, object_id, fold, tuple(chosen), boundary_px)
    if outcome.failed:
        return
    st.caption(f"{kind.capitalize()} {object_id} · {target.name} · {target.task} · {target.n_images} validation "
               f"images · {len(target.classes)} classes" + (f" · {target.method} ensemble" if target.method else ""))
    _headline(report, target)
    # only the open tab runs (Streamlit's lazy tabs): the gallery's overlays are drawn when Images is opened
    tabs = st.tabs(["Classes", "Errors", "Images", "Compare"], key=_k("tabs"), on_change="rerun")
    if tabs[0].open:
        with tabs[0]:
            _classes_section(report, target)
    if tabs[1].open:
        with tabs[1]:
            _errors_section(report)
    if tabs[2].open:
        with tabs[2]:
            ids = _gallery(source, report, target)
            all_ids = ids + [im.image_id for im in report.images if im.image_id not in ids]
            if all_ids:
                _viewer(source, target, all_ids)
    if tabs[3].open:
        with tabs[3]:
            _compare_section(source, target, float(st.session_state.get(_k("alpha"), 0.6)))


if __name__ == "__main__":
    render()
