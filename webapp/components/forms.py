"""Form pieces: the TTA policy picker, validation errors by field path, loss and transform rows.

The functions that turn rows and errors into config data are pure, so the tests check them
directly; the ``*_input`` functions draw widgets.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from segcore import catalog
from worker.errors import ConfigError

__all__ = [
    "SUBMISSION_FORMATS",
    "TTA_PRESETS",
    "tta_input",
    "field_errors",
    "errors_under",
    "show_field_errors",
    "loss_rows",
    "loss_terms",
    "transform_rows",
    "transform_specs",
    "parse_int_list",
    "parse_tags",
    "parse_values",
    "config_changes",
    "apply_split",
]

# The formats the worker's submission job writes.
SUBMISSION_FORMATS: dict[str, str] = {
    "csv_rle": "image_name,class,rle rows (run-length encoded masks), the usual Kaggle format.",
    "class_map": "image_id,PredictionString rows of class maps (multiclass).",
}

# JSON dumps of segcore.inference.tta.TTAPolicy (validated by the worker that runs the job).
TTA_PRESETS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "hflip": {"flips": ["h"], "rotations": [0], "scales": [1.0], "merge": "mean"},
    "flips": {"flips": ["h", "v"], "rotations": [0], "scales": [1.0], "merge": "mean"},
    "d4": {"flips": ["h"], "rotations": [0, 90, 180, 270], "scales": [1.0], "merge": "mean"},
    "flips + scales": {"flips": ["h"], "rotations": [0], "scales": [0.75, 1.0, 1.25], "merge": "mean"},
}
_TTA_HELP = {
    "none": "One plain view.",
    "hflip": "Plain + horizontal flip: 2 views.",
    "flips": "Horizontal x vertical flips: 4 views.",
    "d4": "Horizontal flip x 4 rotations: 8 views (for rotation-invariant images such as aerial or microscopy).",
    "flips + scales": "Horizontal flip x scales 0.75/1/1.25: 6 views.",
}


def tta_input(key: str, *, label: str = "Test-time augmentation") -> dict[str, Any] | None:
    """A TTA policy picker; returns the policy as JSON data (None: no TTA)."""
    name = st.selectbox(label, list(TTA_PRESETS), key=key, format_func=lambda n: f"{n}: {_TTA_HELP[n]}")
    return TTA_PRESETS[name]


# ----------------------------------------------------------------------------- validation errors

_LINE = re.compile(r"^\s*([A-Za-z0-9_.\[\]()-]+|\(config\)):\s(.*)$")
# Tags pydantic puts in a location for discriminated unions; they are not config fields.
_UNION_TAGS = {"coco", "mask_folder", "multilabel_json", "predefined", "holdout", "kfold", "function-after",
               "function-before", "function-wrap"}


def _path(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int) and str(p) not in _UNION_TAGS and "[" not in str(p)]
    return ".".join(parts) or "(config)"


def field_errors(exc: BaseException) -> dict[str, str]:
    """``{"model.encoder": "unknown encoder ..."}`` from a pydantic ``ValidationError`` or a ``ConfigError``.

    Problems that belong to no single field (cross-field checks) are under ``"(config)"``.
    """
    out: dict[str, str] = {}
    if isinstance(exc, ValidationError):
        for e in exc.errors():
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling)"
            path = _path(e["loc"])
            out[path] = f"{out[path]}; {msg}" if path in out else msg
        return out
    cause = exc.__cause__
    if isinstance(cause, ValidationError):
        return field_errors(cause)
    text = str(exc)
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and not line.lower().startswith("invalid experiment config"):
            path, msg = m.group(1), m.group(2)
            # service context such as "grid value x for loss: ..." keeps the whole line
            out[path] = f"{out[path]}; {msg}" if path in out else msg
    if not out:
        out["(config)"] = text
    return out


def errors_under(errors: Mapping[str, str], *prefixes: str) -> list[str]:
    """The messages whose field path is one of ``prefixes`` or below one."""
    return [
        f"{path}: {msg}" if path not in prefixes else msg
        for path, msg in errors.items()
        if any(path == p or path.startswith(p + ".") for p in prefixes)
    ]


def show_field_errors(errors: Mapping[str, str], *prefixes: str) -> None:
    """Draw the errors of the fields under ``prefixes`` right here (next to their widgets)."""
    for msg in errors_under(errors, *prefixes):
        st.error(msg, icon=":material/error:")


# ----------------------------------------------------------------------------- loss and transform rows


def loss_rows(loss: Any) -> pd.DataFrame:
    """Editable rows (term, weight, params as JSON) from a config's ``loss`` (dict, string or model)."""
    if hasattr(loss, "model_dump"):
        loss = loss.model_dump(mode="json")
    if isinstance(loss, str):
        from segcore.config import parse_loss_expression

        terms = parse_loss_expression(loss)
    else:
        terms = list((loss or {}).get("terms") or [])
    return pd.DataFrame(
        [{"term": t["name"], "weight": float(t.get("weight", 1.0)), "params": json.dumps(t.get("params") or {})}
         for t in terms],
        columns=["term", "weight", "params"],
    )


