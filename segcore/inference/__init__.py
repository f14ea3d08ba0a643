"""Inference: ``predict`` with TTA and sliding windows, and the probability store.

Names are imported lazily, so that reading a store (``segcore.inference.store``, numpy only)
does not import torch.

Example:
    >>> from segcore.inference import predict, TTAPolicy  # doctest: +SKIP
    >>> probs = predict(model, images, task="multiclass", tta=TTAPolicy.d4())  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EnsembleView",
    "ProbabilityStore",
    "SlidingWindow",
    "StoreReader",
    "StoreView",
    "StoreWriter",
    "TTAPolicy",
    "UnionView",
    "blend_weights",
    "iter_predict",
    "labels_from_probs",
    "predict",
    "predict_checkpoint",
    "predict_to_store",
    "resolve_normalization",
]

_WHERE = {
    "StoreView": "_views",
    "UnionView": "_views",
    "EnsembleView": "_views",
    "IMAGENET_MEAN": "_predict",
    "IMAGENET_STD": "_predict",
    "iter_predict": "_predict",
    "predict": "_predict",
    "predict_checkpoint": "_predict",
    "predict_to_store": "_predict",
    "resolve_normalization": "_predict",
    "ProbabilityStore": "store",
    "StoreReader": "store",
    "StoreWriter": "store",
    "labels_from_probs": "store",
    "TTAPolicy": "tta",
    "SlidingWindow": "window",
    "blend_weights": "window",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"segcore.inference.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'segcore.inference' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
