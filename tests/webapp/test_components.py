"""Pure pieces of the dashboard: safe archive extraction, overlays, form parsing, error messages, charts."""

from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
import pytest

from worker.services.uploads import ArchiveError, ArchiveLimits, dataset_folder, extract_archive, safe_member_path


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "C:/win", "..\\x"])
def test_unsafe_member_names_are_refused(name):
    with pytest.raises(ArchiveError):
        safe_member_path(name)


def test_zip_extracts_into_a_new_folder(tmp_path):
    dest = extract_archive(_zip({"ds/images/a.png": b"1", "ds/annotations.json": b"{}"}), "x.zip", tmp_path / "d")
    assert (dest / "ds" / "images" / "a.png").read_bytes() == b"1"
    assert dataset_folder(dest) == dest / "ds"


def test_zip_bomb_and_counts_are_bounded_and_leave_nothing(tmp_path):
    bomb = _zip({"big.bin": b"\0" * 5_000_000})
    with pytest.raises(ArchiveError, match="unpacks to more than"):
        extract_archive(bomb, "b.zip", tmp_path / "d", limits=ArchiveLimits(max_total_bytes=1_000_000))
    many = _zip({f"f{i}.txt": b"x" for i in range(20)})
    with pytest.raises(ArchiveError, match="holds 20 files"):
        extract_archive(many, "m.zip", tmp_path / "d", limits=ArchiveLimits(max_files=10))
    assert list(tmp_path.iterdir()) == []


def test_symlinks_in_zip_and_tar_are_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic links"):
        extract_archive(buf.getvalue(), "l.zip", tmp_path / "d")
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        ti = tarfile.TarInfo("evil")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "/etc/passwd"
        tf.addfile(ti)
    with pytest.raises(ArchiveError, match="links"):
        extract_archive(tbuf.getvalue(), "l.tar.gz", tmp_path / "d2")


def test_tar_traversal_refused_and_plain_tar_extracts(tmp_path):
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        data = b"hello"
        ti = tarfile.TarInfo("../escape.txt")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    with pytest.raises(ArchiveError, match="leaving its folder"):
        extract_archive(tbuf.getvalue(), "t.tgz", tmp_path / "d")
    assert not (tmp_path / "escape.txt").exists()
    ok = io.BytesIO()
    with tarfile.open(fileobj=ok, mode="w") as tf:
        ti = tarfile.TarInfo("images/a.png")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
    dest = extract_archive(ok.getvalue(), "ok.tar", tmp_path / "ok")
    assert (dest / "images" / "a.png").read_bytes() == b"abc"


def test_not_an_archive(tmp_path):
    with pytest.raises(ArchiveError, match="not a readable zip"):
        extract_archive(b"garbage", "g.zip", tmp_path / "d")
    with pytest.raises(ArchiveError, match="not a .zip or .tar"):
        extract_archive(b"garbage", "g.rar", tmp_path / "d")


def test_overlay_colours_classes_and_hatches_ignored_pixels():
    from webapp.components.overlays import IGNORE_COLOR, class_color, classes_present, legend_html, overlay_mask

    img = np.full((8, 8, 3), 100, np.uint8)
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0] = 2
    mask[7, 7] = 255
    out = overlay_mask(img, mask, num_classes=3, alpha=1.0, background=0)
    assert tuple(out[0, 0]) == class_color(2, background_index=0)
    assert tuple(out[3, 3]) == (100, 100, 100)  # the declared background untouched
    assert tuple(out[7, 4]) == (100, 100, 100)
    assert tuple(out[7, 7]) == tuple(round(100 * 0.5 + c * 0.5) for c in IGNORE_COLOR)  # hatched: unlabelled
    hidden = overlay_mask(img, mask, num_classes=3, alpha=1.0, background=0, visible=[1])
    assert tuple(hidden[0, 0]) == (100, 100, 100)
    ml = np.zeros((2, 4, 4), np.uint8)
    ml[0, 0, 0] = ml[1, 0, 0] = 1
    blended = overlay_mask(np.zeros((4, 4, 3), np.uint8), ml, num_classes=2, alpha=1.0)
    expected = (np.array(class_color(0)) + np.array(class_color(1))) / 2
    assert np.allclose(blended[0, 0], expected, atol=1)
    assert classes_present(mask, 3) == [0, 2]
    html = legend_html(["bg", "a<b", "c"], present=[0, 2])
    assert "a&lt;b" in html and "opacity:0.35" in html
    with pytest.raises(ValueError, match="differs"):
        overlay_mask(img, np.zeros((4, 4), np.uint8), num_classes=3)


def test_loss_rows_round_trip_and_bad_params():
    from segcore.errors import ConfigError
    from webapp.components.forms import loss_rows, loss_terms, transform_rows, transform_specs

    rows = loss_rows("0.6*ce + 0.4*jaccard")
    assert list(rows["term"]) == ["ce", "jaccard"]
    assert loss_terms(rows) == [{"name": "ce", "weight": 0.6, "params": {}}, {"name": "jaccard", "weight": 0.4,
                                                                             "params": {}}]
    rows.loc[0, "params"] = '{"gamma": 2'
    with pytest.raises(ConfigError, match="params must be JSON"):
        loss_terms(rows)
    t = transform_rows([{"name": "CLAHE", "p": 0.3, "params": {"clip_limit": 2}}])
    assert transform_specs(t) == [{"name": "CLAHE", "p": 0.3, "params": {"clip_limit": 2}}]
    t.loc[0, "transform"] = "Nope"
    with pytest.raises(ConfigError, match="unknown transform"):
        transform_specs(t)


