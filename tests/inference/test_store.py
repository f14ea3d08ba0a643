"""The probability store: round trips, quantisation, reduced grids, atomicity, corruption."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segcore.errors import StoreError
from segcore.inference.store import ProbabilityStore


def _softmax(rng: np.random.Generator, c: int, h: int, w: int) -> np.ndarray:
    z = rng.normal(size=(c, h, w)).astype(np.float32) * 3
    e = np.exp(z - z.max(0))
    return e / e.sum(0)


def test_round_trip_uint8_and_manifest(tmp_path):
    rng = np.random.default_rng(0)
    probs = {"a": _softmax(rng, 3, 40, 64), "b/odd id": _softmax(rng, 3, 64, 33)}
    path = tmp_path / "store"
    with ProbabilityStore.create(
        path, classes=["bg", "x", "y"], task="multiclass", meta={"k": 1}, tta={"flips": ["h"]}, source="run-7"
    ) as w:
        for i, p in probs.items():
            w.write(i, p)
    s = ProbabilityStore.open(path)
    assert s.ids == ["a", "b/odd id"] and s.classes == ["bg", "x", "y"] and s.task == "multiclass"
    assert s.meta == {"k": 1} and s.source == "run-7" and s.tta == {"flips": ["h"]}
    assert s.size("b/odd id") == (64, 33)
    for i, p in probs.items():
        got = s.read(i)
        assert got.dtype == np.float32 and got.shape == p.shape
        assert np.abs(got - p).max() <= 0.5 / 255 + 1e-6
    np.testing.assert_array_equal(s.read_labels("a"), s.read("a").argmax(0))
    assert [i for i, _ in s] == s.ids
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["dtype"] == "uint8" and manifest["created"] and len(manifest["entries"]) == 2
    assert all(len(e["sha256"]) == 64 for e in manifest["entries"])
    assert s.verify() == []


def test_float16_and_reduced_grid_upsampled_on_read(tmp_path):
    yy, xx = np.mgrid[0:128, 0:96].astype(np.float32)
    smooth = np.stack([yy / 127, xx / 95])  # linear ramps survive area-down, bilinear-up
    with ProbabilityStore.create(tmp_path / "s", classes=["a", "b"], task="multilabel", dtype="float16", max_side=32) as w:
        w.write("img", smooth)
    s = ProbabilityStore.open(tmp_path / "s")
    assert s.stored_size("img") == (32, 24) and s.size("img") == (128, 96)
    assert s.read_stored("img").dtype == np.float16
    got = s.read("img")
    assert got.shape == (2, 128, 96)
    inner = (slice(None), slice(8, -8), slice(8, -8))  # borders clamp; the interior is exact-ish
    assert np.abs(got[inner] - smooth[inner]).max() < 0.01
    labels = s.read_labels("img", threshold=[0.5, 0.25])
    assert labels.shape == (2, 128, 96) and labels.dtype == np.uint8
    with pytest.raises(StoreError, match="thresholds"):
        s.read_labels("img", threshold=[0.5, 0.5, 0.5])


def test_store_invisible_until_closed_and_discarded_on_error(tmp_path):
    path = tmp_path / "s"
    w = ProbabilityStore.create(path, classes=["a"], task="multilabel")
    w.write("x", np.zeros((1, 8, 8), np.float32))
    assert not path.exists()
    w.close()
    assert ProbabilityStore.open(path).ids == ["x"]
    with pytest.raises(RuntimeError):
        with ProbabilityStore.create(tmp_path / "t", classes=["a"], task="multilabel") as w2:
            w2.write("x", np.zeros((1, 8, 8), np.float32))
            raise RuntimeError("boom")
    assert not (tmp_path / "t").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temp folders left behind


def test_write_validation(tmp_path):
    with ProbabilityStore.create(tmp_path / "s", classes=["a", "b"], task="multiclass") as w:
        w.write("x", np.full((2, 4, 4), 0.5, np.float32))
        with pytest.raises(StoreError, match="twice"):
            w.write("x", np.full((2, 4, 4), 0.5, np.float32))
        with pytest.raises(StoreError, match="C=2"):
            w.write("y", np.zeros((3, 4, 4), np.float32))
        with pytest.raises(StoreError, match="softmax"):
            w.write("z", np.full((2, 4, 4), 3.0, np.float32))
    with pytest.raises(StoreError, match="already exists"):
        ProbabilityStore.create(tmp_path / "s", classes=["a"], task="multiclass")
    with pytest.raises(StoreError, match="dtype"):
        ProbabilityStore.create(tmp_path / "u", classes=["a"], task="multiclass", dtype="float64")
    with pytest.raises(StoreError, match="task"):
        ProbabilityStore.create(tmp_path / "u", classes=["a"], task="binary")


def test_corrupt_and_missing_entries_name_entry_and_store(tmp_path):
    path = tmp_path / "s"
    with ProbabilityStore.create(path, classes=["a", "b"], task="multiclass") as w:
        w.write("good", np.full((2, 8, 8), 0.5, np.float32))
        w.write("bad", np.full((2, 8, 8), 0.5, np.float32))
        w.write("gone", np.full((2, 8, 8), 0.5, np.float32))
    (path / "entries" / "bad.npz").write_bytes(b"garbage")
    (path / "entries" / "gone.npz").unlink()
    s = ProbabilityStore.open(path)
    assert s.read("good").shape == (2, 8, 8)  # reading one entry does not touch the others
    with pytest.raises(StoreError, match=r"'bad'.*corrupt") as exc:
        s.read("bad")
    assert str(path) in str(exc.value)
    with pytest.raises(StoreError, match=r"'gone'.*cannot be read"):
        s.read("gone")
    with pytest.raises(StoreError, match="not in the probability store"):
        s.read("nope")
    assert sorted(s.verify()) == ["bad", "gone"]
    with pytest.raises(StoreError, match="no probability store"):
        ProbabilityStore.open(tmp_path / "missing")


def test_overwrite_replaces_atomically(tmp_path):
    path = tmp_path / "s"
    for value in (0.25, 0.75):
        with ProbabilityStore.create(path, classes=["a"], task="multilabel", overwrite=True) as w:
            w.write("x", np.full((1, 4, 4), value, np.float32))
    assert abs(float(ProbabilityStore.open(path).read("x").mean()) - 0.75) < 0.01
