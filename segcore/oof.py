"""Out-of-fold predictions of a fold/seed group, and scoring a probability store with every metric kind.

A group of runs (k folds x m seeds) scores and ensembles like one model: its out-of-fold (OOF)
probabilities are the union of its fold runs' validation stores. An image predicted by several
members (the same fold trained with several seeds) gets the mean of their probabilities.

Example:
    >>> oof = assemble_oof(["runs/1/predictions/val", "runs/2/predictions/val"], "groups/7/oof")  # doctest: +SKIP
    >>> score_store(oof, dataset.load_mask, ignore_index=255)["miou"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcore.errors import EnsembleError
from segcore.inference.store import ProbabilityStore, StoreReader

__all__ = ["assemble_oof", "score_store"]


def assemble_oof(
    stores: Sequence[str | Path],
    out_path: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    overwrite: bool = True,
) -> StoreReader:
    """Write the union of validation stores; images in several stores get their mean.

    Args:
        stores: The members' validation probability stores (same classes and task).
        out_path: Where to write the OOF store (atomically).
        meta: Extra manifest metadata (e.g. the group id).
        overwrite: Replace an existing store at ``out_path``.

    Raises:
        EnsembleError: no stores, or stores with different classes, tasks or image sizes.
    """
    if not stores:
        raise EnsembleError("a group's out-of-fold store needs at least one member validation store")
    from segcore.inference._views import UnionView

    readers = [ProbabilityStore.open(p) for p in stores]
    union = UnionView(str(out_path), readers)
    with ProbabilityStore.create(
        out_path,
        classes=list(union.classes),
        task=union.task,
        dtype=union.dtype,
        max_side=union.max_side,
        meta={"kind": "oof", "members": [str(r.path) for r in readers], **(meta or {})},
        tta=union.tta,
        overwrite=overwrite,
    ) as writer:
        for image_id in union.ids:
            writer.write(image_id, union.read(image_id))
    return ProbabilityStore.open(out_path)


def score_store(
    store: str | Path | StoreReader,
    load_mask: Callable[[str], np.ndarray],
    *,
    ignore_index: int = 255,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Every validation metric kind (as ``fit`` reports them) of a store against the ground truth.

    Args:
        store: A probability store (path or reader).
        load_mask: image id -> ground truth (H x W class indices, or C x H x W multi-hot).
        ignore_index: Label not counted (multiclass).
        threshold: Multilabel probability threshold.
    """
    import torch

    from segcore.metrics import MetricAccumulator

    reader = store if isinstance(store, StoreReader) else ProbabilityStore.open(store)
    acc = MetricAccumulator(
        task=reader.task, num_classes=reader.num_classes, ignore_index=ignore_index, threshold=threshold, device="cpu"
    )
    for image_id, probs in reader:
        gt = np.asarray(load_mask(image_id))
        if gt.shape[-2:] != probs.shape[-2:]:
            raise EnsembleError(
                f"{reader.path}: image {image_id!r} is stored at {probs.shape[-2:]} but its ground truth is "
                f"{gt.shape[-2:]}; the store does not belong to this dataset"
            )
        target = torch.from_numpy(gt.astype(np.int64 if reader.task == "multiclass" else np.float32))
        acc.update(torch.from_numpy(probs)[None], target[None], is_probs=True)
    return acc.compute()
