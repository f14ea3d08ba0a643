"""A dataset's background class: one declared property (or none), used the same way by every overlay,
legend, pseudo-label "foreground" count and error analysis."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from segcore.data.synthetic import make_synthetic_coco
from worker.db import migrate
from worker.db.base import utcnow
from worker.db.session import make_engine
from worker.errors import InvalidInput
from worker.services import datasets, members


@pytest.mark.parametrize(("classes", "task", "fmt", "expected"), [
    (["background", "cat"], "multiclass", "coco", 0),
    (["sky", "tree", "road"], "multiclass", "mask_folder", None),  # Stanford Background: sky is a class
    (["Background", "membrane"], "multiclass", "mask_folder", 0),
    (["a", "b"], "multilabel", "multilabel_json", None),
    (["object"], "multiclass", "coco", 0),  # COCO's class 0 is the pixels outside every object
])
def test_the_default_background(classes, task, fmt, expected):
    assert datasets.default_background(classes, task, fmt) == expected


def test_registration_records_it_and_an_edit_fixes_it(session, tmp_path):
    me = members.create_member(session, actor=None, name="ada").id
    source = make_synthetic_coco(tmp_path / "coco", num_images=4, num_classes=2, size=32)
    ds = datasets.register_dataset(session, actor=me, name="shapes", source=source,
                                   classes=["background", "c1", "c2"], check_pixels=False)
    assert ds.background == 0
    assert datasets.update_dataset(session, actor=me, dataset_id=ds.id, background=None).background is None
    assert datasets.update_dataset(session, actor=me, dataset_id=ds.id, background=2).background == 2
    with pytest.raises(InvalidInput, match="from 0 to 2 or none, got 3"):
        datasets.update_dataset(session, actor=me, dataset_id=ds.id, background=3)
    other = datasets.register_dataset(session, actor=me, name="none", source=make_synthetic_coco(
        tmp_path / "c2", num_images=4, num_classes=2, size=32), classes=["x", "y", "z"], check_pixels=False,
        background=None)
    assert other.background is None


def test_overlays_and_legends_leave_out_only_the_declared_background():
    from webapp.components.overlays import legend_html, overlay_mask

    img = np.zeros((2, 2, 3), np.uint8)
    mask = np.array([[0, 1], [2, 255]], np.uint8)
    with_bg = overlay_mask(img, mask, num_classes=3, alpha=1.0, background=0)
    without = overlay_mask(img, mask, num_classes=3, alpha=1.0, background=None)
    assert with_bg[0, 0].tolist() == [0, 0, 0] and without[0, 0].tolist() != [0, 0, 0]  # sky is drawn
    assert "sky" not in legend_html(["sky", "tree", "road"], background=0)
    assert all(n in legend_html(["sky", "tree", "road"], background=None) for n in ("sky", "tree", "road"))
    # no class is drawn in the grey of ignored pixels
    from segcore.palette import IGNORE_COLOUR, default_palette

    greys = [c for c in default_palette(40, background=None).tolist() if len(set(c)) == 1]
    assert greys == [] and list(IGNORE_COLOUR) not in default_palette(40, background=None).tolist()


def test_upgrading_fills_the_background_of_existing_datasets(sqlite_url):
    migrate.upgrade(sqlite_url, "0006")
    engine = make_engine(sqlite_url)
    rows = [(1, "coco", '["background", "a"]', "coco"), (2, "stanford", '["sky", "tree"]', "mask_folder"),
            (3, "isbi", '["background", "membrane"]', "mask_folder")]
    try:
        with engine.begin() as c:
            for i, name, classes, fmt in rows:
                c.execute(sa.text("INSERT INTO datasets (id, name, source, classes, task, ignore_index, report, "
                                  "created_at) VALUES (:i, :n, :s, :c, 'multiclass', 255, '{}', :t)"),
                          {"i": i, "n": name, "s": f'{{"format": "{fmt}", "root": "x"}}', "c": classes, "t": utcnow()})
        migrate.upgrade(engine)
        with engine.connect() as c:
            got = dict(c.execute(sa.text("SELECT name, background FROM datasets")).all())
    finally:
        engine.dispose()
    assert got == {"coco": 0, "stanford": None, "isbi": 0}
