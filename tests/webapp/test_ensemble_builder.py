"""Ensemble builder: the candidate's score from stored predictions before anything is queued, save, queue."""

from __future__ import annotations

import json

import numpy as np


def _pick(at, keys):
    next(m for m in at.multiselect if m.label.startswith("Members")).set_value(keys).run()
    return at


def _score(at):
    next(b for b in at.button if b.label.startswith("Compute the candidate")).click().run(timeout=120)
    return at


def _miou(pred, target, c, ignore=255):
    keep = target != ignore
    cm = np.bincount(target[keep] * c + pred[keep], minlength=c * c).reshape(c, c)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())


def test_candidate_score_is_shown_before_anything_is_saved(seeded, ui, published):
    at = ui.open_page("ensemble_builder", actor=seeded["ada"])
    ui.no_exceptions(at)
    fpn, link = f"run:{seeded['fpn_run']}", f"run:{seeded['linknet_run']}"
    _pick(at, [fpn, link])
    _score(at)
    ui.no_exceptions(at)
    table = next(t.value for t in at.dataframe if "recorded score" in t.value.columns)
    assert list(table["member"])[-1] == "candidate ensemble" and len(table) == 3
    # the numbers are the real ones: recompute the soft mean from the stores
    from segcore.inference.store import ProbabilityStore

    ds = seeded["dataset_obj"]
    store_a = ProbabilityStore.open(ui_store(ui, seeded["fpn_run"]))
    store_b = ProbabilityStore.open(ui_store(ui, seeded["linknet_run"]))
    ids = list(store_a.ids)
    preds = np.concatenate([((store_a.read(i) + store_b.read(i)) / 2).argmax(0).ravel() for i in ids])
    target = np.concatenate([ds.load_mask(i).astype(np.int64).ravel() for i in ids])
    expected = _miou(preds, target, 4)
    assert abs(table["miou"].iloc[-1] - expected) < 2e-3
    assert not published  # nothing queued yet
    from worker.services import ensembles

    with ui.scope() as s:
        assert len(ensembles.list_ensembles(s)) == 1  # only the seeded one
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                 if "members and the candidate" in json.loads(c.proto.spec)["layout"]["title"]["text"])
    assert len(chart["data"][0]["x"]) == 2

    next(t for t in at.text_input if t.label == "Name").input("fpn+linknet")
    next(b for b in at.button if b.label == "Save and queue").click().run()
    ui.no_exceptions(at)
    with ui.scope() as s:
        saved = [e for e in ensembles.list_ensembles(s) if e.name == "fpn+linknet"][0]
    assert abs(saved.val_score - table["miou"].iloc[-1]) < 1e-9 and saved.status.value == "queued"
    assert [m.id for m in saved.members] == [seeded["fpn_run"], seeded["linknet_run"]]
    # its members have no test predictions yet: those are queued first
    from worker.services import jobs

    with ui.scope() as s:
        job = jobs.get_job(s, job_id=published[-1]["job_ids"][0])
    assert job.kind.value == "predict" and job.target["run_ids"] == [seeded["fpn_run"], seeded["linknet_run"]]
    assert job.target.get("ensemble_id") == saved.id  # a failed prediction fails the ensemble too
    # it is a leaderboard row with its lineage
    from worker.services import leaderboard

    with ui.scope() as s:
        row = [r for r in leaderboard.leaderboard(s, dataset_id=seeded["dataset"]) if r.name == "fpn+linknet"][0]
    assert row.parent == f"run:{seeded['fpn_run']}, run:{seeded['linknet_run']}"


def ui_store(ui, run_id):
    from worker.services import runs

    with ui.scope() as s:
        return runs.get_run(s, run_id=run_id).val_store


def test_greedy_weight_search(seeded, ui):
    at = ui.open_page("ensemble_builder", actor=seeded["ada"])
    _pick(at, [f"run:{seeded['fpn_run']}", f"run:{seeded['linknet_run']}"])
    next(s for s in at.selectbox if s.label == "Weight search").set_value("greedy").run()
    _score(at)
    ui.no_exceptions(at)
    table = next(t.value for t in at.dataframe if "recorded score" in t.value.columns)
    assert abs(table["weight"].iloc[:2].sum() - 1.0) < 1e-6
    assert any("Weight search (greedy)" in c.value for c in at.caption)


def test_members_over_different_images_get_a_clear_message(seeded, ui):
    at = ui.open_page("ensemble_builder", actor=seeded["ada"])
    _pick(at, [f"run:{seeded['fold_runs'][0]}", f"run:{seeded['fpn_run']}"])
    _score(at)
    ui.no_exceptions(at)
    assert any("covers other images" in e.value for e in at.error)


def test_saved_ensemble_view(seeded, ui):
    at = ui.open_page("ensemble_builder", actor=seeded["ada"], ensemble=seeded["ensemble"])
    ui.no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Validation miou"] == "0.8000" and metrics["Members"] == "2"


def test_a_failed_ensemble_shows_its_jobs_error(seeded, ui):
    from worker.db.models import Ensemble, RunStatus

    with ui.scope() as s:
        ens = s.get(Ensemble, seeded["ensemble"])
        before = (ens.status, ens.error_message)
        ens.status, ens.error_message = RunStatus.FAILED, "job 12 (ensemble) failed: member run 3 has no test store"
    try:
        at = ui.open_page("ensemble_builder", actor=seeded["ada"], ensemble=seeded["ensemble"])
        ui.no_exceptions(at)
        assert any("failed: job 12 (ensemble) failed: member run 3 has no test store" in e.value for e in at.error)
    finally:
        with ui.scope() as s:
            ens = s.get(Ensemble, seeded["ensemble"])
            ens.status, ens.error_message = before


def test_fold_runs_of_one_group_are_explained_before_scoring(seeded, ui):
    at = ui.open_page("ensemble_builder", actor=seeded["ada"])
    _pick(at, [f"run:{r}" for r in seeded["fold_runs"]])
    _score(at)
    ui.no_exceptions(at)
    message = next(e.value for e in at.error)
    assert f"are folds of group {seeded['fold_group']}" in message and f"pick group {seeded['fold_group']}" in message


def test_a_selection_from_the_leaderboard_opens_on_its_dataset(seeded, ui, tmp_path):
    from segcore.data.synthetic import make_synthetic_coco
    from webapp import state
    from worker.services import datasets

    other = make_synthetic_coco(tmp_path / "datasets" / "aaa", num_images=4, num_classes=3, size=32)
    with ui.scope() as s:  # listed first, so a builder that forgot the selection would open on it
        datasets.register_dataset(s, actor=seeded["ada"], name="aaa-first", source=other,
                                  classes=["background", "class_1", "class_2", "class_3"], check_pixels=False)
    at = ui.app()
    at.session_state[state.ACTOR] = seeded["ada"]
    at.run()
    at.session_state[state.ENSEMBLE_MEMBERS] = [{"kind": "group", "id": seeded["fold_group"]},
                                                {"kind": "run", "id": seeded["fpn_run"]}]
    at.switch_page("app_pages/ensemble_builder.py").run()
    ui.no_exceptions(at)
    assert next(s for s in at.selectbox if s.label == "Dataset").value == seeded["dataset"]
    picked = next(m for m in at.multiselect if m.label.startswith("Members")).value
    assert picked == [f"group:{seeded['fold_group']}", f"run:{seeded['fpn_run']}"]
