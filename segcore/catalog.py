"""What SegBoard can build, as plain data (no torch import), for forms, docs and validation.

The runtime registries in :mod:`segcore.models`, :mod:`segcore.losses`,
:mod:`segcore.data.transforms` and :mod:`segcore.training.optim` register exactly these
names; ``tests/test_catalog.py`` checks that the two never drift apart.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ARCHITECTURES",
    "LOSSES",
    "AUGMENTATION_PRESETS",
    "TRANSFORMS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "METRICS",
    "ENCODER_FAMILIES",
    "catalog",
    "is_known_encoder",
]

# smp architecture name -> description
ARCHITECTURES: dict[str, str] = {
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

LOSSES: dict[str, dict[str, Any]] = {
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
    "bce": {"description": "Binary cross-entropy with logits (multilabel).", "tasks": ["multilabel"]},
    "soft_bce": {
        "description": "Binary cross-entropy with label smoothing (smp SoftBCEWithLogitsLoss).",
        "tasks": ["multilabel"],
    },
}

AUGMENTATION_PRESETS: dict[str, str] = {
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

METRICS: dict[str, str] = {
    "miou": "Dataset-level mean IoU: one confusion matrix over all validation pixels, IoU per class, mean over "
    "classes present in GT or prediction.",
    "miou_per_image": "Per-image mean IoU averaged over images (how many leaderboards score); classes absent from "
    "both GT and prediction in an image are skipped for that image.",
    "dice": "Mean Dice over classes; multilabel: per class at the threshold, over the dataset.",
    "dice_per_image": "Per-image mean Dice averaged over images.",
    "pixel_accuracy": "Share of labelled pixels predicted correctly.",
    "loss": "Validation loss (lower is better).",
}

# Metrics where lower is better; every other one is maximised.
MINIMIZED_METRICS = frozenset({"loss"})

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


def catalog() -> dict[str, Any]:
    """Everything a form needs, as JSON-ready data."""
    return {
        "architectures": [{"name": k, "description": v} for k, v in ARCHITECTURES.items()],
        "encoders": encoder_names(),
        "encoder_families": dict(ENCODER_FAMILIES),
        "losses": [{"name": k, **v} for k, v in LOSSES.items()],
        "augmentation_presets": [{"name": k, "description": v} for k, v in AUGMENTATION_PRESETS.items()],
        "transforms": [{"name": k, "description": v} for k, v in TRANSFORMS.items()],
        "optimizers": [{"name": k, "description": v} for k, v in OPTIMIZERS.items()],
        "schedulers": [{"name": k, "description": v} for k, v in SCHEDULERS.items()],
        "metrics": [{"name": k, "description": v} for k, v in METRICS.items()],
    }
