"""Synthetic generators: deterministic, imbalanced, valid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segcore.data.formats import open_dataset
from segcore.data.synthetic import class_frequencies, make_synthetic_coco
from segcore.data.validation import validate_dataset


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = make_synthetic_coco(tmp_path / "a", num_images=6, seed=3)
    b = make_synthetic_coco(tmp_path / "b", num_images=6, seed=3)
    c = make_synthetic_coco(tmp_path / "c", num_images=6, seed=4)
    files = sorted(p.relative_to(a.root) for p in Path(a.root).rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.root) for p in Path(b.root).rglob("*") if p.is_file())
    for rel in files:
        assert (Path(a.root) / rel).read_bytes() == (Path(b.root) / rel).read_bytes()
    assert (Path(a.root) / "annotations.json").read_bytes() != (Path(c.root) / "annotations.json").read_bytes()


def test_geometric_imbalance(tmp_path: Path) -> None:
    f = class_frequencies(12, 0.64)
    assert f[0] / f[-1] == pytest.approx(0.64**-11) and f.sum() == pytest.approx(1.0)
    src = make_synthetic_coco(tmp_path / "c", num_images=60, num_classes=4, imbalance=0.4, num_test_images=0)
    anns = json.loads((Path(src.root) / "annotations.json").read_text())["annotations"]
    counts = np.bincount([a["category_id"] for a in anns], minlength=5)[1:]
    assert counts[0] > 3 * counts[3] and (counts > 0).all()
    with pytest.raises(ValueError):
        class_frequencies(3, 0.0)


def test_generated_datasets_validate(tmp_path: Path) -> None:
    src = make_synthetic_coco(tmp_path / "c", num_images=8, rle_every=2)
    assert validate_dataset(src).ok
    ds = open_dataset(src, classes=None, task="multiclass")
    assert len(ds.ids) == 8 and len(ds.test_ids) == 4
