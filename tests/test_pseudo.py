"""Pseudo-labels: the pixel and image filters keep and drop exactly what the thresholds say."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segcore.config import MaskFolderSource
from segcore.errors import ConfigError, DatasetError
from segcore.inference.store import ProbabilityStore
from segcore.pseudo import make_pseudo_labels

CLASSES = ["bg", "a", "b"]


def _probs(label: np.ndarray, conf: np.ndarray) -> np.ndarray:
    p = np.repeat(((1 - conf) / 2)[None], 3, 0).astype(np.float32)
    for k in range(3):
        p[k][label == k] = conf[label == k]
    return p


def _example(fg: int, low: int, fg_class: int = 1, bg_conf: float = 0.95, fg_conf: float = 0.85):
    """16x16: ``fg`` foreground pixels of ``fg_class`` in row 0.., ``low`` of them at conf 0.7."""
    label = np.zeros((16, 16), np.uint8)
    conf = np.full((16, 16), bg_conf, np.float32)
    flat_l, flat_c = label.reshape(-1), conf.reshape(-1)
    flat_l[:fg] = fg_class
    flat_c[:fg] = fg_conf
    flat_c[:low] = 0.7
    return label, conf


@pytest.fixture()
def teacher(tmp_path):
    cases = {
        "keep": _example(fg=16, low=0),  # foreground at 0.85: kept image, pixels under 0.9 ignored
        "drop": _example(fg=10, low=2),  # 20% low-confidence foreground > 10%
        "edge": _example(fg=10, low=1),  # exactly 10%: not over the limit, kept
        "nofg": _example(fg=0, low=0, bg_conf=0.5),  # no foreground: kept, every pixel ignored
        "classb": _example(fg=16, low=0, fg_class=2),
    }
    img_dir = tmp_path / "test_images"
    img_dir.mkdir()
    with ProbabilityStore.create(tmp_path / "store", classes=CLASSES, task="multiclass", source="run-3") as w:
        for image_id, (label, conf) in cases.items():
            w.write(image_id, _probs(label, conf))
            Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(img_dir / f"{image_id}.png")
    return tmp_path / "store", img_dir, cases


def test_filters_keep_and_drop_exactly(teacher, tmp_path):
    store, img_dir, cases = teacher
    out = tmp_path / "pseudo"
    report = make_pseudo_labels(store, img_dir, out, pixel_threshold=0.9, image_threshold=0.8,
                                max_low_confidence=0.1, class_thresholds={"b": 0.6})
    assert report.kept_ids == ["keep", "edge", "nofg", "classb"] and report.dropped_ids == ["drop"]
    drop = next(d for d in report.images if d.id == "drop")
    assert "20.0%" in drop.reason and drop.low_confidence_fraction == pytest.approx(0.2)
    mask = np.array(Image.open(out / "masks" / "keep.png"))
    assert (mask.reshape(-1)[:16] == 255).all() and (mask.reshape(-1)[16:] == 0).all()
    edge = np.array(Image.open(out / "masks" / "edge.png")).reshape(-1)
    assert (edge[:10] == 255).all() and (edge[10:] == 0).all()  # 0.7 and 0.85 < 0.9 -> ignore, not background
    assert (np.array(Image.open(out / "masks" / "nofg.png")) == 255).all()
    classb = np.array(Image.open(out / "masks" / "classb.png")).reshape(-1)
    assert (classb[:16] == 2).all()  # class b's own threshold 0.6 keeps its 0.85 pixels
    assert not (out / "masks" / "drop.png").exists() and not (out / "images" / "drop.png").exists()
    assert report.class_pixels == {"bg": 240 + 246 + 240, "a": 0, "b": 16}  # keep, edge, classb (nofg: all ignored)
    assert report.ignored_pixels == 16 + 10 + 256
    assert (out / "images" / "keep.png").stat().st_ino == (img_dir / "keep.png").stat().st_ino  # hard link
    dataset = json.loads((out / "dataset.json").read_text())
    src = MaskFolderSource.model_validate(dataset["source"])
    assert src.ignore_value == 255 and src.root == str(out.resolve())
    assert dataset["classes"] == CLASSES and dataset["teacher"]["source"] == "run-3"
    assert json.loads((out / "report.json").read_text())["kept"] == 4


def test_preview_writes_nothing_and_matches(teacher, tmp_path):
    store, img_dir, _ = teacher
    preview = make_pseudo_labels(store, img_dir, tmp_path / "p", preview=True)
    assert not (tmp_path / "p").exists() and preview.path is None
    real = make_pseudo_labels(store, img_dir, tmp_path / "p", link="copy")
    assert preview.kept_ids == real.kept_ids and preview.class_pixels == real.class_pixels
    assert preview.mean_confidence == pytest.approx(real.mean_confidence)
    with pytest.raises(ConfigError, match="already exists"):
        make_pseudo_labels(store, img_dir, tmp_path / "p")


def test_stricter_image_filter_and_errors(teacher, tmp_path):
    store, img_dir, _ = teacher
    strict = make_pseudo_labels(store, img_dir, preview=True, max_low_confidence=0.0)
    assert strict.dropped_ids == ["drop", "edge"]
    loose = make_pseudo_labels(store, img_dir, preview=True, image_threshold=0.6)
    assert loose.dropped == 0
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        make_pseudo_labels(store, img_dir, preview=True, pixel_threshold=1.5)
    with pytest.raises(ConfigError, match="ignore_index"):
        make_pseudo_labels(store, img_dir, preview=True, ignore_index=1)
    with pytest.raises(ConfigError, match="not a class"):
        make_pseudo_labels(store, img_dir, preview=True, class_thresholds={"zebra": 0.5})
    (img_dir / "keep.png").unlink()
    with pytest.raises(DatasetError, match="keep"):
        make_pseudo_labels(store, img_dir, tmp_path / "x")
    assert not (tmp_path / "x").exists()
