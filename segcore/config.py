"""The experiment config: one typed, JSON/YAML round-trippable contract from form to worker.

No torch import here: the web app builds its forms from this module and :mod:`segcore.catalog`.
The data section (sources, splits, ``DataConfig``) lives in :mod:`segcore._config_data`, how validation
errors read in :mod:`segcore._config_messages`, and the bounds in :mod:`segcore.limits`; the first two are
re-exported here: import every name from this module.

Example:
    >>> cfg = ExperimentConfig.model_validate({
    ...     "name": "baseline",
    ...     "data": {"source": {"format": "mask_folder", "root": "/data/sbd"},
    ...              "classes": ["sky", "tree"]},
    ...     "model": {"arch": "Unet", "encoder": "resnet18"},
    ...     "loss": "0.6*ce + 0.4*jaccard",
    ... })
    >>> cfg.loss.terms[1].name
    'jaccard'
"""

from __future__ import annotations

import enum
import json
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from segcore import catalog as _catalog, limits
from segcore._config_data import (
    CocoSource,
    DataConfig,
    DatasetSource,
    HoldoutSplit,
    KFoldSplit,
    MaskFolderSource,
    MultilabelJsonSource,
    PathText,
    PredefinedSplit,
    RareClassCropConfig,
    Seed,
    SplitConfig,
    TaskType,
    _Strict,
)
from segcore._config_messages import field_problems, format_validation_error
from segcore.errors import ConfigError
from segcore.plugins import PluginRecord

__all__ = [
    "SCHEMA_VERSION",
    "TaskType",
    "Precision",
    "CocoSource",
    "MaskFolderSource",
    "MultilabelJsonSource",
    "DatasetSource",
    "PredefinedSplit",
    "HoldoutSplit",
    "KFoldSplit",
    "SplitConfig",
    "RareClassCropConfig",
    "DataConfig",
    "ModelConfig",
    "LossTerm",
    "LossConfig",
    "TransformSpec",
    "MixingConfig",
    "AugmentationConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "TrainingConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "load_config",
    "dump_config",
    "parse_config",
    "format_validation_error",
    "field_problems",
]

SCHEMA_VERSION: Final = 1

Params = Annotated[dict[str, Any], AfterValidator(limits.check_params)]
"""Free-form keyword arguments: JSON-like values of bounded size (see :func:`segcore.limits.check_params`)."""


