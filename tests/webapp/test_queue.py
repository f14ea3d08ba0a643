"""Queue page: runs by status, cancel, requeue, priority, the live fragment, a vanished worker."""

from __future__ import annotations

import datetime as dt
import json


def _runs_table(at):
    return next(t.value for t in at.dataframe if "attempt" in t.value.columns)


def test_queue_lists_running_and_live_panel(seeded, ui):
    at = ui.open_page("queue", actor=seeded["ada"])
    ui.no_exceptions(at)
    table = _runs_table(at)
    assert list(table["run"]) == ["live"]
    assert table["ETA"].iloc[0] == "40s"
    # the live fragment: progress with the ETA and the curves of the selected run
    assert any("ETA 40s" in p.proto.text for p in at.get("progress"))
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert any(tr["name"] == "train loss" for tr in specs[0]["data"])
    assert any("epoch 1 done" in c.value for c in at.code)


def test_cancel_then_requeue_with_priority(seeded, ui, published):
    at = ui.open_page("queue", actor=seeded["ada"])
    next(b for b in at.button if b.label == "Cancel").click().run()
    ui.no_exceptions(at)
    assert any("is being stopped" in s.value for s in at.success)
    assert "(cancelling)" in _runs_table(at)["status"].iloc[0]
    # a queued run: cancel is immediate, requeue puts it back and publishes it
    from worker.services import experiments

    with ui.scope() as s:
        exp = experiments.create_experiment(s, actor=seeded["ada"], name="q", config=ui.config_dict(seeded["source"]),
                                            dataset_id=seeded["dataset"])
    run_id = exp.run_ids[0]
    at = ui.open_page("queue", actor=seeded["ada"], run=run_id)
    next(n for n in at.number_input if n.label.startswith("Priority")).set_value(7)
    next(b for b in at.button if b.label == "Set priority").click().run()
    ui.no_exceptions(at)
    assert published[-1]["run_ids"] == [run_id]
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert any(f"Run {run_id} cancelled" in s.value for s in at.success)
    next(m for m in at.multiselect if m.label == "Status").set_value(["cancelled"]).run()
    next(s for s in at.selectbox if s.label == "Run").set_value(run_id).run()
    next(b for b in at.button if b.label == "Requeue").click().run()
    ui.no_exceptions(at)
    assert published[-1]["run_ids"] == [run_id]
    from worker.services import runs

    with ui.scope() as s:
        run = runs.get_run(s, run_id=run_id)
    assert run.status.value == "queued" and run.priority == 7 and run.attempt == 1
    from worker.services import audit

    with ui.scope() as s:
        events = audit.list_events(s, object_kind="run", object_id=run_id)
    assert events and all(e.actor_id == seeded["ada"] for e in events if e.action != "experiment.create")


def test_cancel_of_a_run_that_just_failed_says_so(seeded, ui):
    from worker.services import lifecycle

    at = ui.open_page("queue", actor=seeded["ada"])
    with ui.scope(clear=False) as s:  # a race: the run failed after the page read the (cached) queue
        lifecycle.fail_run(s, run_id=seeded["live_run"], error_message="CUDA out of memory")
    next(b for b in at.button if b.label == "Cancel").click().run()
    ui.no_exceptions(at)
    assert any("has already failed; there is nothing to cancel" in e.value for e in at.error)


def test_a_worker_that_disappeared_is_reported(seeded, ui):
    from worker.services import workers

    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
    with ui.scope() as s:
        workers.register_worker(s, name="box2/cuda:0", hostname="box2", devices=["cuda:0"])
    import sqlalchemy as sa

    with ui.scope() as s:
        s.execute(sa.text("UPDATE worker_nodes SET last_seen_at = :t"), {"t": old.replace(tzinfo=None)})
    at = ui.open_page("queue", actor=seeded["ada"])
    ui.no_exceptions(at)
    assert any("has not been seen for" in w.value and "live" in w.value for w in at.warning)


def test_broker_down_is_a_warning_not_a_traceback(seeded, ui, monkeypatch):
    from worker.queue import dispatch

    def down(*a, **k):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(dispatch, "publish", down)
    monkeypatch.setattr("webapp.resources._celery", lambda: object())
    with ui.scope() as s:
        from worker.services import lifecycle

        lifecycle.fail_run(s, run_id=seeded["live_run"], error_message="boom")
    at = ui.open_page("queue", actor=seeded["ada"], run=seeded["live_run"])
    next(m for m in at.multiselect if m.label == "Status").set_value(["failed"]).run()
    next(b for b in at.button if b.label == "Requeue").click().run()
    ui.no_exceptions(at)
    assert any("reaper" in w.value for w in at.warning)


def test_empty_queue(env, ui):
    at = ui.open_page("queue")
    ui.no_exceptions(at)
    assert any("The queue is empty" in i.value for i in at.info)


def test_a_queued_job_gets_a_new_priority_and_is_published_again(seeded, ui, published):
    from worker.services import jobs

    with ui.scope() as s:
        job = jobs.create_job(s, actor=seeded["ada"], kind="predict", target={"run_ids": [seeded["fpn_run"]]},
                              params={"split": "test"})
    at = ui.open_page("queue", actor=seeded["ada"])  # the job's owner (and the team's first member: an admin)
    next(s for s in at.selectbox if s.label == "Job").set_value(job.id).run()
    next(n for n in at.number_input if n.label.startswith("Job priority")).set_value(8)
    next(b for b in at.button if b.label == "Set job priority").click().run()
    ui.no_exceptions(at)
    assert published[-1]["job_ids"] == [job.id]
    assert any(f"Job {job.id} now has priority 8" in s.value for s in at.success)
    with ui.scope() as s:
        assert jobs.get_job(s, job_id=job.id).priority == 8
        from worker.services import audit

        events = audit.list_events(s, object_kind="job", object_id=job.id, action="job.set_priority")
    assert [(e.actor_id, e.detail) for e in events] == [(seeded["ada"], {"from": 0, "to": 8})]


def test_failed_runs_show_their_error_in_the_table(seeded, ui):
    from worker.services import lifecycle

    with ui.scope() as s:
        lifecycle.fail_run(s, run_id=seeded["live_run"], error_message="CUDA out of memory\ntraceback line")
    at = ui.open_page("queue", actor=seeded["ada"])
    next(m for m in at.multiselect if m.label == "Status").set_value(["failed"]).run()
    ui.no_exceptions(at)
    table = next(df for df in at.dataframe if "error" in df.value.columns).value
    row = table[table["id"] == seeded["live_run"]].iloc[0]
    assert row["error"] == "CUDA out of memory" and row["status"] == "failed"


def test_the_progress_bar_moves_within_an_epoch(seeded, ui):
    from worker.db.models import Run
    from worker.services import lifecycle

    with ui.scope() as s:
        run = s.get(Run, seeded["live_run"])  # claimed by box2 in the fixture, after its first epoch
        token = lifecycle.ClaimToken(kind="run", object_id=run.id, worker_name=run.worker_name,
                                     claimed_at=run.claimed_at)
    at = ui.open_page("queue", actor=seeded["ada"], run=seeded["live_run"])
    before = next(p.value for p in at.get("progress"))
    with ui.scope() as s:
        assert lifecycle.record_progress(s, token=token, current_epoch=1, epoch_progress=0.5)
    at.run()
    ui.no_exceptions(at)
    bar = next(p for p in at.get("progress"))
    assert bar.value > before
