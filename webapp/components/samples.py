"""A registered dataset's files, opened through segcore: samples, statistics, augmentation previews.

Everything goes through :mod:`worker.services.datasets`; the augmentation preview loads
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
    from worker.services import datasets as svc

    return svc.open_files(_ds, artifacts=resources.artifacts(), dataset_root=dataset_root)


@st.cache_data(show_spinner=False, max_entries=8)
def _preview(dataset_id: int, fingerprint: str | None, _dataset: Any) -> dict[str, Any]:
    from worker.services import datasets as svc

    return svc.preview_statistics(_dataset, max_images=STATS_MAX_IMAGES)


def open_registered(ds: Any) -> Any:
    """The segcore ``SegDataset`` of a registered dataset (kept open per fingerprint).

    Raises:
        DatasetError: its files moved or disappeared since it was registered.
    """
    return _opened(ds.id, ds.fingerprint, ds, resources.app_settings().dataset_root)


def statistics_of(ds: Any) -> tuple[dict[str, Any], bool]:
    """The EDA statistics of a dataset and whether they are a preview.

    The stored ones are the full statistics the ``dataset_import`` job computed; until it has
    run, a preview over at most :data:`STATS_MAX_IMAGES` images is computed here and shown, never stored.
    """
    if ds.statistics:
        return ds.statistics, False
    return _preview(ds.id, ds.fingerprint, open_registered(ds)), True


def augmentation_samples(ds: Any, dataset: Any, augmentation: dict[str, Any], *, n: int, seed: int = 0,
                         image_size: list[int] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image, mask) pairs as the training pipeline of ``augmentation`` makes them.

    Raises:
        ConfigError: the augmentation section is invalid.
    """
    from worker.services import datasets as svc

    return svc.preview_augmentations(ds, dataset, augmentation, n=n, seed=seed, image_size=image_size)
