"""A registered dataset's files, opened through segcore: samples, statistics, augmentation previews.

Only torch-free segcore modules are imported at module level; the augmentation preview loads
albumentations when it is asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from webapp import resources

__all__ = ["open_registered", "statistics_of", "augmentation_samples", "STATS_MAX_IMAGES"]

STATS_MAX_IMAGES = 500


@st.cache_resource(show_spinner=False, max_entries=8)
def _opened(dataset_id: int, fingerprint: str | None, _ds: Any, dataset_root: str | None) -> Any:
    from pydantic import TypeAdapter

    from segcore.config import DatasetSource
    from segcore.data.formats import open_dataset

    source = TypeAdapter(DatasetSource).validate_python(_ds.source)
    source, dataset_root = resources.artifacts().local_source(source, dataset_root)  # a remote one is mirrored
    return open_dataset(source, classes=_ds.classes, task=_ds.task.value, ignore_index=_ds.ignore_index,
                        dataset_root=dataset_root)


def open_registered(ds: Any) -> Any:
    """The segcore ``SegDataset`` of a registered dataset (kept open per fingerprint).

    Raises:
        DatasetError: its files moved or disappeared since it was registered.
    """
    return _opened(ds.id, ds.fingerprint, ds, resources.app_settings().dataset_root)


def statistics_of(ds: Any) -> dict[str, Any]:
    """The EDA statistics of a dataset: stored ones, else computed (sampled) and stored."""
    if ds.statistics:
        return ds.statistics
    from segcore.data.statistics import compute_statistics
    from worker.services import datasets as svc

    stats = compute_statistics(open_registered(ds), max_images=STATS_MAX_IMAGES)
    saved = resources.write(svc.set_dataset_statistics, dataset_id=ds.id, statistics=stats.model_dump(mode="json"))
    return saved.statistics or {}


def augmentation_samples(ds: Any, dataset: Any, augmentation: dict[str, Any], *, n: int, seed: int = 0,
                         image_size: list[int] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image, mask) pairs as the training pipeline of ``augmentation`` makes them.

    Raises:
        ConfigError: the augmentation section is invalid.
    """
    from segcore.config import parse_config
    from segcore.data.transforms import preview_augmentations  # albumentations: loaded only when asked

    cfg = parse_config({"name": "preview", "data": {"source": ds.source, "classes": ds.classes, "task": ds.task.value,
                                                    "ignore_index": ds.ignore_index, "image_size": image_size},
                        "augmentation": augmentation})
    return preview_augmentations(dataset, cfg, list(dataset.ids)[: max(n, 1)], n, seed=seed)


