"""The training-crop controls of the experiment form: mode, fixed size, rare-class probability, auto preview."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import streamlit as st

from webapp import resources
from worker.errors import SegcoreError, ServiceError

__all__ = ["CROP_MODES", "crop_size", "crop_controls"]

# data.crop_size as the form offers it (docs/recipes.md, "Resolution policy").
CROP_MODES: dict[str, str] = {
    "none": "train on whole images",
    "auto": "three quarters of the median short side, clamped to [256, 512], chosen once per run",
    "fixed": "random crops of the height and width given",
}


def crop_size(mode: str, height: int, width: int) -> str | list[int] | None:
    """``data.crop_size`` from the form's crop mode (one of :data:`CROP_MODES`) and fixed size."""
    if mode == "auto":
        return "auto"
    return [height, width] if mode == "fixed" else None


def crop_controls(ds: Any, cfg: dict[str, Any], *, key: Callable[[str], str]) -> None:
    """Set ``cfg["data"]``'s ``crop_size`` and ``rare_class_crop.p`` from the controls (keys made by ``key``)."""
    c = st.columns(4)
    mode = c[0].selectbox("Training crop", list(CROP_MODES), key=key("crop_mode"),
                          format_func=lambda m: f"{m}: {CROP_MODES[m]}",
                          help="Validation and prediction always run on whole images.")
    ch = int(c[1].number_input("Crop height", min_value=32, step=32, key=key("crop_h"), disabled=mode != "fixed"))
    cw = int(c[2].number_input("Crop width", min_value=32, step=32, key=key("crop_w"), disabled=mode != "fixed"))
    cfg["data"]["crop_size"] = crop_size(mode, ch, cw)
    rare = c[3].number_input(
        "Rare-class crop probability", min_value=0.0, max_value=1.0, step=0.05, key=key("rare_p"),
        help="Chance that a training crop is placed on a pixel of a rare class (weights 1/sqrt(pixel share) "
             "by default) instead of uniformly; needs a training crop. 0 disables.")
    rc = cfg["data"].get("rare_class_crop")
    cfg["data"]["rare_class_crop"] = {**(rc if isinstance(rc, dict) else {}), "p": float(rare)}
    if mode == "auto":
        _caption(ds, cfg)


def _caption(ds: Any, cfg: dict[str, Any]) -> None:
    """The size ``auto`` comes to on the picked dataset (from its stored image sizes)."""
    sections = json.dumps({"data": cfg["data"], "model": cfg.get("model") or {}}, sort_keys=True, default=str)
    try:
        text = resources.crop_preview(ds.id, sections)
    except (ServiceError, SegcoreError):  # a field above is invalid: its error shows when queueing
        st.caption("The auto crop size shows here once the image size and model fields are valid.")
        return
    st.caption(f"Training crop on {ds.name}: {text}. A run fixes it once, from its own training split.")