def test_field_errors_by_path():
    from pydantic import ValidationError

    from segcore.config import ExperimentConfig, parse_config
    from segcore.errors import ConfigError
    from webapp.components.forms import errors_under, field_errors

    bad = {"data": {"source": {"format": "coco", "root": "/x"}, "classes": ["a"], "image_size": [100, 96]},
           "model": {"encoder": "nope"}, "training": {"epochs": 0}}
    with pytest.raises(ValidationError) as exc:
        ExperimentConfig.model_validate(bad)
    errors = field_errors(exc.value)
    assert set(errors) >= {"data.image_size", "model.encoder", "training.epochs"}
    assert errors_under(errors, "training") == ["training.epochs: " + errors["training.epochs"]]
    with pytest.raises(ConfigError) as cexc:
        parse_config(bad)
    assert "model.encoder" in field_errors(cexc.value)
    assert field_errors(ConfigError("grid value 'bce' for loss: loss 'bce' is for multilabel")) != {}


def test_parsers():
    from webapp.components.forms import parse_int_list, parse_tags, parse_values

    assert parse_int_list("0, 1 2", what="seeds") == [0, 1, 2]
    with pytest.raises(ValueError, match="seeds must be whole numbers"):
        parse_int_list("a", what="seeds")
    assert parse_tags(" a, ,b ") == ["a", "b"]
    assert parse_values("[0.001, 0.0003]") == [0.001, 0.0003]
    assert parse_values("16\n32") == [16, 32]


def test_error_messages_say_how_to_fix():
    import sqlalchemy.exc as sa_exc

    from webapp.errors import describe
    from worker.errors import NotFound

    assert "it may have been deleted" in describe(NotFound("run", 3))
    op = sa_exc.OperationalError("SELECT 1", {}, Exception("no such table: runs"))
    assert "segboard db upgrade" in describe(op)
    down = sa_exc.OperationalError("SELECT 1", {}, Exception("unable to open database file"))
    assert "SEGBOARD_DATABASE_URL" in describe(down)
    assert describe(RuntimeError("boom")).startswith("Unexpected error (RuntimeError: boom)")


def test_cv_public_scatter_has_points_and_fit():
    from webapp.components.charts import cv_public_scatter
    from worker.schemas import CorrelationPoint, MetricCorrelation, RowKind

    pts = [CorrelationPoint(kind=RowKind.RUN, id=i, name=f"r{i}", val=v, public=p)
           for i, (v, p) in enumerate([(0.1, 0.2), (0.2, 0.3), (0.3, 0.5)])]
    corr = MetricCorrelation(metric="miou", n=3, pearson=0.98, pearson_p=0.1, spearman=1.0, spearman_p=0.0,
                             slope=1.5, intercept=0.03, points=pts)
    fig = cv_public_scatter(corr, "miou")
    assert fig.layout.title.text == "miou: Pearson 0.980, Spearman 1.000 (n=3)"
    fit = next(t for t in fig.data if t.name == "fit")
    assert list(fit.y) == pytest.approx([0.03 + 1.5 * 0.1, 0.03 + 1.5 * 0.3])


def test_the_dashboard_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, runpy, webapp.resources, worker.services.candidates, webapp.components.samples, "
            "webapp.components.submissions, webapp.components.charts; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_data_policy_frame_has_a_column_per_list_and_names_extra_classes():
    from types import SimpleNamespace

    from webapp.components.tables import data_policy_frame

    policy = SimpleNamespace(class_shares=[0.9, 0.1], rare_crop_weights=None, loss_weights=[0.5, 1.5])
    frame = data_policy_frame(["bg"], policy)
    assert list(frame.columns) == ["class", "pixel share", "loss weight"]
    assert list(frame["class"]) == ["bg", "class 1"] and list(frame["loss weight"]) == [0.5, 1.5]
    crop_only = SimpleNamespace(class_shares=None, rare_crop_weights=None, loss_weights=None)
    assert list(data_policy_frame(["bg"], crop_only).columns) == ["class"]


def test_per_class_scores_leave_pixel_counts_off_their_0_to_1_axis():
    from webapp.components.charts import per_class_metrics

    fig = per_class_metrics(["sky", "tree"], {"iou": [0.5, 0.25], "dice": [0.6, 0.4], "support": [91_000, 1_200]})
    assert [t.name for t in fig.data] == ["iou", "dice"]
    assert all(max(t.y) <= 1 for t in fig.data) and tuple(fig.layout.yaxis.range) == (0, 1)


def test_the_presence_heatmap_draws_one_row_per_image_even_with_numeric_ids():
    from webapp.components.charts import presence_heatmap

    ids = [str(i) for i in range(1, 19)]  # COCO file names such as 1.jpg ... 18.jpg
    fig = presence_heatmap([[i % 2 == 0, True, False] for i in range(18)], ids, ["bg", "date", "fig"])
    assert fig.layout.yaxis.type == "category" and list(fig.data[0].y) == ids and len(fig.data[0].z) == 18
