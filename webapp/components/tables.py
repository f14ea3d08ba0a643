"""Tables built from read models (pure functions returning pandas frames)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from webapp.components.links import page_url

__all__ = ["METRIC_COLUMNS", "row_key", "row_label", "leaderboard_frame", "correlation_frame", "per_class_frame",
           "data_policy_frame"]

# The validation metric kinds that get a leaderboard column (the worker's METRIC_KINDS).
METRIC_COLUMNS: tuple[str, ...] = ("miou", "miou_per_image", "dice", "dice_per_image", "pixel_accuracy")


def row_key(row: Any) -> str:
    """``"run:3"``, ``"group:2"``, ``"ensemble:1"`` (a student is a run)."""
    kind = row.kind.value if hasattr(row.kind, "value") else str(row.kind)
    return f"{'run' if kind == 'student' else kind}:{row.id}"


def row_label(row: Any) -> str:
    """A short label for pickers: ``"[group 2] unet-folds [2 folds x 1 seed]"``."""
    kind = row.kind.value if hasattr(row.kind, "value") else str(row.kind)
    return f"[{kind} {row.id}] {row.name}"


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def leaderboard_frame(
    rows: Sequence[Any], names: Mapping[int | None, str], *, inspect: bool = False
) -> pd.DataFrame:
    """One line per leaderboard row: kind, name, owner, model, a column per metric kind, OOF, public, gap, flag.

    Args:
        rows: ``LeaderboardRow`` models.
        names: Member id -> name.
        inspect: Add an ``inspect`` link column (when the Inspect page is installed).

    Returns:
        A frame whose ``detail`` (and ``inspect``) columns hold relative page URLs.
    """
    records = []
    for r in rows:
        kind = r.kind.value
        rec: dict[str, Any] = {
            "kind": kind,
            "id": r.id,
            "name": r.name,
            "owner": names.get(r.owner_id, "?"),
            "model": f"{r.arch} / {r.encoder}" if r.arch else ("ensemble" if kind == "ensemble" else ""),
            "runs": r.n_runs,
            "monitor": r.monitor_metric,
            "val": r.val_score,
            "validated on": r.validated_on or "",
        }
        for k in METRIC_COLUMNS:
            rec[k] = r.metrics.get(k)
        std = r.metrics_std.get(r.monitor_metric) if r.metrics_std else None
        rec["mean ± std"] = _pm(r.metrics.get(r.monitor_metric), std) if kind == "group" else ""
        rec["OOF"] = r.oof_score
        rec["public"] = r.public_score
        rec["gap"] = r.gap
        rec["submissions"] = r.n_submissions
        rec["public↑ val↓"] = bool(r.public_up_val_down)
        rec["flag vs"] = r.flag_reference or ""
        rec["lineage"] = r.parent or ""
        rec["tags"] = ", ".join(r.tags)
        param = {"run": "run", "student": "run", "group": "group"}.get(kind, "ensemble")
        rec["detail"] = page_url("ensemble-builder" if kind == "ensemble" else "run", **{param: r.id})
        if inspect:
            rec["inspect"] = page_url("inspect", **{param: r.id})
        records.append(rec)
    columns = ["kind", "id", "name", "owner", "model", "runs", "monitor", "val", "validated on", *METRIC_COLUMNS,
               "mean ± std", "OOF", "public", "gap", "submissions", "public↑ val↓", "flag vs", "lineage", "tags",
               "detail"]
    if inspect:
        columns.append("inspect")
    return pd.DataFrame.from_records(records, columns=columns)


def correlation_frame(report: Any) -> pd.DataFrame:
    """Per metric kind: points, Pearson and Spearman (with p-values), the fitted slope."""
    return pd.DataFrame(
        [
            {"metric": m, "n": c.n, "pearson": c.pearson, "pearson p": c.pearson_p, "spearman": c.spearman,
             "spearman p": c.spearman_p, "slope": c.slope}
            for m, c in report.metrics.items()
        ],
        columns=["metric", "n", "pearson", "pearson p", "spearman", "spearman p", "slope"],
    )


def per_class_frame(classes: Sequence[str], best_metrics: Mapping[str, Any] | None) -> pd.DataFrame:
    """Per-class metrics (``best_metrics["per_class"]``) as a class x metric table."""
    per_class = (best_metrics or {}).get("per_class") or {}
    data: dict[str, Any] = {"class": list(classes)}
    for kind, values in per_class.items():
        if isinstance(values, list):
            vals = list(values) + [None] * (len(classes) - len(values))
            data[kind] = vals[: len(classes)]
    return pd.DataFrame(data)


def data_policy_frame(classes: Sequence[str], policy: Any) -> pd.DataFrame:
    """Per class: pixel share, crop weight and loss weight of a run's data policy (the lists it has).

    Returns:
        A frame with a ``class`` column and one column per list the policy holds; empty when it holds none.
    """
    lists = {"pixel share": policy.class_shares, "crop weight": policy.rare_crop_weights,
             "loss weight": policy.loss_weights}
    lists = {k: list(v) for k, v in lists.items() if v}
    if not lists:
        return pd.DataFrame(columns=["class"])
    n = max(len(v) for v in lists.values())
    names = list(classes)[:n] + [f"class {i}" for i in range(len(classes), n)]
    return pd.DataFrame({"class": names, **{k: v + [None] * (n - len(v)) for k, v in lists.items()}})
