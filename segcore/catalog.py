"""What SegBoard can build, as plain data (no torch import), for forms, docs and validation.

The runtime registries in :mod:`segcore.models`, :mod:`segcore.losses`,
:mod:`segcore.data.transforms` and :mod:`segcore.training.optim` register exactly these
names; ``tests/test_catalog.py`` checks that the two never drift apart.

:data:`ARCHITECTURES`, :data:`LOSSES`, :data:`AUGMENTATION_PRESETS` and :data:`METRICS` hold the
built-in entries (``BUILTIN_*``) followed by those of installed plugins (:mod:`segcore.plugins`),
which are scanned the first time a name that is not built in is looked up or the mapping is listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from segcore import plugins as _plugins

__all__ = [
    "ARCHITECTURES",
    "LOSSES",
    "AUGMENTATION_PRESETS",
    "TRANSFORMS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "METRICS",
    "ENCODER_FAMILIES",
    "BUILTIN_ARCHITECTURES",
    "BUILTIN_LOSSES",
    "BUILTIN_AUGMENTATION_PRESETS",
    "BUILTIN_METRICS",
    "catalog",
    "check_plugin_name",
    "plugin_packages",
    "is_known_encoder",
]

V = TypeVar("V")

# smp architecture name -> description
BUILTIN_ARCHITECTURES: dict[str, str] = {
    "Unet": "U-Net: encoder-decoder with skip connections; the solid default.",
    "UnetPlusPlus": "U-Net++: nested dense skip pathways; stronger, heavier decoder.",
    "FPN": "Feature Pyramid Network decoder; fast, good on multi-scale objects.",
    "PSPNet": "Pyramid pooling module; global context, coarse output.",
    "DeepLabV3": "Atrous spatial pyramid pooling; strong context, output stride 8.",
    "DeepLabV3Plus": "DeepLabV3 with a light decoder for sharper boundaries.",
    "Linknet": "Lightweight residual decoder; fastest of the U-shaped models.",
    "MAnet": "Multi-scale attention decoder.",
    "PAN": "Pyramid attention network.",
    "UPerNet": "Unified perceptual parsing decoder (PPM + FPN), common with transformers.",
    "Segformer": "SegFormer's all-MLP decoder.",
    "DPT": "Dense prediction transformer decoder (needs a ViT encoder).",
}

# Architectures that only accept transformer encoders; the contract tests use a ViT for them.
VIT_ONLY_ARCHITECTURES = frozenset({"DPT"})

# Encoder families the recipes use, with one small representative each (used by tests).
ENCODER_FAMILIES: dict[str, str] = {
    "resnet": "resnet18",
    "efficientnet": "efficientnet-b0",
    "mobilenet": "mobilenet_v2",
    "mix_transformer": "mit_b0",
    "timm-resnet": "tu-resnet18",
    "timm-convnext": "tu-convnext_atto",
    "timm-hrnet": "tu-hrnet_w18_small",
    "timm-regnet": "tu-regnety_002",
}

BUILTIN_LOSSES: dict[str, dict[str, Any]] = {
    "ce": {"description": "Cross-entropy (multiclass).", "tasks": ["multiclass"]},
    "weighted_ce": {
        "description": "Cross-entropy with per-class weights (param `weights`, one per class).",
        "tasks": ["multiclass"],
    },
    "label_smoothing_ce": {
        "description": "Cross-entropy with label smoothing (param `smoothing`, default 0.1).",
        "tasks": ["multiclass"],
    },
    "focal": {"description": "Focal loss (params `gamma`, `alpha`).", "tasks": ["multiclass", "multilabel"]},
    "dice": {"description": "Soft Dice loss (smp).", "tasks": ["multiclass", "multilabel"]},
    "jaccard": {"description": "Soft Jaccard / IoU loss (smp).", "tasks": ["multiclass", "multilabel"]},
    "tversky": {
        "description": "Tversky loss (params `alpha`, `beta`; alpha weighs false positives).",
        "tasks": ["multiclass", "multilabel"],
    },
    "focal_tversky": {
        "description": "Focal Tversky loss (Tversky raised to `gamma`, default 4/3).",
        "tasks": ["multiclass", "multilabel"],
    },
    "lovasz": {"description": "Lovasz hinge / softmax loss (smp).", "tasks": ["multiclass", "multilabel"]},
    "ssim": {
        "description": "1 - SSIM between class probabilities and one-hot targets (torchmetrics; param `sigma`, "
        "the Gaussian window's standard deviation, default 1.5).",
        "tasks": ["multiclass", "multilabel"],
    },
    "bce": {"description": "Binary cross-entropy with logits (multilabel).", "tasks": ["multilabel"]},
    "soft_bce": {
        "description": "Binary cross-entropy with label smoothing (smp SoftBCEWithLogitsLoss).",
        "tasks": ["multilabel"],
    },
}

BUILTIN_AUGMENTATION_PRESETS: dict[str, str] = {
    "none": "Resize/crop and normalise only.",
    "flips": "Horizontal flip.",
    "basic": "Random crop/scale, horizontal flip, RandomRotate90 (the trash-competition winner's set).",
    "strong": "basic + shift-scale-rotate, colour jitter, CLAHE, blur/noise, GridDropout.",
    "xray": "For grey X-rays: small rotations, CLAHE, brightness/contrast, elastic; no colour jitter.",
}

# Albumentations transform names offered in the form, with their most useful params.
TRANSFORMS: dict[str, str] = {
    "HorizontalFlip": "Mirror left-right.",
    "VerticalFlip": "Mirror top-bottom.",
    "RandomRotate90": "Rotate by a random multiple of 90 degrees.",
    "Affine": "Shift, scale and rotate.",
    "RandomResizedCrop": "Crop a random area and resize it to the training size.",
    "RandomCrop": "Crop a random window of the training size.",
    "ColorJitter": "Random brightness, contrast, saturation and hue.",
    "RandomBrightnessContrast": "Random brightness and contrast.",
    "CLAHE": "Contrast-limited adaptive histogram equalisation.",
    "GaussianBlur": "Gaussian blur.",
    "GaussNoise": "Additive Gaussian noise.",
    "ElasticTransform": "Elastic deformation.",
    "GridDistortion": "Grid distortion.",
    "GridDropout": "Drop a regular grid of squares (mask pixels kept).",
    "CoarseDropout": "Drop random rectangles.",
}

OPTIMIZERS: dict[str, str] = {
    "adam": "Adam.",
    "adamw": "AdamW (decoupled weight decay); the usual choice.",
    "sgd": "SGD with momentum and Nesterov.",
}

SCHEDULERS: dict[str, str] = {
    "constant": "Constant learning rate (after warm-up).",
    "cosine": "Cosine decay to `min_lr` after linear warm-up.",
    "cosine_restarts": "Cosine annealing with warm restarts (`restart_epochs`, `restart_mult`).",
    "poly": "Polynomial decay (`power`), the DeepLab schedule.",
    "plateau": "Reduce on plateau of the monitored metric (`factor`, `patience`).",
    "onecycle": "One-cycle policy (peak at `max_lr_factor` x lr).",
}

BUILTIN_METRICS: dict[str, str] = {
    "miou": "Dataset-level mean IoU: one confusion matrix over all validation pixels, IoU per class, mean over "
    "classes present in GT or prediction.",
    "miou_per_image": "Per-image mean IoU averaged over images (how many leaderboards score); classes absent from "
    "both GT and prediction in an image are skipped for that image.",
    "dice": "Mean Dice over classes; multilabel: per class at the threshold, over the dataset.",
    "dice_per_image": "Per-image mean Dice averaged over images.",
    "pixel_accuracy": "Share of labelled pixels predicted correctly.",
    "loss": "Validation loss (lower is better).",
}

# Metrics where lower is better; every other one (plugin metrics included) is maximised.
MINIMIZED_METRICS = frozenset({"loss"})


class _WithPlugins(Mapping[str, V]):
    """A built-in mapping followed by the installed plugins' items of one kind.

    Looking up a built-in name never scans the entry points; listing, or looking up any other name, does.
    """

    def __init__(self, builtin: dict[str, V], kind: str, convert: Callable[[_plugins.PluginItem], V]) -> None:
        self._builtin = builtin
        self._kind = kind
        self._convert = convert

    def _extra(self) -> dict[str, _plugins.PluginItem]:
        return {n: i for n, i in _plugins.items(self._kind).items() if n not in self._builtin}

    def __getitem__(self, key: str) -> V:
        if key in self._builtin:
            return self._builtin[key]
        item = self._extra().get(key)
        if item is None:
            raise KeyError(key)
        return self._convert(item)

    def __contains__(self, key: object) -> bool:
        return key in self._builtin or (isinstance(key, str) and key in self._extra())

    def __iter__(self) -> Iterator[str]:
        yield from self._builtin
        yield from self._extra()

    def __len__(self) -> int:
        return len(self._builtin) + len(self._extra())

    def plugin(self, name: str) -> _plugins.PluginItem | None:
        """The plugin item behind ``name``; None for a built-in or unknown name."""
        return None if name in self._builtin else self._extra().get(name)


def _loss_entry(item: _plugins.PluginItem) -> dict[str, Any]:
    return {"description": item.summary(), "tasks": list(item.tasks)}


ARCHITECTURES: _WithPlugins[str] = _WithPlugins(BUILTIN_ARCHITECTURES, "models", _plugins.PluginItem.summary)
LOSSES: _WithPlugins[dict[str, Any]] = _WithPlugins(BUILTIN_LOSSES, "losses", _loss_entry)
AUGMENTATION_PRESETS: _WithPlugins[str] = _WithPlugins(
    BUILTIN_AUGMENTATION_PRESETS, "augmentations", _plugins.PluginItem.summary
)
METRICS: _WithPlugins[str] = _WithPlugins(BUILTIN_METRICS, "metrics", _plugins.PluginItem.summary)

_VIEWS: dict[str, _WithPlugins[Any]] = {
    "models": ARCHITECTURES, "losses": LOSSES, "augmentations": AUGMENTATION_PRESETS, "metrics": METRICS
}


def check_plugin_name(kind: str, name: str) -> None:
    """Raise the plugin's own error when ``name`` is not built in and a broken plugin declares it.

    Config validation calls it before the unknown-name check, so a plugin that failed to import is
    named with its package instead of being reported as an unknown name.

    Raises:
        PluginError: the entry point failed to import or its name is defined twice.
    """
    if name not in _VIEWS[kind]._builtin:
        _plugins.check_name(kind, name)


def plugin_packages(*, arch: str, losses: list[str], preset: str, monitor: str) -> dict[str, str]:
    """The plugin packages (name -> installed version) a config with these names needs."""
    names = [("models", arch), *(("losses", n) for n in losses), ("augmentations", preset), ("metrics", monitor)]
    return _plugins.packages_used(names, {k: v._builtin for k, v in _VIEWS.items()})

_SMP_ENCODERS: frozenset[str] | None = None


def _smp_encoder_names() -> frozenset[str]:
    """Encoder names known to smp, read from its package data without importing torch."""
    global _SMP_ENCODERS
    if _SMP_ENCODERS is None:
        from segcore._encoder_names import SMP_ENCODERS

        _SMP_ENCODERS = frozenset(SMP_ENCODERS)
    return _SMP_ENCODERS


def is_known_encoder(name: str) -> bool:
    """True for an smp encoder name or any ``tu-<timm model>`` name.

    ``tu-`` names are checked against timm only when the model is built (that needs torch).
    """
    if name.startswith("tu-"):
        return len(name) > 3
    return name in _smp_encoder_names()


def encoder_names() -> list[str]:
    """All smp encoder names, sorted, plus the representative timm ones."""
    names = sorted(_smp_encoder_names())
    return names + sorted(n for n in ENCODER_FAMILIES.values() if n.startswith("tu-"))


def _listing(view: _WithPlugins[Any]) -> list[dict[str, Any]]:
    out = []
    for name, value in view.items():
        entry = {"name": name, **(value if isinstance(value, dict) else {"description": value})}
        item = view.plugin(name)
        if item is not None:
            entry.update({"params": [p.to_dict() for p in item.params], "plugin": item.to_dict()["plugin"]})
        out.append(entry)
    return out


def catalog() -> dict[str, Any]:
    """Everything a form needs, as JSON-ready data.

    Plugin items carry ``params`` (name, type, required, default, description) and ``plugin``
    (distribution, version, entry point); ``plugin_problems`` lists plugins that cannot be used.
    """
    return {
        "architectures": _listing(ARCHITECTURES),
        "encoders": encoder_names(),
        "encoder_families": dict(ENCODER_FAMILIES),
        "losses": _listing(LOSSES),
        "augmentation_presets": _listing(AUGMENTATION_PRESETS),
        "transforms": [{"name": k, "description": v} for k, v in TRANSFORMS.items()],
        "optimizers": [{"name": k, "description": v} for k, v in OPTIMIZERS.items()],
        "schedulers": [{"name": k, "description": v} for k, v in SCHEDULERS.items()],
        "metrics": _listing(METRICS),
        "plugin_problems": _plugins.problems(),
    }
