"""Run detail page: header, curves, per-class table, config diff, submissions and public scores."""

from __future__ import annotations

import json
from pathlib import Path


def test_run_page_shows_metrics_curves_and_per_class(seeded, ui):
    at = ui.open_page("run_detail", actor=seeded["ada"], run=seeded["fpn_run"])
    ui.no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "succeeded"
    assert metrics["Best miou"] == "0.7800"
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    curves = specs[0]
    train = next(tr for tr in curves["data"] if tr["name"] == "train loss")
    assert len(train["x"]) == 3
    assert any(tr["name"] == "val miou" for tr in curves["data"])
    # only the open tab runs: the per-class table appears when its tab is opened
    assert not any("class" in t.value.columns for t in at.dataframe)
    at = ui.open_tab(at, "run_detail.tabs", "Per-class metrics")
    ui.no_exceptions(at)
    per_class = next(t.value for t in at.dataframe if "class" in t.value.columns)
    assert list(per_class["class"]) == ui.CLASSES
    assert abs(per_class["miou"].iloc[1] - 0.78) < 1e-9


def test_record_public_score_and_reject_text(seeded, ui):
    at = ui.open_page("run_detail", actor=seeded["ada"], run=seeded["fpn_run"])
    at = ui.open_tab(at, "run_detail.tabs", "Submissions")
    score = next(t for t in at.text_input if t.label == "Public score")
    score.input("not a number")
    next(b for b in at.button if b.label == "Save score").click().run()
    ui.no_exceptions(at)
    assert any("Public score must be a number" in e.value for e in at.error)
    score = next(t for t in at.text_input if t.label == "Public score")
    score.input("0.7712")
    next(b for b in at.button if b.label == "Save score").click().run()
    ui.no_exceptions(at)
    assert any("0.7712" in s.value for s in at.success)
    from worker.services import submissions

    with ui.scope() as s:
        sub = submissions.get_submission(s, submission_id=seeded["submissions"][seeded["fpn_run"]])
    assert sub.public_score == 0.7712 and sub.score_entered_by == seeded["ada"]


def test_test_prediction_is_queued_with_its_tta_before_any_submission(seeded, ui, published):
    at = ui.open_page("run_detail", actor=seeded["bob"], run=seeded["fpn_run"])
    at = ui.open_tab(at, "run_detail.tabs", "Submissions")
    # no stored test predictions yet: a submission cannot be written, a prediction can be queued
    assert next(b for b in at.button if b.label == "Queue submission").disabled
    next(s for s in at.selectbox if s.label == "Test-time augmentation").set_value("d4")
    next(b for b in at.button if b.label == "Queue test prediction").click().run()
    ui.no_exceptions(at)
    assert published and published[-1]["job_ids"]
    from worker.services import jobs

    with ui.scope() as s:
        job = jobs.get_job(s, job_id=published[-1]["job_ids"][0])
    assert job.kind.value == "predict" and job.target == {"run_ids": [seeded["fpn_run"]]}
    assert job.params["split"] == "test" and job.params["tta"]["rotations"] == [0, 90, 180, 270]
    assert any("Test prediction of run" in s.value for s in at.success)
    assert any("being made" in i.value for i in at.info)  # the pending job is shown


def test_submission_from_stored_test_predictions(seeded, ui, published):
    at = ui.open_page("ensemble_builder", actor=seeded["ada"], ensemble=seeded["ensemble"])
    assert any("Test predictions stored" in s.value for s in at.success)
    next(s for s in at.selectbox if s.label == "Format").set_value("class_map")
    next(b for b in at.button if b.label == "Queue submission").click().run()
    ui.no_exceptions(at)
    from worker.services import jobs, submissions

    with ui.scope() as s:
        job = jobs.get_job(s, job_id=published[-1]["job_ids"][0])
        (sub,) = submissions.list_submissions(s, ensemble_id=seeded["ensemble"])
    assert job.kind.value == "submission" and job.target == {"submission_id": sub.id}
    assert sub.format == "class_map"
    assert any(f"Submission {sub.id} queued as job {job.id}" in s.value for s in at.success)


def test_config_diff_against_another_run(seeded, ui):
    at = ui.open_page("run_detail", actor=seeded["ada"], run=seeded["fpn_run"])
    at = ui.open_tab(at, "run_detail.tabs", "Config")
    next(n for n in at.number_input if n.label.startswith("Compare with run id")).set_value(seeded["linknet_run"]).run()
    diff = next(t.value for t in at.dataframe if "field" in t.value.columns)
    assert "model.arch" in list(diff["field"])


def test_group_page(seeded, ui):
    at = ui.open_page("run_detail", actor=seeded["ada"], group=seeded["fold_group"])
    ui.no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Runs"] == "2"
    assert metrics["Mean miou"] == "0.7200"


def test_deleted_run_shows_a_message_not_a_traceback(seeded, ui):
    at = ui.open_page("run_detail", actor=seeded["ada"], run=seeded["fpn_run"])
    ui.no_exceptions(at)
    # the run disappears while its page is open (deleted by an admin, or its experiment removed)
    import sqlalchemy as sa

    with ui.scope() as s:
        s.execute(sa.text("DELETE FROM submissions WHERE run_id = :r"), {"r": seeded["fpn_run"]})
        s.execute(sa.text("DELETE FROM runs WHERE id = :r"), {"r": seeded["fpn_run"]})
    at.run()
    ui.no_exceptions(at)
    assert any("does not exist" in e.value for e in at.error)