class Precision(str, enum.Enum):
    """``auto`` picks bf16 autocast where the device supports it fast, fp16 on CUDA without bf16."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


# ---------------------------------------------------------------- model


class ModelConfig(_Strict):
    arch: str = "Unet"
    encoder: str = "resnet18"
    encoder_weights: str | None = Field(
        default=None, max_length=100,
        description="'imagenet' etc. (downloads on first use), or None for random init.",
    )
    encoder_weights_path: PathText | None = Field(
        default=None, description="Local file of encoder weights (offline sites); overrides encoder_weights."
    )
    in_channels: int = Field(default=3, ge=1, le=limits.MAX_IN_CHANNELS)
    params: Params = Field(
        default_factory=dict, description="Extra keyword arguments for the smp architecture."
    )

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        _catalog.check_plugin_name("models", v)
        if v not in _catalog.ARCHITECTURES:
            raise ValueError(f"unknown architecture {v!r}; valid choices: {', '.join(_catalog.ARCHITECTURES)}")
        return v

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, v: str) -> str:
        if not _catalog.is_known_encoder(v):
            m = re.match(r"[a-z_]*", v.lower())
            stem = m.group(0) if m else ""
            close = [n for n in _catalog.encoder_names() if stem and n.startswith(stem)][:12]
            hint = f" Similar: {', '.join(close)}." if close else ""
            raise ValueError(
                f"unknown encoder {v!r}; use an smp encoder name (see the catalog) or 'tu-<timm model>'.{hint}"
            )
        return v


# ---------------------------------------------------------------- loss

_TERM_RE = re.compile(r"^\s*(?:(\d*\.?\d+(?:e-?\d+)?)\s*\*\s*)?([a-z_]+)\s*$")


class LossTerm(_Strict):
    name: str
    weight: float = Field(default=1.0, gt=0, le=limits.MAX_PARAM_NUMBER)
    params: Params = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        _catalog.check_plugin_name("losses", v)
        if v not in _catalog.LOSSES:
            raise ValueError(f"unknown loss {v!r}; valid choices: {', '.join(_catalog.LOSSES)}")
        return v


class LossConfig(_Strict):
    """A weighted sum of loss terms. Accepts the string form ``"0.6*ce + 0.4*jaccard"``."""

    terms: list[LossTerm] = Field(min_length=1, max_length=limits.MAX_LOSS_TERMS)

    @model_validator(mode="before")
    @classmethod
    def _parse_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"terms": parse_loss_expression(data)}
        return data

    def expression(self) -> str:
        return " + ".join(f"{t.weight:g}*{t.name}" for t in self.terms)


def parse_loss_expression(text: str) -> list[dict[str, Any]]:
    """``"0.6*ce + 0.4*jaccard"`` -> ``[{"name": "ce", "weight": 0.6}, ...]``."""
    terms = []
    for part in text.split("+"):
        m = _TERM_RE.match(part)
        if not m:
            raise ValueError(
                f"cannot read loss term {part.strip()!r} in {text!r}; write e.g. '0.6*ce + 0.4*jaccard'"
            )
        weight, name = m.groups()
        terms.append({"name": name, "weight": float(weight) if weight else 1.0})
    return terms


# ---------------------------------------------------------------- augmentation


class TransformSpec(_Strict):
    name: str = Field(max_length=100, description="An albumentations transform class name.")
    params: Params = Field(default_factory=dict)
    p: float = Field(default=0.5, ge=0, le=1)

    @field_validator("params")
    @classmethod
    def _bounded_sizes(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in ("height", "width", "size", "min_height", "min_width", "max_height", "max_width"):
            sides = v.get(key)
            for side in sides if isinstance(sides, (list, tuple)) else [sides]:
                if isinstance(side, (int, float)) and not isinstance(side, bool) and side > limits.MAX_IMAGE_SIDE:
                    raise ValueError(f"params.{key}: sides must be at most {limits.MAX_IMAGE_SIDE} px, got {side:g}")
        return v


class MixingConfig(_Strict):
    """Batch-level mixing. Probabilities are per batch; 0 disables."""

    cutmix_p: float = Field(default=0.0, ge=0, le=1)
    cutmix_alpha: float = Field(default=1.0, gt=0)
    mixup_p: float = Field(default=0.0, ge=0, le=1)
    mixup_alpha: float = Field(default=0.4, gt=0)
    copy_paste_p: float = Field(default=0.0, ge=0, le=1, description="Chance to paste rare objects into an image.")
    copy_paste_classes: list[str] = Field(
        default_factory=list, max_length=limits.MAX_CLASSES,
        description="Classes whose objects are pasted; empty = the rarest third.",
    )
    copy_paste_max_objects: int = Field(default=3, ge=1, le=limits.MAX_COPY_PASTE_OBJECTS)
    copy_paste_bank_size: int = Field(default=256, ge=1, le=limits.MAX_COPY_PASTE_BANK)


class AugmentationConfig(_Strict):
    preset: str = Field(default="basic", description="A named preset; `transforms` are appended after it.")
    transforms: list[TransformSpec] = Field(default_factory=list, max_length=limits.MAX_TRANSFORMS)
    mixing: MixingConfig = Field(default_factory=MixingConfig)
    normalize: Literal["imagenet", "unit"] = Field(
        default="imagenet", description="imagenet mean/std, or plain scaling to [0, 1]."
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        _catalog.check_plugin_name("augmentations", v)
        if v not in _catalog.AUGMENTATION_PRESETS:
            raise ValueError(
                f"unknown augmentation preset {v!r}; valid choices: {', '.join(_catalog.AUGMENTATION_PRESETS)}"
            )
        return v


# ---------------------------------------------------------------- optimisation


class OptimizerConfig(_Strict):
    name: str = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    encoder_lr_mult: float = Field(default=1.0, gt=0, description="Encoder lr = lr x this (e.g. 0.1 for pretrained).")
    lookahead: bool = False
    lookahead_k: int = Field(default=5, ge=1, le=1000)
    lookahead_alpha: float = Field(default=0.5, gt=0, le=1)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in _catalog.OPTIMIZERS:
            raise ValueError(f"unknown optimizer {v!r}; valid choices: {', '.join(_catalog.OPTIMIZERS)}")
        return v


class SchedulerConfig(_Strict):
    name: str = "cosine"
    warmup_epochs: float = Field(default=0.0, ge=0, le=limits.MAX_EPOCHS)
    min_lr: float = Field(default=1e-6, ge=0)
    restart_epochs: int = Field(default=10, ge=1, le=limits.MAX_EPOCHS)
    restart_mult: int = Field(default=1, ge=1, le=100)
    power: float = Field(default=0.9, gt=0, le=100)
    factor: float = Field(default=0.5, gt=0, lt=1)
    patience: int = Field(default=3, ge=0, le=limits.MAX_EPOCHS)
    max_lr_factor: float = Field(default=10.0, gt=0, le=10_000)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in _catalog.SCHEDULERS:
            raise ValueError(f"unknown scheduler {v!r}; valid choices: {', '.join(_catalog.SCHEDULERS)}")
        return v


class TrainingConfig(_Strict):
    epochs: int = Field(default=20, ge=1, le=limits.MAX_EPOCHS)
    batch_size: int = Field(default=8, ge=1, le=limits.MAX_BATCH_SIZE)
    accumulate: int = Field(default=1, ge=1, le=limits.MAX_ACCUMULATE, description="Gradient accumulation steps.")
    precision: Precision = Precision.AUTO
    channels_last: bool | None = Field(default=None, description="None: on where it is faster (CPU, CUDA).")
    ema_decay: float | None = Field(default=None, gt=0, lt=1, description="EMA of weights, e.g. 0.999.")
    swa_start_epoch: int | None = Field(default=None, ge=1, le=limits.MAX_EPOCHS,
                                        description="Average weights from this epoch on.")
    early_stopping_patience: int | None = Field(default=None, ge=1, le=limits.MAX_EPOCHS)
    grad_clip: float | None = Field(default=None, gt=0)
    seed: Seed = 0
    num_workers: int | None = Field(
        default=None, ge=0, le=64,
        description="Data loader processes per device. None: 0 on the CPU, min(8, cores per device) on CUDA.",
    )
    device: str = Field(default="auto", max_length=32, description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    devices: int | list[int] | None = Field(
        default=None,
        description="Train one run on several devices with DDP: CUDA indices ([0, 1]) or a count (2; on the "
        "CPU, processes). batch_size is per device. None: one device.",
    )
    compile: bool = Field(default=False, description="torch.compile the training forward (warm-up is reported).")
    sync_batchnorm: bool = Field(default=True, description="With several CUDA devices, BatchNorm statistics "
                                 "over the global batch (SyncBatchNorm).")
    steps_per_epoch: int | None = Field(default=None, ge=1, le=limits.MAX_STEPS_PER_EPOCH,
                                        description="Cap on steps per epoch (quick trials).")
    checkpoint_every: int = Field(default=1, ge=1, le=limits.MAX_EPOCHS,
                                  description="Save a resumable checkpoint every N epochs.")

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: int | list[int] | None) -> int | list[int] | None:
        top = limits.MAX_DEVICES
        if isinstance(v, int) and not 1 <= v <= top:
            raise ValueError(f"devices must be a count from 1 to {top} or a list of CUDA indices, got {v}")
        if isinstance(v, list):
            if not v or len(v) > top or any(not 0 <= d < top for d in v):
                raise ValueError(f"devices must list at most {top} CUDA indices (0..{top - 1}), got {v[:8]}")
        return v


class EvaluationConfig(_Strict):
    monitor: str = Field(default="miou", description="Metric that selects the best checkpoint.")
    threshold: float = Field(default=0.5, gt=0, lt=1, description="Multilabel probability threshold.")
    every: int = Field(default=1, ge=1, le=limits.MAX_EPOCHS,
                       description="Validate every N epochs (and always at the last).")

    @field_validator("monitor")
    @classmethod
    def _known(cls, v: str) -> str:
        _catalog.check_plugin_name("metrics", v)
        if v not in _catalog.METRICS:
            raise ValueError(f"unknown metric {v!r}; valid choices: {', '.join(_catalog.METRICS)}")
        return v


class ExperimentConfig(PluginRecord, _Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(default="experiment", min_length=1, max_length=limits.MAX_NAME_CHARS)
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=lambda: LossConfig(terms=[LossTerm(name="ce")]))
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tags: list[Annotated[str, Field(max_length=limits.MAX_TAG_CHARS)]] = Field(
        default_factory=list, max_length=limits.MAX_TAGS
    )
    note: str = Field(default="", max_length=limits.MAX_NOTE_CHARS)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        task = self.data.task.value
        for term in self.loss.terms:
            tasks = _catalog.LOSSES[term.name]["tasks"]
            if task not in tasks:
                raise ValueError(
                    f"loss {term.name!r} is for {' or '.join(tasks)} tasks, not {task}; "
                    f"choose from: {', '.join(n for n, m in _catalog.LOSSES.items() if task in m['tasks'])}"
                )
            if term.name == "weighted_ce":
                w = term.params.get("weights")
                if w != "auto" and (not isinstance(w, list) or len(w) != self.data.num_classes):
                    raise ValueError(
                        f"loss 'weighted_ce' needs params.weights: 'auto' (1/sqrt of each class's pixel share "
                        f"in the training split) or one weight per class ({self.data.num_classes}), got {w!r}"
                    )
        if self.data.task is TaskType.MULTILABEL and self.evaluation.monitor.startswith("miou"):
            # allowed, but the standard for multilabel is dice; no error
            pass
        if self.model.arch in _catalog.VIT_ONLY_ARCHITECTURES and not self.model.encoder.startswith("tu-"):
            raise ValueError(f"{self.model.arch} needs a transformer encoder such as 'tu-vit_tiny_patch16_224'")
        missing = [c for c in self.augmentation.mixing.copy_paste_classes if c not in self.data.classes]
        if missing:
            raise ValueError(f"copy_paste_classes {missing} are not among the classes {self.data.classes}")
        used = _catalog.plugin_packages(arch=self.model.arch, losses=[t.name for t in self.loss.terms],
                                        preset=self.augmentation.preset, monitor=self.evaluation.monitor)
        object.__setattr__(self, "plugins", used)  # not validated assignment: that would run this again
        return self

    # --------------------------------------------------------- round trips

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def parse_config(data: dict[str, Any] | str) -> ExperimentConfig:
    """Validate a dict (or a YAML/JSON string) into an :class:`ExperimentConfig`.

    Raises:
        ConfigError: naming every invalid field and the valid choices.
    """
    if isinstance(data, str):
        try:
            data = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise ConfigError(f"the config is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("invalid experiment config:\n" + format_validation_error(exc)) from exc


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a YAML or JSON config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
    return parse_config(text)


def dump_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write YAML (``.yaml``/``.yml``) or JSON, atomically."""
    from segcore.io import atomic_write_text

    p = Path(path)
    text = cfg.to_yaml() if p.suffix in {".yaml", ".yml"} else cfg.to_json()
    atomic_write_text(p, text)


def _json_default(o: Any) -> Any:  # pragma: no cover - used by callers serialising configs
    if isinstance(o, enum.Enum):
        return o.value
    raise TypeError(type(o).__name__)


def config_hash(cfg: ExperimentConfig) -> str:
    """A stable short hash of the config's content (for de-duplication and lineage)."""
    import hashlib

    payload = json.dumps(cfg.to_dict(), sort_keys=True, default=_json_default)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
