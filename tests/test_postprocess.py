"""Post-processing: small components, holes, DenseCRF (when pydensecrf2 is installed)."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.errors import ConfigError
from segcore.postprocess import dense_crf, fill_holes, remove_small_components, to_labels


def _scene() -> np.ndarray:
    lab = np.zeros((32, 32), np.int32)
    lab[4:20, 4:20] = 1  # big object of class 1
    lab[10:12, 10:12] = 2  # 4-pixel speck of class 2 inside it
    lab[25:27, 25:28] = 1  # 6-pixel speck of class 1 on background
    lab[28:32, 0:8] = 2  # 32-pixel object of class 2
    return lab


def test_remove_small_components_multiclass():
    lab = _scene()
    out = remove_small_components(lab, min_area=10)
    assert (out[10:12, 10:12] == 1).all()  # speck joins the object around it
    assert (out[25:27, 25:28] == 0).all()  # speck on background becomes background
    assert (out[28:32, 0:8] == 2).all() and (out[4:10, 4:20] == 1).all()
    per_class = remove_small_components(lab, min_area={2: 10})  # class 1 left alone
    assert (per_class[25:27, 25:28] == 1).all() and (per_class[10:12, 10:12] == 1).all()
    seq = remove_small_components(lab, min_area=[0, 0, 40])  # the 32-pixel class-2 object goes too
    assert (seq == 2).sum() == 0
    assert (lab == _scene()).all()  # input untouched


def test_connectivity_matters():
    lab = np.zeros((8, 8), np.int32)
    lab[2, 2] = lab[3, 3] = lab[4, 4] = 1  # a diagonal: one 8-component of 3, three 4-components of 1
    assert (remove_small_components(lab, 2, connectivity=8) == 1).sum() == 3
    assert (remove_small_components(lab, 2, connectivity=4) == 1).sum() == 0
    with pytest.raises(ConfigError, match="connectivity"):
        remove_small_components(lab, 2, connectivity=6)


def test_from_probabilities_and_multilabel():
    lab = _scene()
    probs = np.eye(3, dtype=np.float32)[lab].transpose(2, 0, 1) * 0.8 + 0.2 / 3
    np.testing.assert_array_equal(remove_small_components(probs, 10, task="multiclass"), remove_small_components(lab, 10))
    with pytest.raises(ConfigError, match="task"):
        remove_small_components(probs, 10)
    ml = np.stack([lab == 1, lab == 2]).astype(np.uint8)
    out = remove_small_components(ml, [10, 0])
    assert out[0, 25:27, 25:28].sum() == 0 and out[0, 10:12, 10:12].sum() == 0  # class-1 mask had a hole there
    assert out[1].sum() == ml[1].sum()  # class 2 untouched (0 = no limit)
    labels, task = to_labels(ml.astype(np.float32) * 0.9, task="multilabel", threshold=[0.5, 0.95])
    assert task == "multilabel" and labels[0].sum() == ml[0].sum() and labels[1].sum() == 0


def test_fill_holes():
    lab = _scene()
    filled = fill_holes(lab, classes=[1])
    assert (filled[4:20, 4:20] == 1).all()
    small_only = fill_holes(lab, classes=[1], max_hole_area=3)
    assert (small_only[10:12, 10:12] == 2).all()  # a 4-pixel hole is over the limit
    ring = np.zeros((3, 12, 12), np.uint8)
    ring[1, 2:9, 2:9] = 1
    ring[1, 4:6, 4:6] = 0
    out = fill_holes(ring)
    assert out[1, 2:9, 2:9].all() and out[0].sum() == 0
    border = np.zeros((10, 10), np.int32)
    border[0:5, 0:5] = 1
    border[0:2, 0:2] = 0  # touches the image border: not a hole
    assert (fill_holes(border) == border).all()


def test_dense_crf_or_clear_error():
    rng = np.random.default_rng(0)
    image = np.zeros((24, 24, 3), np.uint8)
    image[:, 12:] = 255
    probs = np.full((2, 24, 24), 0.5, np.float32)
    probs[0, :, :12] += rng.uniform(0.0, 0.3, (24, 12))
    probs[0, :, 12:] -= rng.uniform(0.0, 0.3, (24, 12))
    probs[1] = 1 - probs[0]
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install pydensecrf2"):
            dense_crf(image, probs)
        return
    out = dense_crf(image, probs, iterations=5)
    assert out.shape == probs.shape
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-4)
    assert (out.argmax(0)[:, :12] == 0).mean() > 0.95 and (out.argmax(0)[:, 12:] == 1).mean() > 0.95
