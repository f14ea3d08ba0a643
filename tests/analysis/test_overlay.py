"""Overlay rendering: legend colours exactly where the errors are, toggles, opacity, viewport."""

from __future__ import annotations

import numpy as np
import pytest

from segcore.analysis import ERROR_LEGEND, ErrorKind, default_palette, render_comparison, render_overlay
from segcore.analysis.compare import COMPARISON_LEGEND
from segcore.analysis.overlay import IGNORE_COLOUR
from segcore.errors import ConfigError

LEGEND = {kind: rgb for kind, _, rgb in ERROR_LEGEND}
UNDER = LEGEND[ErrorKind.UNDER_PREDICTION]
OVER = LEGEND[ErrorKind.OVER_PREDICTION]
WRONG = LEGEND[ErrorKind.WRONG_CLASS]
# fmt: off
GT = np.array([[0, 1, 1, 0],
               [0, 1, 2, 2],
               [0, 0, 2, 255],
               [0, 0, 0, 0]], dtype=np.uint8)
PRED = np.array([[0, 0, 1, 1],
                 [0, 1, 1, 2],
                 [0, 0, 2, 1],
                 [2, 0, 0, 0]], dtype=np.uint8)
# fmt: on
# errors: (0,1) under(1); (0,3) over(1); (1,2) wrong (2 as 1); (3,0) over(2); (2,3) ignored
IMAGE = np.full((4, 4, 3), 100, dtype=np.uint8)
PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], dtype=np.uint8)


def _render(**kwargs):
    kwargs.setdefault("alpha", 1.0)
    return render_overlay(IMAGE, GT, PRED, num_classes=3, palette=PALETTE, **kwargs)


def test_legend_colours_are_distinct_and_fixed() -> None:
    colours = [rgb for _, _, rgb in ERROR_LEGEND]
    assert len(set(colours)) == 3
    assert [k for k, _, _ in ERROR_LEGEND] == [
        ErrorKind.UNDER_PREDICTION,
        ErrorKind.OVER_PREDICTION,
        ErrorKind.WRONG_CLASS,
    ]


def test_error_map_colours_exactly_where_expected() -> None:
    panels = _render()
    err = panels.errors
    assert tuple(err[0, 1]) == UNDER
    assert tuple(err[0, 3]) == OVER
    assert tuple(err[3, 0]) == OVER
    assert tuple(err[1, 2]) == WRONG
    coloured = {(0, 1), (0, 3), (3, 0), (1, 2)}
    for y in range(4):
        for x in range(4):
            if (y, x) not in coloured:  # right pixels and the ignored one show the image
                assert tuple(err[y, x]) == (100, 100, 100), (y, x)
    assert panels.error_codes.tolist() == [[0, 1, 0, 2], [0, 0, 3, 0], [0, 0, 0, 0], [2, 0, 0, 0]]


def test_class_panels_palette_background_and_ignore() -> None:
    panels = _render()
    assert tuple(panels.ground_truth[0, 1]) == (255, 0, 0)
    assert tuple(panels.ground_truth[1, 2]) == (0, 0, 255)
    assert tuple(panels.ground_truth[0, 0]) == (100, 100, 100)  # background is not coloured
    assert tuple(panels.ground_truth[2, 3]) == IGNORE_COLOUR
    assert tuple(panels.prediction[2, 3]) == (255, 0, 0)
    assert tuple(panels.prediction[3, 0]) == (0, 0, 255)
    assert (panels.image == IMAGE).all()
    assert panels.mosaic().shape == (8, 8, 3)


def test_class_toggle_shows_only_selected_classes() -> None:
    panels = _render(show=[2])
    assert panels.error_codes.tolist() == [[0, 0, 0, 0], [0, 0, 3, 0], [0, 0, 0, 0], [2, 0, 0, 0]]
    assert tuple(panels.ground_truth[0, 1]) == (100, 100, 100)  # class 1 hidden
    assert tuple(panels.ground_truth[1, 2]) == (0, 0, 255)
    assert tuple(panels.prediction[0, 2]) == (100, 100, 100)
    with pytest.raises(ConfigError, match="outside 0..2"):
        _render(show=[3])


