"""Submission files: round trips and rejected inputs."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.errors import SubmissionError
from segcore.submission import (
    class_map_to_string,
    read_class_map_csv,
    read_rle_csv,
    read_scores_parquet,
    resize_nearest,
    rle_decode,
    rle_encode,
    write_class_map_csv,
    write_rle_csv,
    write_scores_parquet,
)


def test_class_map_round_trip_with_resize(tmp_path):
    rng = np.random.default_rng(0)
    maps = {f"batch_01/{i:04d}.jpg": rng.integers(0, 11, (64, 48)) for i in range(3)}
    n = write_class_map_csv(tmp_path / "sub.csv", maps.items(), size=(32, 24), num_classes=11)
    assert n == 3
    lines = (tmp_path / "sub.csv").read_text().splitlines()
    assert lines[0] == "image_id,PredictionString" and len(lines[1].split(",")[1].split()) == 32 * 24
    back = read_class_map_csv(tmp_path / "sub.csv", size=(32, 24), num_classes=11)
    assert list(back) == list(maps)
    for k, v in maps.items():
        np.testing.assert_array_equal(back[k], v[1::2, 1::2])  # exact 2x nearest by pixel centres
    same = {"a": rng.integers(0, 3, (8, 8))}
    write_class_map_csv(tmp_path / "same.csv", same.items(), size=(8, 8))
    np.testing.assert_array_equal(read_class_map_csv(tmp_path / "same.csv", size=(8, 8))["a"], same["a"])
    assert class_map_to_string(np.array([[0, 1], [2, 3]]), (2, 2)) == "0 1 2 3"


def test_resize_nearest_keeps_values_and_upsamples():
    lab = np.array([[0, 1], [2, 3]])
    np.testing.assert_array_equal(resize_nearest(lab, (4, 4)), np.kron(lab, np.ones((2, 2), int)))
    big = np.random.default_rng(1).integers(0, 5, (50, 70))
    assert set(np.unique(resize_nearest(big, (13, 17)))) <= set(np.unique(big))


def test_class_map_bad_inputs(tmp_path):
    with pytest.raises(SubmissionError, match="0..2"):
        write_class_map_csv(tmp_path / "a.csv", [("x", np.array([[0, 3]]))], num_classes=3)
    with pytest.raises(SubmissionError, match="integers"):
        write_class_map_csv(tmp_path / "a.csv", [("x", np.zeros((2, 2), np.float32))])
    with pytest.raises(SubmissionError, match="repeated"):
        write_class_map_csv(tmp_path / "a.csv", [("x", np.zeros((2, 2), int)), ("x", np.zeros((2, 2), int))])
    with pytest.raises(SubmissionError, match="size"):
        write_class_map_csv(tmp_path / "a.csv", [("x", np.zeros((2, 2), int))], size=(0, 4))
    assert not (tmp_path / "a.csv").exists()  # nothing half-written
    (tmp_path / "b.csv").write_text("image_id,PredictionString\nx,0 1 2\n")
    with pytest.raises(SubmissionError, match="line 2.*3 values"):
        read_class_map_csv(tmp_path / "b.csv", size=(2, 2))
    (tmp_path / "c.csv").write_text("image_id,PredictionString\nx,0 1 a 2\n")
    with pytest.raises(SubmissionError, match="integers"):
        read_class_map_csv(tmp_path / "c.csv", size=(2, 2))
    (tmp_path / "d.csv").write_text("id,pred\nx,0 1 2 3\n")
    with pytest.raises(SubmissionError, match="header"):
        read_class_map_csv(tmp_path / "d.csv", size=(2, 2))
    (tmp_path / "e.csv").write_text("image_id,PredictionString\nx,0 1 2 9\n")
    with pytest.raises(SubmissionError, match="class 9"):
        read_class_map_csv(tmp_path / "e.csv", size=(2, 2), num_classes=4)


def test_rle_matches_kaggle_convention():
    mask = np.array([[0, 1, 1], [0, 0, 1]])
    assert rle_encode(mask) == "2 2 6 1"
    assert rle_encode(np.zeros((3, 3))) == ""
    assert rle_encode(np.ones((2, 2))) == "1 4"
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = (rng.random((17, 23)) > 0.6).astype(np.uint8)
        np.testing.assert_array_equal(rle_decode(rle_encode(m), (17, 23)), m)
    for bad, msg in [("1 2 3", "pairs"), ("0 2", "1-indexed"), ("5 2 1 1", "increasing"), ("1 0", "non-empty"),
                     ("15 3", "inside"), ("1 x", "integers"), ("-1 2", "integers")]:
        with pytest.raises(SubmissionError, match=msg):
            rle_decode(bad, (4, 4))


def test_rle_csv_round_trip_and_errors(tmp_path):
    classes = ["finger-1", "finger-2", "Radius"]
    rng = np.random.default_rng(0)
    masks = {f"image{i}.png": (rng.random((3, 20, 30)) > 0.7).astype(np.uint8) for i in range(2)}
    masks["image0.png"][2] = 0  # an empty class -> empty rle
    assert write_rle_csv(tmp_path / "r.csv", masks.items(), classes=classes) == 6
    back = read_rle_csv(tmp_path / "r.csv", classes=classes, shape=(20, 30))
    for k, v in masks.items():
        np.testing.assert_array_equal(back[k], v)
    with pytest.raises(SubmissionError, match="C = 3"):
        write_rle_csv(tmp_path / "x.csv", [("a", np.zeros((2, 4, 4)))], classes=classes)
    (tmp_path / "u.csv").write_text("image_name,class,rle\na.png,finger-9,1 2\n")
    with pytest.raises(SubmissionError, match="unknown class 'finger-9'"):
        read_rle_csv(tmp_path / "u.csv", classes=classes, shape=(4, 4))
    (tmp_path / "m.csv").write_text("image_name,class,rle\na.png,Radius,1 2 3\n")
    with pytest.raises(SubmissionError, match=r"line 2 \(a.png, Radius\).*pairs"):
        read_rle_csv(tmp_path / "m.csv", classes=classes, shape=(4, 4))
    (tmp_path / "d.csv").write_text("image_name,class,rle\na.png,Radius,1 2\na.png,Radius,5 1\n")
    with pytest.raises(SubmissionError, match="twice"):
        read_rle_csv(tmp_path / "d.csv", classes=classes, shape=(4, 4))


def test_scores_parquet_round_trip(tmp_path):
    rows = [{"image_id": "a", "miou": 0.5, "dice": 0.6}, {"image_id": "b", "miou": 0.7, "dice": None}]
    assert write_scores_parquet(tmp_path / "s.parquet", rows) == 2
    df = read_scores_parquet(tmp_path / "s.parquet")
    assert list(df["image_id"]) == ["a", "b"] and df["miou"].tolist() == [0.5, 0.7]
    with pytest.raises(SubmissionError, match="cannot read"):
        read_scores_parquet(tmp_path / "missing.parquet")
