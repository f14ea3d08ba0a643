"""Plotly figures and legends of the Inspect page, built from ``segcore.analysis`` reports (pure functions).

Each figure function returns a ``plotly.graph_objects.Figure`` with a title and draws nothing, so
tests assert the figure's data. The error colours are the fixed ones of the overlay's error map
(:data:`segcore.analysis.ERROR_LEGEND`), so a bar and a pixel of the same kind look the same.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from segcore.config import TaskType
from worker.services.inspection import COMPARISON_LEGEND, ERROR_LEGEND

__all__ = [
    "ERROR_COLOURS",
    "COMPARE_COLOURS",
    "per_class_metrics",
    "confusion_heatmap",
    "taxonomy_bars",
    "boundary_bars",
    "object_recall",
    "confidence_histogram",
    "comparison_bars",
    "legend_html",
    "size_bin_label",
]

_LAYOUT = {"margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "height": 340}


def _rgb(c: Sequence[int]) -> str:
    return f"rgb({c[0]}, {c[1]}, {c[2]})"


#: Error kind (report key) -> (label, CSS colour), in the overlay's fixed colours.
ERROR_COLOURS: dict[str, tuple[str, str]] = {
    key: (label.split(" (")[0], _rgb(rgb))
    for key, (_, label, rgb) in zip(("under_prediction", "over_prediction", "wrong_class"), ERROR_LEGEND, strict=True)
}
#: Comparison kind (report key) -> (label, CSS colour).
COMPARE_COLOURS: dict[str, tuple[str, str]] = {
    key: (label, _rgb(rgb))
    for key, (_, label, rgb) in zip(("a_right_b_wrong", "b_right_a_wrong", "both_wrong"), COMPARISON_LEGEND,
                                     strict=True)
}


def per_class_metrics(fold: Any) -> go.Figure:
    """Grouped bars of IoU, Dice, precision and recall per class (a ``FoldMetrics``)."""
    names = [c.name for c in fold.classes]
    fig = go.Figure()
    for metric in ("iou", "dice", "precision", "recall"):
        fig.add_bar(name=metric, x=names, y=[getattr(c, metric) for c in fold.classes],
                    customdata=[c.support for c in fold.classes],
                    hovertemplate="%{x}: %{y:.4f}<br>support %{customdata} px<extra>" + metric + "</extra>")
    title = f"Per-class metrics ({'all folds' if fold.fold == 'all' else 'fold ' + fold.fold}, {fold.n_images} images)"
    fig.update_layout(title=title, barmode="group", yaxis={"range": [0, 1], "title": "score"}, **_LAYOUT)
    return fig


def confusion_heatmap(confusion: Any, classes: Sequence[str]) -> go.Figure:
    """The row-normalised confusion matrix: row = ground truth, column = prediction."""
    z = confusion.normalized
    text = [[f"{v:.2f}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(classes), y=list(classes), zmin=0, zmax=1, colorscale="Blues", text=text,
        texttemplate="%{text}", customdata=confusion.counts,
        hovertemplate="truth %{y} -> predicted %{x}: %{z:.3f} (%{customdata} px)<extra></extra>",
    ))
    fig.update_layout(title="Confusion matrix (rows: ground truth, normalised)", xaxis={"title": "predicted"},
                      yaxis={"title": "ground truth", "autorange": "reversed"}, **_LAYOUT)
    return fig


def taxonomy_bars(taxonomy: Any) -> go.Figure:
    """Stacked bars of each class's errors: under-prediction, over-prediction, wrong class.

    Multilabel tasks (and classes without a background rule) show false negatives and false
    positives instead.
    """
    classes = list(taxonomy.classes)
    names = [c.name for c in classes]
    fig = go.Figure()
    if classes and classes[0].under_prediction is not None:
        for key, (label, colour) in ERROR_COLOURS.items():
            fig.add_bar(name=label, x=names, y=[getattr(c, key) or 0 for c in classes], marker_color=colour)
    elif classes and classes[0].wrong_class is not None and taxonomy.task == TaskType.MULTICLASS:
        label, colour = ERROR_COLOURS["wrong_class"]
        fig.add_bar(name=label, x=names, y=[c.wrong_class or 0 for c in classes], marker_color=colour)
    else:
        fig.add_bar(name="false negatives (missed)", x=names, y=[c.false_negatives for c in classes],
                    marker_color=ERROR_COLOURS["under_prediction"][1])
        fig.add_bar(name="false positives (invented)", x=names, y=[c.false_positives for c in classes],
                    marker_color=ERROR_COLOURS["over_prediction"][1])
    shares = ", ".join(f"{ERROR_COLOURS[k][0]} {v:.0%}" for k, v in taxonomy.shares.items()
                       if v is not None and k in ERROR_COLOURS)
    fig.update_layout(title="Error taxonomy per class" + (f" ({shares})" if shares else ""), barmode="stack",
                      yaxis={"title": "wrong pixels"}, **_LAYOUT)
    return fig


def boundary_bars(boundary: Any) -> go.Figure:
    """Stacked bars of each class's errors on the boundary band and in the interior, with boundary IoU."""
    classes = list(boundary.classes)
    names = [c.name for c in classes]
    fig = go.Figure()
    fig.add_bar(name=f"within {boundary.boundary_px} px of a boundary", x=names,
                y=[c.boundary_errors for c in classes], marker_color="rgb(119, 119, 119)")
    fig.add_bar(name="interior", x=names, y=[c.interior_errors for c in classes], marker_color="rgb(187, 187, 187)",
                customdata=[("–" if c.boundary_iou is None else f"{c.boundary_iou:.3f}") for c in classes],
                hovertemplate="%{x}: %{y} px<br>boundary IoU %{customdata}<extra>interior</extra>")
    share = boundary.boundary_error_share
    title = "Boundary vs interior errors" + (f" ({share:.0%} on boundaries)" if share is not None else "")
    fig.update_layout(title=title, barmode="stack", yaxis={"title": "wrong pixels"}, **_LAYOUT)
    return fig