def test_opacity_blends_with_the_image() -> None:
    panels = _render(alpha=0.5)
    assert tuple(panels.errors[0, 1]) == tuple(round(100 * 0.5 + v * 0.5) for v in UNDER)
    assert tuple(_render(alpha=0.0).errors[0, 1]) == (100, 100, 100)


def test_probabilities_are_accepted_and_argmaxed() -> None:
    probs = np.stack([PRED == k for k in range(3)]).astype(np.float32) * 0.8 + 0.05
    panels = render_overlay(IMAGE, GT, probs, num_classes=3, palette=PALETTE, alpha=1.0)
    assert (panels.errors == _render().errors).all()


def test_region_and_downscale_match_the_full_render() -> None:
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 4, (64, 48)).astype(np.uint8)
    pred = rng.integers(0, 4, (64, 48)).astype(np.uint8)
    image = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    full = render_overlay(image, gt, pred, num_classes=4)
    view = render_overlay(image, gt, pred, num_classes=4, region=(8, 4, 40, 36), downscale=2)
    assert view.errors.shape == (16, 16, 3)
    assert (view.errors == full.errors[8:40:2, 4:36:2]).all()
    assert (view.ground_truth == full.ground_truth[8:40:2, 4:36:2]).all()
    with pytest.raises(ConfigError, match="not inside"):
        render_overlay(image, gt, pred, num_classes=4, region=(0, 0, 65, 10))
    with pytest.raises(ConfigError, match="downscale"):
        render_overlay(image, gt, pred, num_classes=4, downscale=0)


def test_multilabel_overlay() -> None:
    gt = np.zeros((2, 2, 3), dtype=bool)
    gt[0, 0, :2] = True
    gt[1, :, 2] = True
    pred = gt.copy()
    pred[0, 0, 1] = False  # pixel (0,1): class 0 missed
    pred[1, 0, 0] = True  # pixel (0,0): class 1 predicted too -> over
    pred[0, 1, 0] = True  # pixel (1,0): class 0 predicted where no class is -> over
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    panels = render_overlay(image, gt.astype(np.uint8), pred, task="multilabel", num_classes=2, alpha=1.0)
    assert panels.error_codes.tolist() == [[2, 1, 0], [2, 0, 0]]
    pal = default_palette(2, background=None)
    assert tuple(panels.ground_truth[1, 2]) == tuple(pal[1])
    assert tuple(panels.errors[0, 1]) == UNDER


def test_comparison_overlay_colours() -> None:
    a = np.array([[0, 1, 1, 0], [0, 1, 2, 2], [0, 0, 2, 0], [0, 0, 0, 1]], dtype=np.uint8)
    b = GT.copy()
    b[2, 3] = 0
    b[0, 1] = 0  # B wrong where A right
    b[3, 3] = 2  # both wrong (A says 1)
    out = render_comparison(IMAGE, GT, a, b, num_classes=3, alpha=1.0)
    legend = {kind: rgb for kind, _, rgb in COMPARISON_LEGEND}
    assert tuple(out[0, 1]) == legend[1]  # A right, B wrong
    assert tuple(out[3, 3]) == legend[3]  # both wrong
    assert tuple(out[0, 0]) == (100, 100, 100)
    assert tuple(out[2, 3]) == (100, 100, 100)  # ignored
    out_b = render_comparison(IMAGE, GT, b, a, num_classes=3, alpha=1.0)
    assert tuple(out_b[0, 1]) == legend[2]


def test_grey_image_and_black_canvas() -> None:
    grey = np.full((4, 4), 100, dtype=np.uint8)
    assert (render_overlay(grey, GT, PRED, num_classes=3, palette=PALETTE).image == IMAGE).all()
    canvas = render_overlay(None, GT, PRED, num_classes=3, palette=PALETTE, alpha=1.0)
    assert tuple(canvas.image[0, 0]) == (0, 0, 0) and tuple(canvas.errors[0, 1]) == UNDER
    with pytest.raises(ConfigError, match="masks are"):
        render_overlay(np.zeros((5, 4, 3), np.uint8), GT, PRED, num_classes=3)
