"""Plotly figures of the dashboard, built from read models and segcore statistics (pure functions).

Each function returns a ``plotly.graph_objects.Figure`` and draws nothing, so tests assert the
figure's data and pages pass it to ``st.plotly_chart``. Rare classes are drawn in a warning colour
with a "rare" marker wherever classes are compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "RARE_COLOR",
    "COMMON_COLOR",
    "class_pixel_share",
    "class_instance_counts",
    "class_image_presence",
    "presence_heatmap",
    "classes_per_image",
    "image_sizes",
    "object_areas",
    "training_curves",
    "cv_public_scatter",
    "per_class_metrics",
    "member_scores",
]

RARE_COLOR = "#d62728"
COMMON_COLOR = "#1f77b4"
_LAYOUT = {"margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "height": 340}


def _classes(stats: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(stats.get("classes") or [])


def _bar_colors(classes: Sequence[Mapping[str, Any]]) -> list[str]:
    return [RARE_COLOR if c.get("rare") else COMMON_COLOR for c in classes]


def _labels(classes: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{c['name']} (rare)" if c.get("rare") else str(c["name"]) for c in classes]


def class_pixel_share(stats: Mapping[str, Any], *, log_scale: bool = True) -> go.Figure:
    """Per-class share of labelled pixels, rare classes in red (log axis so they stay visible).

    Args:
        stats: A ``segcore.data.statistics.DatasetStatistics`` dump.
        log_scale: Log x axis (a 0.1 % class next to a 60 % one is otherwise invisible).
    """
    classes = _classes(stats)
    shares = [float(c["pixel_share"]) * 100 for c in classes]
    fig = go.Figure(
        go.Bar(
            x=shares, y=_labels(classes), orientation="h", marker_color=_bar_colors(classes),
            text=[f"{s:.3g} %" for s in shares], textposition="auto",
            hovertemplate="%{y}: %{x:.4g} % of labelled pixels<extra></extra>",
        )
    )
    fig.update_layout(title="Pixel share per class (red: rare)", xaxis_title="% of labelled pixels", **_LAYOUT)
    fig.update_yaxes(autorange="reversed")
    if log_scale and any(s > 0 for s in shares):
        fig.update_xaxes(type="log")
    return fig


def class_instance_counts(stats: Mapping[str, Any]) -> go.Figure:
    """Objects per class (annotations or connected components), rare classes in red."""
    classes = _classes(stats)
    counts = [int(c["instance_count"]) for c in classes]
    fig = go.Figure(
        go.Bar(x=counts, y=_labels(classes), orientation="h", marker_color=_bar_colors(classes), text=counts,
               textposition="auto", hovertemplate="%{y}: %{x} objects<extra></extra>")
    )
    fig.update_layout(title="Instances per class (red: rare)", xaxis_title="objects", **_LAYOUT)
    fig.update_yaxes(autorange="reversed")
    return fig


def class_image_presence(stats: Mapping[str, Any]) -> go.Figure:
    """Share of images in which each class occurs."""
    classes = _classes(stats)
    n = max(int(stats.get("num_images") or 0), 1)
    shares = [100.0 * int(c["image_count"]) / n for c in classes]
    fig = go.Figure(
        go.Bar(x=shares, y=_labels(classes), orientation="h", marker_color=_bar_colors(classes),
               text=[f"{int(c['image_count'])}/{n}" for c in classes], textposition="auto",
               hovertemplate="%{y}: in %{x:.3g} % of images<extra></extra>")
    )
    fig.update_layout(title="Images containing each class", xaxis_title="% of images", **_LAYOUT)
    fig.update_yaxes(autorange="reversed")
    return fig


def presence_heatmap(presence: Sequence[Sequence[bool]], image_ids: Sequence[str], classes: Sequence[str]) -> go.Figure:
    """Per-image class presence: images as rows, classes as columns."""
    z = [[1 if v else 0 for v in row] for row in presence]
    fig = go.Figure(
        go.Heatmap(z=z, x=list(classes), y=list(image_ids), colorscale=[[0, "#f0f0f0"], [1, COMMON_COLOR]],
                   showscale=False, hovertemplate="%{y}: %{x}<extra></extra>")
    )
    fig.update_layout(title="Class presence per image", **{**_LAYOUT, "height": min(900, 120 + 12 * len(z))})
    # image ids such as "1", "2" are names, not numbers: a category axis draws every row once, in order
    fig.update_yaxes(autorange="reversed", type="category", showticklabels=len(z) <= 60)
    fig.update_xaxes(type="category")
    return fig


def classes_per_image(*, counts_by_k: Sequence[int]) -> go.Figure:
    """How many images contain 0, 1, 2, ... classes (``counts_by_k[k]``: images with k classes present)."""
    counts: dict[int, int] = {k: int(n) for k, n in enumerate(counts_by_k) if n}
    xs = sorted(counts)
    fig = go.Figure(go.Bar(x=xs, y=[counts[x] for x in xs], marker_color=COMMON_COLOR))
    fig.update_layout(title="Classes per image", xaxis_title="classes present", yaxis_title="images", **_LAYOUT)
    return fig


def image_sizes(sizes: Mapping[str, int]) -> go.Figure:
    """Image counts per ``"WxH"`` size."""
    items = sorted(sizes.items(), key=lambda kv: -kv[1])
    fig = go.Figure(go.Bar(x=[k for k, _ in items], y=[v for _, v in items], marker_color=COMMON_COLOR))
    fig.update_layout(title="Image sizes (W x H)", xaxis_title="size", yaxis_title="images", **_LAYOUT)
    fig.update_xaxes(type="category")
    return fig


def object_areas(stats: Mapping[str, Any]) -> go.Figure:
    """Object area distribution per class on log2 bins (one line per class, rare ones dashed red)."""
    edges = list(stats.get("area_bin_edges") or [2**k for k in range(21)])
    labels = [f"{edges[i]}-{edges[i + 1] - 1}" if i + 1 < len(edges) else f">={edges[i]}" for i in range(len(edges))]
    fig = go.Figure()
    last = 0
    for c in _classes(stats):
        hist = list(c.get("area_histogram") or [])
        if not any(hist):
            continue
        last = max(last, max(i for i, v in enumerate(hist) if v) + 1)
        fig.add_trace(
            go.Scatter(
                x=labels[: len(hist)], y=hist, mode="lines+markers", name=_labels([c])[0],
                line={"dash": "dash", "color": RARE_COLOR} if c.get("rare") else {},
            )
        )
    fig.update_layout(title="Object area distribution (pixels, log2 bins)", xaxis_title="object area (px)",
                      yaxis_title="objects", **{**_LAYOUT, "height": 380})
    if last:
        fig.update_xaxes(type="category", categoryarray=labels[:last])
    return fig


def training_curves(epochs: Sequence[Any], *, monitor: str | None = None, title: str = "") -> go.Figure:
    """Training loss, learning rate and every validation metric per epoch.

    Args:
        epochs: ``EpochMetricRead`` rows (or dicts with ``epoch``, ``train_loss``, ``lr``, ``val``).
        monitor: The monitored metric, drawn thicker.
        title: Figure title.
    """
    def get(e: Any, k: str) -> Any:
        return e.get(k) if isinstance(e, Mapping) else getattr(e, k, None)

    xs = [get(e, "epoch") for e in epochs]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "validation metrics"))
    fig.add_trace(go.Scatter(x=xs, y=[get(e, "train_loss") for e in epochs], name="train loss", mode="lines+markers"),
                  row=1, col=1)
    kinds: list[str] = []
    for e in epochs:
        for k, v in (get(e, "val") or {}).items():
            if isinstance(v, (int, float)) and k not in kinds and k != "epoch":
                kinds.append(k)
    for k in kinds:
        ys = [(get(e, "val") or {}).get(k) for e in epochs]
        width = 4 if k == monitor else 2
        fig.add_trace(go.Scatter(x=xs, y=ys, name=f"val {k}", mode="lines+markers", line={"width": width}),
                      row=1, col=1 if "loss" in k else 2)  # losses share an axis, scores share theirs
    fig.update_xaxes(title_text="epoch", tickmode="linear", dtick=max(1, len(xs) // 10))
    fig.update_layout(title=title or None, **{**_LAYOUT, "height": 320})
    return fig


def overlaid_curves(series: Mapping[str, Sequence[Any]], *, metric: str) -> go.Figure:
    """One validation metric per epoch for several runs on one chart.

    Args:
        series: Run label -> its ``EpochMetricRead`` rows.
        metric: A validation metric kind (``miou``, ``dice``, ``loss``...).
    """
    fig = go.Figure()
    for label, epochs in series.items():
        points = [(e.epoch, (e.val or {}).get(metric)) for e in epochs]
        points = [(x, y) for x, y in points if isinstance(y, (int, float))]
        fig.add_trace(go.Scatter(x=[x for x, _ in points], y=[y for _, y in points], name=label,
                                 mode="lines+markers"))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=f"validation {metric}")
    fig.update_layout(title=f"Validation {metric} per epoch", **{**_LAYOUT, "height": 360})
    return fig


def resource_usage(epochs: Sequence[Any]) -> go.Figure | None:
    """CPU, memory and (on a GPU) GPU memory and utilisation per epoch; None when no epoch recorded any.

    Args:
        epochs: ``EpochMetricRead`` rows; their ``resources`` as sampled at each epoch's end.
    """
    rows = [(e.epoch, e.resources) for e in epochs if getattr(e, "resources", None)]
    if not rows:
        return None
    xs = [epoch for epoch, _ in rows]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("utilisation (%; 100 = one CPU core)", "memory (GB)"))
    series = (("cpu_percent", "CPU", 1), ("gpu_util_percent", "GPU", 1), ("rss_gb", "RAM (process + loaders)", 2),
              ("gpu_mem_gb", "GPU memory (peak)", 2))
    for key, name, col in series:
        ys = [r.get(key) for _, r in rows]
        if any(y is not None for y in ys):
            fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines+markers"), row=1, col=col)
    fig.update_xaxes(title_text="epoch", tickmode="linear", dtick=max(1, len(xs) // 10))
    fig.update_layout(title="Resources per epoch", **{**_LAYOUT, "height": 300})
    return fig


def cv_public_scatter(correlation: Any, metric: str) -> go.Figure:
    """Validation score against public score for one metric kind, with the fitted line.

    Args:
        correlation: A ``MetricCorrelation`` (points, pearson, spearman, slope, intercept).
        metric: Its metric kind (axis title).
    """
    pts = list(correlation.points)
    symbols = {"run": "circle", "group": "square", "ensemble": "diamond", "student": "triangle-up"}
    fig = go.Figure()
    for kind in symbols:
        sel = [p for p in pts if getattr(p.kind, "value", p.kind) == kind]
        if not sel:
            continue
        fig.add_trace(
            go.Scatter(
                x=[p.val for p in sel], y=[p.public for p in sel], mode="markers", name=kind,
                marker={"symbol": symbols[kind], "size": 10},
                text=[p.name for p in sel], customdata=[[kind, p.id] for p in sel],
                hovertemplate="%{text}<br>val %{x:.4f}<br>public %{y:.4f}<extra></extra>",
            )
        )
    if correlation.slope is not None and correlation.intercept is not None and pts:
        lo, hi = min(p.val for p in pts), max(p.val for p in pts)
        fig.add_trace(
            go.Scatter(x=[lo, hi], y=[correlation.intercept + correlation.slope * lo,
                                      correlation.intercept + correlation.slope * hi],
                       mode="lines", name="fit", line={"dash": "dot", "color": "#555"})
        )
    fig.update_layout(
        title=f"{metric}: Pearson {_fmt(correlation.pearson)}, Spearman {_fmt(correlation.spearman)} "
        f"(n={correlation.n})",
        xaxis_title=f"validation {metric}", yaxis_title="public score", **{**_LAYOUT, "height": 380},
    )
    return fig


# per_class entries that are pixel counts, not 0-1 scores
_COUNTS = frozenset({"support", "predicted", "tp", "fp", "fn"})


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def per_class_metrics(classes: Sequence[str], per_class: Mapping[str, Sequence[float | None]]) -> go.Figure:
    """Grouped bars of per-class scores (``{"iou": [...], "dice": [...]}``) on a 0-1 axis.

    Counts that ride along in ``per_class`` (``support``: labelled pixels per class) are not scores
    and are left out; the per-class table shows them.
    """
    fig = go.Figure()
    for kind, values in per_class.items():
        if kind in _COUNTS:
            continue
        fig.add_trace(go.Bar(x=list(classes)[: len(values)], y=list(values), name=kind))
    fig.update_layout(barmode="group", title="Per-class validation metrics", yaxis_range=[0, 1], **_LAYOUT)
    return fig


def member_scores(
    names: Sequence[str], scores: Sequence[float | None], *, candidate: float | None, metric: str
) -> go.Figure:
    """Each member's score next to the candidate ensemble's (a horizontal line)."""
    fig = go.Figure(go.Bar(x=list(names), y=list(scores), marker_color=COMMON_COLOR, name="members"))
    if candidate is not None:
        fig.add_hline(y=candidate, line_dash="dash", line_color=RARE_COLOR,
                      annotation_text=f"ensemble {candidate:.4f}")
    fig.update_layout(title=f"Validation {metric}: members and the candidate", **_LAYOUT)
    return fig
