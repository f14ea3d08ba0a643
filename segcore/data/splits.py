"""Train/validation splits: predefined lists, stratified hold-out and stratified (grouped) k-fold.

Stratification is iterative stratification (Sechidis et al., ECML 2011) over the per-image class
presence, applied to groups of images: the rarest class is distributed first, each of its images
going to a fold that has none of that class yet, else to the fold that still lacks most of it.
So a class present in ``m`` images reaches ``min(m, k)`` of ``k`` folds, and a hold-out keeps a
class seen in two images in both train and val. With ``group_key`` every image whose stem
yields the same group id (e.g. a patient) lands in the same fold.

Example:
    >>> train_ids, val_ids = split_ids(ds, KFoldSplit(n_folds=5, fold=0))  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segcore.config import HoldoutSplit, KFoldSplit, PredefinedSplit
from segcore.data.formats import IMAGE_EXTENSIONS, SegDataset
from segcore.errors import ConfigError, DatasetError
from segcore.ids import partition_ids, quote_ids

__all__ = [
    "split_ids",
    "fold_assignment",
    "group_ids",
    "stratified_assignment",
    "read_id_list",
    "check_id_list",
    "MAX_SPLIT_LIST_BYTES",
]

MAX_SPLIT_LIST_BYTES = 64 * 2**20
"""A split list larger than this is not read (64 MiB holds millions of image stems)."""


def read_id_list(path: Path) -> list[str]:
    """Image stems listed one per line; blank lines and ``#`` comments skipped, image extensions dropped.

    Raises:
        DatasetError: when the file does not exist, is not a UTF-8 text file or is larger than
            :data:`MAX_SPLIT_LIST_BYTES`; the message never quotes the file's contents.
    """
    fix = "write one image stem per line, or use a holdout/kfold split"
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SPLIT_LIST_BYTES + 1)
    except FileNotFoundError as exc:
        raise DatasetError(f"split file {path} does not exist; {fix}") from exc
    except IsADirectoryError as exc:
        raise DatasetError(f"split file {path} is a folder, not a split list; {fix}") from exc
    except OSError as exc:
        raise DatasetError(f"split file {path} cannot be read ({exc.strerror}); {fix}") from exc
    if len(data) > MAX_SPLIT_LIST_BYTES:
        raise DatasetError(
            f"split file {path} is larger than {MAX_SPLIT_LIST_BYTES // 2**20} MiB, so it does not look like a "
            f"split list; {fix}"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DatasetError(
            f"split file {path} is not UTF-8 text, so it does not look like a split list; {fix}"
        ) from None
    out = []
    for line in text.splitlines():
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        name = Path(item).name
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
            name = Path(name).stem
        out.append(name)
    return out


def check_id_list(items: Sequence[str], *, name: str, path: object) -> None:
    """Refuse a split list whose entries do not look like image ids (the file is not a split list).

    Args:
        items: The entries :func:`read_id_list` read.
        name: ``train`` or ``val``: the list's field under ``data.split``.
        path: The file, as the message names it.

    Raises:
        DatasetError: saying how many entries are not ids, never what they are.
    """
    _, other = partition_ids(items)
    if other:
        raise DatasetError(
            f"the {name} list {path} does not look like a split list: {other} of its {len(items)} entries are "
            f"not image ids; point data.split.{name} at a text file with one image stem per line"
        )


def group_ids(ids: Sequence[str], group_key: str | None) -> list[str]:
    """The group of each id: the regex's first group (or whole match) on the stem; the id itself without a key.

    Raises:
        ConfigError: when ``group_key`` is not a valid regex.
        DatasetError: when stems do not match ``group_key``, naming some of them.
    """
    if group_key is None:
        return list(ids)
    try:
        pattern = re.compile(group_key)
    except re.error as exc:
        raise ConfigError(f"group_key {group_key!r} is not a valid regular expression: {exc}") from exc
    groups, unmatched = [], []
    for i in ids:
        m = pattern.search(i)
        if m is None:
            unmatched.append(i)
            continue
        groups.append(m.group(1) if pattern.groups else m.group(0))
    if unmatched:
        raise DatasetError(
            f"group_key {group_key!r} does not match {len(unmatched)} image ids "
            f"(e.g. {quote_ids(unmatched)}); change the regex so that it matches every file stem"
        )
    return groups


def stratified_assignment(
    labels: np.ndarray,
    sizes: np.ndarray,
    fractions: Sequence[float],
    *,
    seed: int,
    stratify: bool = True,
) -> np.ndarray:
    """Assign groups to folds so that each fold gets its share of images and of each label.

    Args:
        labels: ``[G, C]`` count of images with class ``c`` in group ``g``.
        sizes: ``[G]`` images per group.
        fractions: Desired share of images per fold; sums to 1.
        seed: Tie-breaking and order of equal candidates.
        stratify: False ignores ``labels`` and balances fold sizes only.

    Returns:
        ``[G]`` fold index of each group.
    """
    rng = np.random.default_rng(seed)
    n_groups = len(sizes)
    k = len(fractions)
    frac = np.asarray(fractions, dtype=np.float64)
    need_size = frac * float(sizes.sum())
    labels = labels.astype(np.float64) if stratify else np.zeros((n_groups, 0))
    need_label = frac[:, None] * labels.sum(axis=0)[None, :]  # [K, C]
    fold = np.full(n_groups, -1, dtype=np.int64)
    placed = np.zeros_like(need_label, dtype=np.int64)  # [K, C] groups with the label per fold
    order = rng.permutation(n_groups)  # random but seeded visiting order among equals

    def place(g: int, label: int | None) -> None:
        cand = np.arange(k)
        if label is not None:
            # a fold without any example of the label comes first, so a label in m images reaches
            # min(m, k) folds (one plain need-based pass would put both images of a 2-image class in train)
            empty = cand[placed[cand, label] == 0]
            if empty.size:
                cand = empty
            best = need_label[cand, label].max()
            cand = cand[np.isclose(need_label[cand, label], best)]
        best = need_size[cand].max()
        cand = cand[np.isclose(need_size[cand], best)]
        f = int(cand[rng.integers(len(cand))]) if len(cand) > 1 else int(cand[0])
        fold[g] = f
        need_size[f] -= sizes[g]
        need_label[f] -= labels[g]
        placed[f] += labels[g] > 0

    remaining = labels.copy()
    while True:
        unassigned = fold[order] < 0
        if not unassigned.any():
            break
        left = remaining[order[unassigned]].sum(axis=0) if labels.shape[1] else np.zeros(0)
        present = np.flatnonzero(left > 0)
        if present.size == 0:
            # groups without any label: balance sizes, biggest groups first
            rest = [g for g in order if fold[g] < 0]
            for g in sorted(rest, key=lambda g: -sizes[g]):
                place(int(g), None)
            break
        label = int(present[np.argmin(left[present])])  # the rarest label still unplaced
        for g in order:
            if fold[g] < 0 and labels[g, label] > 0:
                place(int(g), label)
                remaining[g] = 0
    return fold


def _group_table(
    dataset: SegDataset, ids: list[str], group_key: str | None, stratify: bool
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    groups = group_ids(ids, group_key)
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    of_image = np.array([index[g] for g in groups], dtype=np.int64)
    sizes = np.bincount(of_image, minlength=len(names)).astype(np.int64)
    if stratify:
        presence = dataset.class_presence().astype(np.int64)
        labels = np.zeros((len(names), presence.shape[1]), dtype=np.int64)
        np.add.at(labels, of_image, presence)
        # a class present in every image says nothing about balance; drop it
        labels = labels[:, presence.sum(axis=0) < len(ids)]
    else:
        labels = np.zeros((len(names), 0), dtype=np.int64)
    return names, of_image, sizes, labels


def fold_assignment(dataset: SegDataset, split: KFoldSplit) -> dict[str, int]:
    """The validation fold of every labelled image under a k-fold split.

    Used to assemble out-of-fold predictions: image ``i`` is predicted by the run whose
    ``split.fold`` equals ``fold_assignment(...)[i]``. Only ``n_folds``, ``seed``, ``stratify`` and
    ``group_key`` matter, so every fold of one experiment sees the same assignment.

    Raises:
        ConfigError: for a split that is not k-fold.
        DatasetError: with fewer images (or groups) than folds.
    """
    if not isinstance(split, KFoldSplit):
        raise ConfigError(f"fold_assignment needs a kfold split, got {split.kind!r}")
    ids = dataset.ids
    names, of_image, sizes, labels = _group_table(dataset, ids, split.group_key, split.stratify)
    if len(names) < split.n_folds:
        raise DatasetError(
            f"{split.n_folds}-fold cross-validation needs at least {split.n_folds} "
            f"{'groups' if split.group_key else 'images'}, the dataset has {len(names)}; use fewer folds"
        )
    fold_of_group = stratified_assignment(
        labels, sizes, [1.0 / split.n_folds] * split.n_folds, seed=split.seed, stratify=split.stratify
    )
    return {i: int(fold_of_group[g]) for i, g in zip(ids, of_image)}


def split_ids(
    dataset: SegDataset, split: PredefinedSplit | HoldoutSplit | KFoldSplit
) -> tuple[list[str], list[str]]:
    """``(train_ids, val_ids)``, each sorted; disjoint, and together all labelled ids (predefined lists may omit some).

    Raises:
        DatasetError: for predefined lists naming unknown or shared ids, or too few images to split.
        ConfigError: for an invalid ``group_key``.
    """
    ids = dataset.ids
    if isinstance(split, PredefinedSplit):
        train = read_id_list(dataset.root / split.train)
        val = read_id_list(dataset.root / split.val)
        known = set(ids)
        for name, items, rel in (("train", train, split.train), ("val", val, split.val)):
            check_id_list(items, name=name, path=dataset.root / rel)
            unknown = [i for i in items if i not in known]
            if unknown:
                raise DatasetError(
                    f"{len(unknown)} ids in the {name} list {dataset.root / rel} are not labelled images of the "
                    f"dataset: {quote_ids(unknown)}; fix the list or add the images and their annotations"
                )
        both = sorted(set(train) & set(val))
        if both:
            raise DatasetError(
                f"{len(both)} ids are in both the train and the val list: {quote_ids(both)}; "
                "remove them from one list"
            )
        if not val:
            raise DatasetError(f"the val list {dataset.root / split.val} is empty; list at least one image")
        return sorted(set(train)), sorted(set(val))

    if isinstance(split, KFoldSplit):
        folds = fold_assignment(dataset, split)
        train = [i for i in ids if folds[i] != split.fold]
        val = [i for i in ids if folds[i] == split.fold]
        return train, val

    if isinstance(split, HoldoutSplit):
        names, of_image, sizes, labels = _group_table(dataset, ids, split.group_key, split.stratify)
        if len(names) < 2:
            raise DatasetError(
                f"a hold-out split needs at least 2 {'groups' if split.group_key else 'images'}, "
                f"the dataset has {len(names)}; add images"
            )
        fold_of_group = stratified_assignment(
            labels, sizes, [1.0 - split.val_fraction, split.val_fraction], seed=split.seed, stratify=split.stratify
        )
        if not (fold_of_group == 1).any():  # a tiny dataset: still validate on something
            fold_of_group[int(np.argmin(sizes))] = 1
        if not (fold_of_group == 0).any():
            fold_of_group[int(np.argmax(sizes))] = 0
        val_set = {i for i, g in zip(ids, of_image) if fold_of_group[g] == 1}
        return [i for i in ids if i not in val_set], [i for i in ids if i in val_set]

    raise ConfigError(f"unknown split kind {getattr(split, 'kind', split)!r}; use predefined, holdout or kfold")
