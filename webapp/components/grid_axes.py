"""The ablation grid of the New experiment form: one or more axes, each a config path and its values.

Several axes make the full grid: one group of runs per combination of their values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from segcore import catalog
from webapp.components.forms import parse_values

__all__ = ["GRID_AXES", "MAX_AXES", "grid_values", "grid_editor"]

# Ablation axes offered in the form: label -> dotted config path (None: type a path).
GRID_AXES: dict[str, str | None] = {
    "each augmentation preset": "augmentation.preset",
    "each extra transform alone": "augmentation.transforms",
    "each loss": "loss",
    "each encoder": "model.encoder",
    "each architecture": "model.arch",
    "each optimizer": "optimizer.name",
    "each scheduler": "scheduler.name",
    "learning rates": "optimizer.lr",
    "another config field": None,
}
MAX_AXES = 4


def grid_values(axis: str, picked: list[Any]) -> list[Any]:
    """Grid values for an axis from what the form picked (loss names become one-term losses, transforms
    become one-transform lists)."""
    if axis == "loss":
        return [str(name) for name in picked]
    if axis == "augmentation.transforms":
        return [[{"name": name, "p": 0.5}] for name in picked]
    return list(picked)


def _options(axis: str | None) -> list[Any] | None:
    return {
        "augmentation.preset": lambda: list(catalog.AUGMENTATION_PRESETS),
        "augmentation.transforms": lambda: list(catalog.TRANSFORMS),
        "loss": lambda: list(catalog.LOSSES),
        "model.encoder": catalog.encoder_names,
        "model.arch": lambda: list(catalog.ARCHITECTURES),
        "optimizer.name": lambda: list(catalog.OPTIMIZERS),
        "scheduler.name": lambda: list(catalog.SCHEDULERS),
    }.get(axis or "", lambda: None)()


def _axis(key: Callable[[str], str], i: int) -> tuple[dict[str, Any] | None, str | None]:
    """Draw axis ``i`` (0-based); its ``{"path", "values"}`` and a problem to show."""
    suffix, name = ("", "") if i == 0 else (f"_{i + 1}", f" {i + 1}")
    c = st.columns([1, 2])
    label = c[0].selectbox(f"Axis{name}", list(GRID_AXES), key=key(f"grid_axis{suffix}"))
    axis = GRID_AXES[label]
    options = _options(axis)
    if axis is None:
        axis = c[1].text_input(f"Config path{name}", key=key(f"grid_path{suffix}"),
                               placeholder="e.g. training.batch_size").strip()
    if options is not None:
        values = grid_values(axis, c[1].multiselect(f"Values{name}", options, key=key(f"grid_values{suffix}")))
    else:
        text = st.text_input(f"Values{name} (YAML list)", key=key(f"grid_text{suffix}"),
                             placeholder="[0.001, 0.0003, 0.0001]")
        try:
            values = parse_values(text)
        except ValueError as exc:
            return None, str(exc)
    if axis and values:
        return {"path": axis, "values": values}, None
    return None, f"pick axis{name} and at least one value (or switch the grid off)"


def grid_editor(key: Callable[[str], str]) -> tuple[dict[str, Any] | None, str | None]:
    """Draw the grid toggle and its axes.

    Returns:
        ``({"axes": [{"path", "values"}, ...]}, None)``, ``(None, None)`` with the grid off, or
        ``(None, problem)`` when an axis is incomplete.
    """
    if not st.toggle("Ablation grid: one group of runs per value, or per combination of several axes' values",
                     key=key("grid_on")):
        return None, None
    n = int(st.number_input("Axes", min_value=1, max_value=MAX_AXES, value=1, step=1, key=key("grid_n"),
                            help="Several axes make the full grid: every combination of their values."))
    axes, problems = [], []
    for i in range(n):
        axis, problem = _axis(key, i)
        if axis is not None:
            axes.append(axis)
        if problem:
            problems.append(problem)
    paths = [a["path"] for a in axes]
    if len(set(paths)) != len(paths):
        problems.append("each axis must be a different config path")
    if problems:
        return None, "; ".join(problems)
    return {"axes": axes}, None
