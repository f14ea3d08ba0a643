"""validate_dataset: every kind of bad input gives a problem naming the file and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from segcore.config import CocoSource, MaskFolderSource, MultilabelJsonSource
from segcore.data.validation import DatasetReport, Problem, ProblemCode, Severity, raise_if_invalid, validate_dataset
from segcore.errors import DatasetError

MASK_CLASSES = ["bg", "a", "b"]
ML_CLASSES = ["bone", "joint", "implant"]


def only(report: DatasetReport, code: ProblemCode) -> Problem:
    found = [p for p in report.problems if p.code is code]
    assert found, f"expected a {code.value} problem, got: {report.summary()}"
    return found[0]


def coco_json(src: CocoSource) -> tuple[Path, dict]:
    path = Path(src.root) / "annotations.json"
    return path, json.loads(path.read_text())


def first_ml_file(src: MultilabelJsonSource) -> Path:
    return sorted((Path(src.root) / "annotations").glob("*.json"))[0]


# ---------------------------------------------------------------- clean datasets


def test_generated_datasets_are_ok(coco_source, mask_source, multilabel_source) -> None:
    r1 = validate_dataset(coco_source)
    r2 = validate_dataset(mask_source, classes=MASK_CLASSES)
    r3 = validate_dataset(multilabel_source, classes=ML_CLASSES, task="multilabel")
    for r in (r1, r2, r3):
        assert r.ok, r.summary()
        assert r.problems == []
    assert r1.num_images == 12 and r1.num_test_images == 2 and r1.image_sizes == {"64x64": 12}
    assert r1.classes[0] == "background" and len(r1.classes) == 4
    assert r2.num_images == 8 and r3.num_images == 6
    assert json.loads(r1.model_dump_json())["ok"] is True


def test_validation_writes_nothing(coco_source) -> None:
    root = Path(coco_source.root)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    validate_dataset(coco_source)
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert before == after


# ---------------------------------------------------------------- structure


def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    report = validate_dataset(MaskFolderSource(root=str(missing)), classes=MASK_CLASSES)
    p = only(report, ProblemCode.MISSING_ROOT)
    assert p.file == str(missing) and "does not exist" in p.message and not report.ok


def test_missing_annotation_file(coco_source) -> None:
    path, _ = coco_json(coco_source)
    path.unlink()
    p = only(validate_dataset(coco_source), ProblemCode.MISSING_ANNOTATION_FILE)
    assert p.file == str(path) and "source.annotations" in p.message


def test_empty_coco_annotation_file(coco_source) -> None:
    path, _ = coco_json(coco_source)
    path.write_text("")
    p = only(validate_dataset(coco_source), ProblemCode.EMPTY_ANNOTATION_FILE)
    assert p.file == str(path) and "empty" in p.message


def test_empty_multilabel_annotation_file(multilabel_source) -> None:
    path = first_ml_file(multilabel_source)
    path.write_text("  ")
    p = only(validate_dataset(multilabel_source, classes=ML_CLASSES, task="multilabel"), ProblemCode.EMPTY_ANNOTATION_FILE)
    assert p.file == str(path) and '{"annotations": []}' in p.message


def test_invalid_json(multilabel_source) -> None:
    path = first_ml_file(multilabel_source)
    path.write_text("{not json")
    p = only(validate_dataset(multilabel_source, classes=ML_CLASSES, task="multilabel"), ProblemCode.INVALID_ANNOTATION_FILE)
    assert p.file == str(path) and "not valid JSON" in p.message


# ---------------------------------------------------------------- image files


def test_missing_image_file(coco_source) -> None:
    img = Path(coco_source.root) / "images" / "img_0003.png"
    img.unlink()
    p = only(validate_dataset(coco_source), ProblemCode.MISSING_IMAGE)
    assert p.file == str(img) and "img_0003.png" in p.message and "does not exist" in p.message


def test_truncated_png(coco_source) -> None:
    img = Path(coco_source.root) / "images" / "img_0002.png"
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    p = only(validate_dataset(coco_source), ProblemCode.UNREADABLE_IMAGE)
    assert p.file == str(img) and "truncated" in p.message


def test_zero_byte_image(mask_source) -> None:
    img = Path(mask_source.root) / "images" / "img_0001.png"
    img.write_bytes(b"")
    p = only(validate_dataset(mask_source, classes=MASK_CLASSES), ProblemCode.UNREADABLE_IMAGE)
    assert p.file == str(img) and "0 bytes" in p.message


def test_unreadable_test_image(coco_source) -> None:
    img = Path(coco_source.root) / "test" / "test_0000.png"
    img.write_bytes(b"not a png")
    p = only(validate_dataset(coco_source), ProblemCode.UNREADABLE_IMAGE)
    assert p.file == str(img)


def test_mask_image_size_mismatch(mask_source, write_png) -> None:
    mask = Path(mask_source.root) / "masks" / "img_0002.png"
    write_png(mask, np.zeros((32, 48), np.uint8))
    p = only(validate_dataset(mask_source, classes=MASK_CLASSES), ProblemCode.SIZE_MISMATCH)
    assert p.file == str(mask) and "48x32" in p.message and "64x64" in p.message


def test_coco_image_size_differs_from_json(coco_source) -> None:
    path, data = coco_json(coco_source)
    data["images"][0]["width"] = 80
    path.write_text(json.dumps(data))
    p = only(validate_dataset(coco_source), ProblemCode.SIZE_MISMATCH)
    assert p.file.endswith("img_0000.png") and "80x64" in p.message


def test_duplicate_stem_with_two_extensions(mask_source, write_png) -> None:
    extra = Path(mask_source.root) / "images" / "img_0000.jpg"
    write_png(extra, np.zeros((64, 64, 3), np.uint8))
    p = only(validate_dataset(mask_source, classes=MASK_CLASSES), ProblemCode.DUPLICATE_FILE_NAME)
    assert p.file in (str(extra), str(extra.with_suffix(".png")))
    assert "img_0000.png" in p.message and "img_0000.jpg" in p.message and "one file per stem" in p.message


def test_mask_without_image(mask_source, write_png) -> None:
    orphan = Path(mask_source.root) / "masks" / "lonely.png"
    write_png(orphan, np.zeros((64, 64), np.uint8))
    p = only(validate_dataset(mask_source, classes=MASK_CLASSES), ProblemCode.MISSING_IMAGE)
    assert p.file == str(orphan) and "lonely" in p.message


def test_image_without_mask(mask_source, write_png) -> None:
    orphan = Path(mask_source.root) / "images" / "unlabelled.png"
    write_png(orphan, np.zeros((64, 64, 3), np.uint8))
    p = only(validate_dataset(mask_source, classes=MASK_CLASSES), ProblemCode.MISSING_ANNOTATION)
    assert p.file == str(orphan) and "no mask" in p.message


def test_multilabel_image_without_json(multilabel_source, write_png) -> None:
    orphan = Path(multilabel_source.root) / "images" / "extra.png"
    write_png(orphan, np.zeros((64, 64), np.uint8))
    report = validate_dataset(multilabel_source, classes=ML_CLASSES, task="multilabel")
    p = only(report, ProblemCode.MISSING_ANNOTATION)
    assert p.file == str(orphan) and "extra.json" in p.message


def test_coco_image_on_disk_not_listed_is_a_warning(coco_source, write_png) -> None:
    extra = Path(coco_source.root) / "images" / "stray.png"
    write_png(extra, np.zeros((64, 64, 3), np.uint8))
    report = validate_dataset(coco_source)
    p = only(report, ProblemCode.UNLISTED_IMAGE)
    assert p.severity is Severity.WARNING and p.file == str(extra) and report.ok


# ---------------------------------------------------------------- class values


def test_unknown_mask_pixel_value(mask_source, write_png) -> None:
    mask = Path(mask_source.root) / "masks" / "img_0004.png"
    write_png(mask, np.full((64, 64), 7, np.uint8))
    p = only(validate_dataset(mask_source, classes=MASK_CLASSES), ProblemCode.UNKNOWN_PIXEL_VALUE)
    assert p.file == str(mask) and "[7]" in p.message and "value_map" in p.message


def test_value_map_class_out_of_range(mask_source) -> None:
    src = mask_source.model_copy(update={"value_map": {0: 0, 1: 1, 2: 5}})
    p = only(validate_dataset(src, classes=MASK_CLASSES), ProblemCode.CLASS_OUT_OF_RANGE)
    assert "class 5" in p.message and "0..2" in p.message


def test_category_map_class_out_of_range(coco_source) -> None:
    src = coco_source.model_copy(update={"category_map": {1: 1, 2: 2, 3: 9}})
    p = only(validate_dataset(src, classes=["background", "a", "b", "c"]), ProblemCode.CLASS_OUT_OF_RANGE)
    assert "class 9" in p.message and p.file.endswith("annotations.json")


def test_category_not_in_categories(coco_source) -> None:
    path, data = coco_json(coco_source)
    data["annotations"][0]["category_id"] = 42
    path.write_text(json.dumps(data))
    p = only(validate_dataset(coco_source), ProblemCode.UNKNOWN_CATEGORY)
    assert p.file == str(path) and "42" in p.message and "categories" in p.message


def test_label_not_among_classes(multilabel_source) -> None:
    path = first_ml_file(multilabel_source)
    data = json.loads(path.read_text())
    data["annotations"][0]["label"] = "tendon"
    path.write_text(json.dumps(data))
    p = only(validate_dataset(multilabel_source, classes=ML_CLASSES, task="multilabel"), ProblemCode.UNKNOWN_LABEL)
    assert p.file == str(path) and "'tendon'" in p.message and "data.classes" in p.message


def test_class_count_mismatch(coco_source) -> None:
    p = only(validate_dataset(coco_source, classes=["background", "x"]), ProblemCode.CLASS_COUNT_MISMATCH)
    assert "2 names" in p.message and "4 classes" in p.message


# ---------------------------------------------------------------- polygons


def test_coco_polygon_outside_image(coco_source) -> None:
    path, data = coco_json(coco_source)
    data["annotations"][0]["segmentation"] = [[10, 10, 90, 10, 90, 20, 10, 20]]
    path.write_text(json.dumps(data))
    p = only(validate_dataset(coco_source), ProblemCode.POLYGON_OUT_OF_BOUNDS)
    assert p.file == str(path) and "x=90" in p.message and "64x64" in p.message


def test_polygon_within_tolerance_is_fine(coco_source) -> None:
    path, data = coco_json(coco_source)
    data["annotations"][0]["segmentation"] = [[-0.5, 0, 64.9, 0, 64.9, 10, 0, 10]]
    path.write_text(json.dumps(data))
    assert not [p for p in validate_dataset(coco_source).problems if p.code is ProblemCode.POLYGON_OUT_OF_BOUNDS]


def test_multilabel_polygon_outside_image(multilabel_source) -> None:
    path = first_ml_file(multilabel_source)
    data = json.loads(path.read_text())
    data["annotations"][0]["points"][0] = [-5, 3]
    path.write_text(json.dumps(data))
    p = only(validate_dataset(multilabel_source, classes=ML_CLASSES, task="multilabel"), ProblemCode.POLYGON_OUT_OF_BOUNDS)
    assert p.file == str(path) and "x=-5" in p.message


def test_nan_coordinates_multilabel(multilabel_source) -> None:
    path = first_ml_file(multilabel_source)
    data = json.loads(path.read_text())
    data["annotations"][0]["points"][1] = [float("nan"), 3.0]
    path.write_text(json.dumps(data))  # json writes NaN, which Python's reader accepts
    p = only(validate_dataset(multilabel_source, classes=ML_CLASSES, task="multilabel"), ProblemCode.NONFINITE_COORDINATES)
    assert p.file == str(path) and "NaN" in p.message


def test_inf_coordinates_coco(coco_source) -> None:
    path, data = coco_json(coco_source)
    data["annotations"][0]["segmentation"] = [[1, 1, float("inf"), 1, 5, 5]]
    path.write_text(json.dumps(data))
    p = only(validate_dataset(coco_source), ProblemCode.NONFINITE_COORDINATES)
    assert p.file == str(path) and "annotation 1" in p.message


def test_degenerate_polygon(multilabel_source) -> None:
    path = first_ml_file(multilabel_source)
    data = json.loads(path.read_text())
    data["annotations"][0]["points"] = [[1, 1], [2, 2]]
    path.write_text(json.dumps(data))
    p = only(validate_dataset(multilabel_source, classes=ML_CLASSES, task="multilabel"), ProblemCode.DEGENERATE_POLYGON)
    assert p.file == str(path) and "at least 3" in p.message


def test_rle_of_wrong_size(coco_source) -> None:
    path, data = coco_json(coco_source)
    data["annotations"][0]["segmentation"] = {"size": [32, 32], "counts": [1024]}
    path.write_text(json.dumps(data))
    p = only(validate_dataset(coco_source), ProblemCode.SIZE_MISMATCH)
    assert p.file == str(path) and "[32, 32]" in p.message


# ---------------------------------------------------------------- COCO entries


def test_duplicate_coco_file_name(coco_source) -> None:
    path, data = coco_json(coco_source)
    dup = dict(data["images"][1], id=999)
    data["images"].append(dup)
    path.write_text(json.dumps(data))
    p = only(validate_dataset(coco_source), ProblemCode.DUPLICATE_IMAGE_ENTRY)
    assert p.file == str(path) and "img_0001.png" in p.message and "999" in p.message


def test_duplicate_coco_image_id(coco_source) -> None:
    path, data = coco_json(coco_source)
    data["images"][2]["id"] = data["images"][1]["id"]
    path.write_text(json.dumps(data))
    p = only(validate_dataset(coco_source), ProblemCode.DUPLICATE_IMAGE_ENTRY)
    assert p.file == str(path) and f"image id {data['images'][1]['id']}" in p.message


def test_annotation_without_image(coco_source) -> None:
    path, data = coco_json(coco_source)
    data["annotations"][0]["image_id"] = 12345
    path.write_text(json.dumps(data))
    p = only(validate_dataset(coco_source), ProblemCode.ANNOTATION_WITHOUT_IMAGE)
    assert p.file == str(path) and "12345" in p.message


def test_task_mismatch(mask_source) -> None:
    p = only(validate_dataset(mask_source, classes=MASK_CLASSES, task="multilabel"), ProblemCode.TASK_MISMATCH)
    assert "data.task" in p.message


# ---------------------------------------------------------------- raising


def test_strict_raises_listing_every_problem(mask_source, write_png) -> None:
    root = Path(mask_source.root)
    write_png(root / "masks" / "img_0004.png", np.full((64, 64), 7, np.uint8))
    (root / "images" / "img_0001.png").write_bytes(b"")
    with pytest.raises(DatasetError) as info:
        validate_dataset(mask_source, classes=MASK_CLASSES, strict=True)
    text = str(info.value)
    assert "unknown_pixel_value" in text and "img_0004.png" in text
    assert "unreadable_image" in text and "img_0001.png" in text
    assert "fix these problems" in text


def test_raise_if_invalid_passes_clean_reports(mask_source) -> None:
    report = validate_dataset(mask_source, classes=MASK_CLASSES)
    assert report.ok and not report.errors
    raise_if_invalid(report)  # a clean report raises nothing


def test_check_pixels_false_reads_headers_only(mask_source, write_png) -> None:
    write_png(Path(mask_source.root) / "masks" / "img_0004.png", np.full((64, 64), 7, np.uint8))
    report = validate_dataset(mask_source, classes=MASK_CLASSES, check_pixels=False)
    assert report.ok and report.num_images == 8
    assert os.path.exists(Path(mask_source.root) / "masks" / "img_0004.png")
