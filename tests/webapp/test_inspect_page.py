"""Inspect page: charts, gallery and overlay of a seeded run; comparison; clear messages, no traceback."""

from __future__ import annotations

import json

from webapp.app_pages.inspect import viewport


def _specs(at) -> dict[str, dict]:
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out[spec["layout"]["title"]["text"]] = spec
    return out


def _titled(specs: dict[str, dict], prefix: str) -> dict:
    return next(s for t, s in specs.items() if t.startswith(prefix))


def test_run_charts_gallery_and_overlay(seeded, ui):
    at = ui.open_page("inspect", actor=seeded["ada"], run=seeded["fpn_run"])
    ui.no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "3"
    specs = _specs(at)
    per_class = _titled(specs, "Per-class metrics")
    assert [t["name"] for t in per_class["data"]] == ["iou", "dice", "precision", "recall"]
    assert per_class["data"][0]["x"] == ui.CLASSES
    confusion = _titled(specs, "Confusion matrix")
    assert confusion["data"][0]["type"] == "heatmap" and len(confusion["data"][0]["z"]) == 4
    # only the open tab runs: the error charts and the gallery appear when their tabs are opened
    assert not at.image and not any("Error taxonomy" in json.dumps(t) for t in specs)
    at = ui.open_tab(at, "inspect.tabs", "Errors")
    ui.no_exceptions(at)
    specs = _specs(at)
    taxonomy = _titled(specs, "Error taxonomy per class")
    assert [t["name"] for t in taxonomy["data"]] == ["under-prediction", "over-prediction", "wrong class"]
    assert taxonomy["data"][0]["marker"]["color"] == "rgb(0, 68, 136)"
    assert taxonomy["layout"]["barmode"] == "stack"
    boundary = _titled(specs, "Boundary vs interior errors")
    assert len(boundary["data"]) == 2
    objects = _titled(specs, "Object recall by size")
    assert {t["name"] for t in objects["data"]} <= set(ui.CLASSES[1:])
    assert _titled(specs, "Confidence of")["layout"]["barmode"] == "overlay"
    at = ui.open_tab(at, "inspect.tabs", "Images")
    ui.no_exceptions(at)
    captions = [c for img in at.image for c in img.captions]
    thumbs = [c for c in captions if "px wrong" in c]
    assert 1 <= len(thumbs) <= 3
    assert {"image", "ground truth", "prediction", "errors"} <= set(captions)
    legend = [h.proto.body for h in at.get("html")]
    assert any("under-prediction" in b and "rgb(221, 170, 51)" in b for b in legend)


def test_zoom_class_toggle_and_view_button(seeded, ui):
    at = ui.open_tab(ui.open_page("inspect", actor=seeded["ada"], run=seeded["fpn_run"]), "inspect.tabs", "Images")
    second = [b for b in at.button if b.label == "View"][-1]
    second.click().run()
    ui.no_exceptions(at)
    at.select_slider(key="inspect.zoom").set_value(4).run()
    ui.no_exceptions(at)
    caption = next(c.value for c in at.caption if "showing rows" in c.value)
    assert "showing rows 24-39, columns 24-39" in caption
    at.multiselect(key="inspect.shown").set_value(["class_1"]).run()
    ui.no_exceptions(at)
    assert not at.error


def test_compare_a_run_with_another_on_the_same_images(seeded, ui):
    at = ui.open_tab(ui.open_page("inspect", actor=seeded["ada"], run=seeded["fpn_run"]), "inspect.tabs", "Compare")
    at.selectbox(key="inspect.b.run").set_value(seeded["linknet_run"]).run()
    ui.no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    specs = _specs(at)
    cmp = _titled(specs, "A = run")
    assert [t["name"] for t in cmp["data"]] == ["A right, B wrong", "B right, A wrong", "both wrong"]
    assert any("A = run" in c for img in at.image for c in img.captions)


def test_missing_run_shows_a_clear_message(seeded, ui):
    at = ui.open_page("inspect", actor=seeded["ada"], run=999)
    ui.no_exceptions(at)
    assert any("run 999 does not exist" in e.value.lower() for e in at.error)


def test_running_run_and_disjoint_ensemble_explain_themselves(seeded, ui):
    at = ui.open_page("inspect", actor=seeded["ada"], run=seeded["live_run"])
    ui.no_exceptions(at)
    assert any("running" in e.value and "finishes" in e.value for e in at.error), [e.value for e in at.error]
    at = ui.open_page("inspect", actor=seeded["ada"], ensemble=seeded["ensemble"])
    ui.no_exceptions(at)
    assert any("share no validation image" in e.value for e in at.error)


def test_group_out_of_fold_union_with_folds(seeded, ui):
    at = ui.open_page("inspect", actor=seeded["ada"], group=seeded["fold_group"])
    ui.no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert {m.label: m.value for m in at.metric}["Images"] == "12"
    assert any(t.value.columns.tolist()[:2] == ["fold", "images"] for t in at.dataframe)


def test_viewport_keeps_the_render_small():
    assert viewport(2048, 2048, 1, 0.5, 0.5) == ((0, 0, 2048, 2048), 4)
    assert viewport(2048, 2048, 8, 0.0, 1.0) == ((0, 1792, 256, 2048), 1)
    assert viewport(64, 64, 4, 0.5, 0.5) == ((24, 24, 40, 40), 1)


def test_ensemble_of_runs_on_the_same_images(seeded, ui):
    from worker.services import ensembles

    with ui.scope() as s:
        ens = ensembles.create_ensemble(
            s, actor=seeded["ada"], name="fpn+linknet", method="weighted",
            members=[{"kind": "run", "id": seeded["fpn_run"], "weight": 2.0},
                     {"kind": "run", "id": seeded["linknet_run"], "weight": 1.0}],
            val_metrics=ui.metrics(0.8),
        )
    at = ui.open_page("inspect", actor=seeded["ada"], ensemble=ens.id)
    ui.no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert {m.label: m.value for m in at.metric}["Images"] == "3"
    assert any("weighted ensemble" in c.value for c in at.caption)
    assert _titled(_specs(at), "Per-class metrics")["data"][0]["x"] == ui.CLASSES
