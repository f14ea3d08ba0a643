"""Datasets: on-disk formats, validation, statistics, splits, augmentation and the torch dataset.

Importing this package stays torch-free (the web app uses formats, validation and statistics);
:mod:`segcore.data.dataset` and :mod:`segcore.data.mixing` import torch when imported themselves.
"""

from segcore.data.formats import SegDataset, open_dataset
from segcore.data.splits import fold_assignment, split_ids
from segcore.data.statistics import DatasetStatistics, compute_statistics
from segcore.data.validation import DatasetReport, Problem, raise_if_invalid, validate_dataset

__all__ = [
    "SegDataset",
    "open_dataset",
    "validate_dataset",
    "raise_if_invalid",
    "DatasetReport",
    "Problem",
    "compute_statistics",
    "DatasetStatistics",
    "split_ids",
    "fold_assignment",
]