def _json_params(text: Any, where: str) -> dict[str, Any]:
    if text is None or (isinstance(text, float) and pd.isna(text)) or str(text).strip() in ("", "{}"):
        return {}
    try:
        value = json.loads(str(text))
    except ValueError as exc:
        raise ConfigError(f"{where}: params must be JSON such as {{\"gamma\": 2}}, got {text!r}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: params must be a JSON object such as {{\"gamma\": 2}}, got {text!r}")
    return value


def loss_terms(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The ``loss.terms`` list from edited rows; empty rows are dropped.

    Raises:
        ConfigError: a row's params are not a JSON object (the message names ``loss``).
    """
    terms = []
    for i, row in enumerate(rows.to_dict("records")):
        name = row.get("term")
        if name is None or (isinstance(name, float) and pd.isna(name)) or not str(name).strip():
            continue
        weight = row.get("weight")
        weight = 1.0 if weight is None or (isinstance(weight, float) and pd.isna(weight)) else float(weight)
        terms.append({"name": str(name).strip(), "weight": weight,
                      "params": _json_params(row.get("params"), f"loss: term {i + 1}")})
    return terms


def transform_rows(transforms: Sequence[Any]) -> pd.DataFrame:
    """Editable rows (transform, p, params as JSON) from ``augmentation.transforms``."""
    items = [t.model_dump(mode="json") if hasattr(t, "model_dump") else dict(t) for t in transforms or []]
    return pd.DataFrame(
        [{"transform": t["name"], "p": float(t.get("p", 0.5)), "params": json.dumps(t.get("params") or {})}
         for t in items],
        columns=["transform", "p", "params"],
    )


def transform_specs(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """``augmentation.transforms`` from edited rows; empty rows are dropped.

    Raises:
        ConfigError: params that are not a JSON object, or a transform the catalog does not offer.
    """
    out = []
    for i, row in enumerate(rows.to_dict("records")):
        name = row.get("transform")
        if name is None or (isinstance(name, float) and pd.isna(name)) or not str(name).strip():
            continue
        if name not in catalog.TRANSFORMS:
            raise ConfigError(
                f"augmentation.transforms: unknown transform {name!r}; choose from {', '.join(catalog.TRANSFORMS)}"
            )
        p = row.get("p")
        p = 0.5 if p is None or (isinstance(p, float) and pd.isna(p)) else float(p)
        out.append({"name": str(name), "p": p,
                    "params": _json_params(row.get("params"), f"augmentation.transforms: row {i + 1}")})
    return out


# ----------------------------------------------------------------------------- small parsers


def parse_int_list(text: str, *, what: str) -> list[int]:
    """``"0, 1, 2"`` -> ``[0, 1, 2]``.

    Raises:
        ValueError: a part is not an integer (the message names ``what``).
    """
    parts = [p.strip() for p in re.split(r"[,\s]+", text or "") if p.strip()]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"{what} must be whole numbers separated by commas, like '0, 1, 2'; got {text!r}") from None


def parse_tags(text: str) -> list[str]:
    """``"baseline, fpn"`` -> ``["baseline", "fpn"]``."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def parse_values(text: str) -> list[Any]:
    """Grid values from YAML: a list (``[0.001, 0.0003]``) or one value per line.

    Raises:
        ValueError: the text is not valid YAML.
    """
    import yaml

    text = (text or "").strip()
    if not text:
        return []
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"grid values must be a YAML list like [0.001, 0.0003]: {exc}") from exc
    if isinstance(value, list):
        return value
    lines = [yaml.safe_load(line) for line in text.splitlines() if line.strip()]
    return lines


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> pd.DataFrame:
    """Field-by-field differences between two config dicts (dotted paths), as a table."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    rows = []
    for path in sorted(set(a) | set(b)):
        x, y = a.get(path, missing), b.get(path, missing)
        if x != y:
            rows.append({"field": path, "from": "(absent)" if x is missing else repr(x),
                         "to": "(absent)" if y is missing else repr(y)})
    return pd.DataFrame(rows, columns=["field", "from", "to"])


def apply_split(cfg: dict[str, Any], *, n_folds: int, val_fraction: float) -> None:
    """The form's split into the config: k folds (the fold index is set per run at expansion), a hold-out
    share, or the config's predefined lists; the split's seed, stratification and group key are kept."""
    base = copy.deepcopy(cfg["data"].get("split") or {})
    keep = {k: base[k] for k in ("seed", "stratify", "group_key") if k in base}
    if n_folds > 1:
        fold = int(base.get("fold", 0)) if base.get("kind") == "kfold" else 0
        cfg["data"]["split"] = {"kind": "kfold", "n_folds": n_folds, "fold": min(fold, n_folds - 1),
                                **keep}
    elif base.get("kind") != "predefined":
        cfg["data"]["split"] = {"kind": "holdout", "val_fraction": val_fraction, **keep}