def test_unknown_run_id(seeded, ui):
    at = ui.open_page("run_detail", actor=seeded["ada"], run=99999)
    ui.no_exceptions(at)
    assert any("Run 99999 does not exist" in e.value for e in at.error)


def test_artifacts_in_an_s3_root_are_listed_and_downloaded(seeded, ui, s3_server, monkeypatch, tmp_path):
    from webapp import resources
    from worker.artifacts import Artifacts
    from worker.db.models import Run

    root = f"s3://{s3_server.bucket()}/segboard"
    monkeypatch.setenv("SEGBOARD_ARTIFACT_ROOT", root)
    monkeypatch.setenv("SEGBOARD_STORAGE_OPTIONS", json.dumps(s3_server.options))
    resources.reset()
    # a worker on another box trained the run and uploaded its folder
    box = Artifacts(root, cache=tmp_path / "gpu-box", storage_options=s3_server.options)
    folder = box.local_dir("runs", str(seeded["fpn_run"]))
    (folder / "checkpoints" / "best").mkdir(parents=True)
    (folder / "checkpoints" / "best" / "metrics.json").write_text('{"miou": 0.78}')
    (folder / "train.log").write_text("epoch 1\n")
    location = box.push(folder)
    with ui.scope() as s:
        s.get(Run, seeded["fpn_run"]).artifact_dir = location

    at = ui.open_tab(ui.open_page("run_detail", actor=seeded["ada"], run=seeded["fpn_run"]), "run_detail.tabs",
                     "Artifacts")
    ui.no_exceptions(at)
    locations = next(t.value for t in at.dataframe if "artifact" in t.value.columns)
    assert locations.set_index("artifact").loc["run folder", "location"] == location
    pick = next(s for s in at.selectbox if s.label == "Download")
    files = [o for o in pick.options if "KiB" in o]
    assert files[0].startswith("checkpoints/best/metrics.json") and len(files) == 2
    # the run's stores are streamed by the API: the same picker links to them
    assert "validation predictions (zip)" in pick.options
    pick.set_value("checkpoints/best/metrics.json").run()
    buttons = at.get("download_button")
    assert len(buttons) == 1 and "metrics.json" in buttons[0].proto.label
    mirrored = Path(str(resources.app_settings().artifact_cache_dir)) / "s3"
    assert (next(mirrored.rglob("metrics.json"))).read_text() == '{"miou": 0.78}'  # fetched from the bucket


def _policy_markdown(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("Training crop, ")]


def test_run_page_shows_the_data_policy_when_the_run_has_one(seeded, ui, tmp_path):
    from segcore.data.policy import DataPolicy
    from worker.db.models import Run

    run_id = seeded["fpn_run"]
    at = ui.open_page("run_detail", actor=seeded["ada"], run=run_id)
    ui.no_exceptions(at)  # no run folder: no section
    assert not _policy_markdown(at) and not any(m.value == "##### Data policy" for m in at.markdown)
    folder = tmp_path / "artifacts" / "runs" / str(run_id)
    folder.mkdir(parents=True)
    with ui.scope() as s:
        s.get(Run, run_id).artifact_dir = str(folder)
    at = ui.open_page("run_detail", actor=seeded["ada"], run=run_id)
    ui.no_exceptions(at)  # a folder without data_policy.json (a run from before): still no section
    assert not _policy_markdown(at)
    rule = ("auto: median short side 64 px x 0.75, clamped to [256, 512], at most the short side, multiple of 32 "
            "-> 64x64")
    policy = DataPolicy(crop_size=(64, 64), crop_auto=True, crop_rule=rule, median_short_side=64.0,
                        num_train_images=9, class_shares=[0.7, 0.2, 0.08, 0.02],
                        rare_crop_weights=[0.4, 0.8, 1.2, 1.6], loss_weights=None)
    (folder / "data_policy.json").write_text(policy.model_dump_json(indent=2))
    at = ui.open_page("run_detail", actor=seeded["ada"], run=run_id)
    ui.no_exceptions(at)
    (line,) = _policy_markdown(at)
    assert rule in line and "9 training image(s)" in line
    table = next(t.value for t in at.dataframe if "pixel share" in t.value.columns)
    assert list(table.columns) == ["class", "pixel share", "crop weight"]  # no loss weights were chosen
    assert list(table["class"]) == ui.CLASSES and table["crop weight"].iloc[3] == 1.6


def test_run_page_charts_the_resources_each_epoch_used(seeded, ui):
    at = ui.open_page("run_detail", actor=seeded["ada"], run=seeded["fpn_run"])
    ui.no_exceptions(at)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    usage = next(s for s in specs if (s["layout"].get("title") or {}).get("text") == "Resources per epoch")
    cpu = next(tr for tr in usage["data"] if tr["name"] == "CPU")
    assert cpu["x"] == [1, 2, 3] and cpu["y"] == [151.0, 152.0, 153.0]
    assert {tr["name"] for tr in usage["data"]} == {"CPU", "RAM (process + loaders)"}  # no GPU figures on a CPU run


def test_the_picker_links_stores_and_checkpoints_to_the_apis_streamed_zips(seeded, ui):
    at = ui.open_page("run_detail", actor=seeded["ada"], run=seeded["fpn_run"])
    at = ui.open_tab(at, "run_detail.tabs", "Artifacts")
    ui.no_exceptions(at)
    pick = next(s for s in at.selectbox if s.label == "Download")
    pick.set_value("validation predictions (zip)").run()
    links = [b for b in at.get("link_button") if b.proto.label.startswith("Download validation predictions")]
    assert links and links[0].proto.url == f"/api/runs/{seeded['fpn_run']}/store?split=val"
