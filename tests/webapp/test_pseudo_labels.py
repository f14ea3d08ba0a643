"""Pseudo-label rounds: preview from the teacher's stored test predictions, create, students, lineage."""

from __future__ import annotations

import json


def _teacher(at, key):
    next(s for s in at.selectbox if s.label.startswith("Teacher")).set_value(key).run()
    return at


def test_preview_then_create_round(seeded, ui, published):
    at = ui.open_page("pseudo_labels", actor=seeded["ada"])
    ui.no_exceptions(at)
    _teacher(at, f"ensemble:{seeded['ensemble']}")
    next(s for s in at.slider if s.label == "Pixel threshold").set_value(0.6)
    next(s for s in at.slider if s.label == "Image threshold").set_value(0.5)
    next(b for b in at.button if b.label == "Preview the round").click().run(timeout=120)
    ui.no_exceptions(at)
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Images kept"]) + int(metrics["Images dropped"]) == 3
    decisions = next(t.value for t in at.dataframe if "reason" in t.value.columns)
    assert len(decisions) == 3
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                 if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Pseudo-labelled pixels"))
    assert chart["data"][0]["x"] == ui.CLASSES
    if int(metrics["Images kept"]):
        assert any("(pseudo-labels)" in c for img in at.image for c in img.captions)
    from worker.services import pseudo

    with ui.scope() as s:
        assert pseudo.list_pseudo_rounds(s) == []  # nothing created by the preview
    next(t for t in at.text_input if t.label == "Round name").input("round 1")
    next(b for b in at.button if b.label == "Create the round").click().run()
    ui.no_exceptions(at)
    with ui.scope() as s:
        (rnd,) = pseudo.list_pseudo_rounds(s)
    assert rnd.teacher_kind.value == "ensemble" and rnd.params["pixel_threshold"] == 0.6
    assert rnd.report["kept"] == int(metrics["Images kept"])
    assert published[-1]["job_ids"]


def test_teacher_without_test_predictions_is_explained(seeded, ui):
    at = ui.open_page("pseudo_labels", actor=seeded["ada"])
    _teacher(at, f"run:{seeded['fpn_run']}")
    next(b for b in at.button if b.label == "Preview the round").click().run()
    ui.no_exceptions(at)
    assert any("has no stored test predictions yet" in e.value for e in at.error)


def test_students_and_lineage(seeded, ui, published):
    from worker.services import pseudo

    with ui.scope() as s:
        r1 = pseudo.create_pseudo_round(s, actor=seeded["ada"], name="r1", teacher_kind="ensemble",
                                        teacher_id=seeded["ensemble"], params={"pixel_threshold": 0.9},
                                        report={"kept": 3})
        pseudo.set_pseudo_round_result(s, actor=None, round_id=r1.id, status="succeeded",
                                       dataset_id=seeded["dataset"])
        pseudo.create_pseudo_round(s, actor=seeded["ada"], name="r2", teacher_kind="run",
                                   teacher_id=seeded["fpn_run"], params={}, parent_round_id=r1.id)
    at = ui.open_page("pseudo_labels", actor=seeded["ada"])
    next(n for n in at.number_input if n.label == "Config of run").set_value(seeded["fpn_run"]).run()
    next(b for b in at.button if b.label == "Start student runs").click().run()
    ui.no_exceptions(at)
    assert any("student run(s) queued" in s.value for s in at.success)
    from worker.services import runs

    run_id = published[-1]["run_ids"][0]
    with ui.scope() as s:
        student = runs.get_run(s, run_id=run_id)
    assert student.pseudo_round_id == r1.id and student.config["data"]["pseudo_labels"]
    next(b for b in at.button if b.label == "Start student runs").click().run()  # again: a second experiment
    ui.no_exceptions(at)
    assert not at.error and len(published[-1]["run_ids"]) == 1 and published[-1]["run_ids"] != [run_id]
    rounds = next(t.value for t in at.dataframe if "after round" in t.value.columns)
    assert list(rounds["name"]) == ["r1", "r2"] and rounds["students"].iloc[0] == 2
    chart = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                 if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Best student per round"))
    assert chart["data"][0]["x"] == [f"round {r1.id}", f"round {r1.id + 1}"]


def test_a_failed_round_shows_its_jobs_error(seeded, ui):
    from worker.db.models import PseudoRound, RunStatus
    from worker.services import pseudo

    with ui.scope() as s:
        r = pseudo.create_pseudo_round(s, actor=seeded["ada"], name="broken", teacher_kind="run",
                                       teacher_id=seeded["fpn_run"], params={})
        row = s.get(PseudoRound, r.id)
        row.status, row.error_message = RunStatus.FAILED, "job 9 (pseudo) failed: the teacher has no test store"
    try:
        at = ui.open_page("pseudo_labels", actor=seeded["ada"])
        ui.no_exceptions(at)
        assert any(f"Round {r.id} (broken) failed: job 9 (pseudo) failed" in e.value for e in at.error)
    finally:
        with ui.scope() as s:
            s.delete(s.get(PseudoRound, r.id))


def test_a_round_offers_its_students_as_soon_as_its_job_wrote_the_dataset(seeded, ui):
    from worker.services import pseudo

    with ui.scope() as s:
        r1 = pseudo.create_pseudo_round(s, actor=seeded["ada"], name="r1", teacher_kind="ensemble",
                                        teacher_id=seeded["ensemble"], params={"pixel_threshold": 0.9})
    at = ui.open_page("pseudo_labels", actor=seeded["ada"])
    assert any("once a round's job has written" in c.value for c in at.caption)
    with ui.scope(clear=False) as s:  # the job, in a worker: the dashboard's caches know nothing of it
        pseudo.set_pseudo_round_result(s, actor=None, round_id=r1.id, status="succeeded",
                                       dataset_id=seeded["dataset"])
    at.run()
    ui.no_exceptions(at)
    assert any(b.label == "Start student runs" for b in at.button)
