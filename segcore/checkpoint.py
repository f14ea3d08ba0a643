"""Checkpoints: a folder holding the config that built the model next to its weights.

Layout::

    <dir>/config.json         ExperimentConfig (JSON)
    <dir>/model.safetensors   model weights (state dict)
    <dir>/metrics.json        validation metrics at this point
    <dir>/provenance.json     dataset fingerprint, package versions, plugin packages, seed, epoch, time
    <dir>/train_state.pt      only in resumable checkpoints: optimizer, scheduler, scaler, RNG, epoch

The folder is written to a temp folder and renamed, so a reader sees a whole checkpoint or none.
``train_state.pt`` holds only tensors and plain containers and is loaded with ``weights_only=True``.

Example:
    >>> ckpt = load_checkpoint("runs/42/checkpoints/best")  # doctest: +SKIP
    >>> probs = ckpt.model(x).softmax(1)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from segcore.config import ExperimentConfig, parse_config
from segcore.errors import CheckpointError, ConfigError
from segcore.io import atomic_dir

__all__ = [
    "Checkpoint", "save_checkpoint", "load_checkpoint", "read_checkpoint_meta", "package_versions", "plugin_versions"
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
PROVENANCE_FILE = "provenance.json"
TRAIN_STATE_FILE = "train_state.pt"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode) and what describes it."""

    model: torch.nn.Module
    config: ExperimentConfig
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    path: Path
    train_state: dict[str, Any] | None = field(default=None, repr=False)


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on, for provenance."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "segmentation-models-pytorch", "timm", "albumentations", "segboard"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def plugin_versions(config: ExperimentConfig) -> dict[str, str]:
    """The plugin packages ``config`` uses (:mod:`segcore.plugins`), with the versions installed here."""
    import importlib.metadata as md

    out = {}
    for name, recorded in config.plugins.items():
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = recorded
    return out


def _state_dict_for_save(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; clone each tensor to its own buffer
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    config: ExperimentConfig,
    metrics: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (replacing an existing one).

    Args:
        path: Folder to create.
        model: The model; its ``state_dict`` is saved in safetensors.
        config: The config that built the model.
        metrics: Validation metrics (JSON-able).
        provenance: Extra provenance (dataset fingerprint, seed, epoch); versions, plugin packages
            (``plugins``: name -> version) and time are added.
        train_state: Optimizer/scheduler/scaler/RNG state for resuming (tensors and plain containers only).
    """
    path = Path(path)
    prov = {"created": time.time(), "versions": package_versions(), "plugins": plugin_versions(config),
            **(provenance or {})}
    with atomic_dir(path, overwrite=True) as tmp:
        (tmp / CONFIG_FILE).write_text(config.to_json(), encoding="utf-8")
        save_file(_state_dict_for_save(model), str(tmp / WEIGHTS_FILE))
        (tmp / METRICS_FILE).write_text(json.dumps(metrics or {}, indent=2, default=_jsonable), encoding="utf-8")
        (tmp / PROVENANCE_FILE).write_text(json.dumps(prov, indent=2, default=_jsonable), encoding="utf-8")
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE_FILE)
    return path


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "value"):
        return o.value
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def read_checkpoint_meta(path: str | Path) -> tuple[ExperimentConfig, dict[str, Any], dict[str, Any]]:
    """Read config, metrics and provenance without building the model (no weights read)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist; train a run first or check the path")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (path / f).is_file()]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} is incomplete: missing {', '.join(missing)}; it was not written by segcore"
        )
    try:
        config = parse_config((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path} has an invalid config.json: {exc}") from exc
    metrics = _read_json(path / METRICS_FILE)
    provenance = _read_json(path / PROVENANCE_FILE)
    return config, metrics, provenance


def _read_json(p: Path) -> dict[str, Any]:
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p} is not valid JSON ({exc}); the checkpoint is damaged") from exc


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu", with_train_state: bool = False
) -> Checkpoint:
    """Rebuild the model from a checkpoint folder.

    Args:
        path: The checkpoint folder.
        device: Where to put the model.
        with_train_state: Also load ``train_state.pt`` (for resuming).

    Raises:
        CheckpointError: missing or damaged files, or weights that do not fit the config's model.
    """
    from segcore.models import build_model

    path = Path(path)
    config, metrics, provenance = read_checkpoint_meta(path)
    model_cfg = config.model.model_copy(update={"encoder_weights": None, "encoder_weights_path": None})
    model = build_model(model_cfg, num_classes=config.data.num_classes)
    try:
        state = load_file(str(path / WEIGHTS_FILE), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"cannot read weights {path / WEIGHTS_FILE}: {exc}") from exc
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"weights in {path} do not fit {config.model.arch}/{config.model.encoder}: "
            f"missing {list(result.missing_keys)[:5]}, unexpected {list(result.unexpected_keys)[:5]}"
        )
    model.to(device).eval()
    train_state = None
    if with_train_state:
        ts = path / TRAIN_STATE_FILE
        if not ts.is_file():
            raise CheckpointError(f"{path} is not resumable: {TRAIN_STATE_FILE} is missing")
        try:
            train_state = torch.load(ts, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot read {ts}: {exc}") from exc
    return Checkpoint(model, config, metrics, provenance, path, train_state)