def size_bin_label(lower: int, upper: int | None) -> str:
    """``64-255 px`` or ``16384+ px``."""
    return f"{lower}+ px" if upper is None else f"{lower}-{upper - 1} px"


def object_recall(objects: Any) -> go.Figure:
    """Object recall per size bin, one bar group per class (bins without objects are left empty)."""
    fig = go.Figure()
    for c in objects.classes:
        bins = [b for b in c.bins]
        fig.add_bar(
            name=c.name, x=[size_bin_label(b.lower, b.upper) for b in bins], y=[b.recall for b in bins],
            customdata=[[b.found, b.objects] for b in bins],
            hovertemplate="%{x}: recall %{y:.2f} (%{customdata[0]} of %{customdata[1]} objects)<extra>"
            + c.name + "</extra>",
        )
    fig.update_layout(title=f"Object recall by size (found: {objects.found_share:.0%} of the object's pixels)",
                      barmode="group", yaxis={"range": [0, 1], "title": "recall"}, xaxis={"title": "object size"},
                      **_LAYOUT)
    return fig


def confidence_histogram(confidence: Any, class_index: int) -> go.Figure:
    """Histograms of the confidence of one class's correct and wrong pixels (overlaid bars)."""
    c = next(x for x in confidence.classes if x.class_index == class_index)
    edges = confidence.bin_edges
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    fig = go.Figure()
    fig.add_bar(name="correct", x=centres, y=c.correct, marker_color="rgb(0, 153, 136)", opacity=0.75)
    fig.add_bar(name="wrong", x=centres, y=c.wrong, marker_color=ERROR_COLOURS["wrong_class"][1], opacity=0.75)
    means = []
    if c.mean_correct is not None:
        means.append(f"mean correct {c.mean_correct:.2f}")
    if c.mean_wrong is not None:
        means.append(f"mean wrong {c.mean_wrong:.2f}")
    fig.update_layout(title=f"Confidence of {c.name} pixels" + (f" ({', '.join(means)})" if means else ""),
                      barmode="overlay", xaxis={"title": "confidence", "range": [0, 1]},
                      yaxis={"title": "pixels", "type": "log"}, **_LAYOUT)
    return fig


def comparison_bars(report: Any) -> go.Figure:
    """Per class: pixels where A is right and B wrong, the reverse, and both wrong."""
    names = [c.name for c in report.classes]
    fig = go.Figure()
    for key, (label, colour) in COMPARE_COLOURS.items():
        fig.add_bar(name=label, x=names, y=[getattr(c, key) for c in report.classes], marker_color=colour)
    fig.update_layout(title=f"A = {report.names[0]} vs B = {report.names[1]}", barmode="group",
                      yaxis={"title": "pixels"}, **_LAYOUT)
    return fig


def legend_html(entries: Sequence[tuple[str, Sequence[int]]]) -> str:
    """An inline legend: a coloured square and a label per ``(label, (r, g, b))`` entry."""
    items = []
    for label, rgb in entries:
        items.append(
            f'<span style="display:inline-flex;align-items:center;margin-right:1.2em">'
            f'<span style="width:14px;height:14px;background:{_rgb(rgb)};display:inline-block;'
            f'margin-right:6px;border:1px solid #444"></span>{html.escape(label)}</span>'
        )
    return '<div class="segboard-legend">' + "".join(items) + "</div>"
