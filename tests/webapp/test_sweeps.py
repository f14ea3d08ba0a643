"""Sweeps page: a search and a grid shown as one object (table, parallel coordinates, overlaid curves),
a sweep created from the page, and the run count of a multi-axis grid on the New experiment page."""

from __future__ import annotations

from typing import Any


def _sweep(ui, seeded, **kw: Any) -> Any:
    from worker.services import sweeps

    spec = {"name": "lr-search", "config": ui.config_dict(seeded["source"]), "dataset_id": seeded["dataset"],
            "search": {"optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                       "model.encoder": ["resnet18", "resnet34"]},
            "budget": 3, "parallelism": 2, "sampler": "random", **kw}
    with ui.scope() as s:
        return sweeps.create_sweep(s, actor=seeded["ada"], spec=spec)


def _charts(at) -> list[Any]:
    return list(at.get("plotly_chart"))


def test_a_sweep_shows_values_against_the_score_with_plot_and_curves(seeded, ui):
    sweep = _sweep(ui, seeded)
    first, second = sweep.queued_run_ids
    ui.finish(first, 0.71)
    ui.finish(second, 0.64)
    at = ui.open_page("sweeps", actor=seeded["ada"], sweep=sweep.id)
    ui.no_exceptions(at)
    table = next(t.value for t in at.dataframe if "optimizer.lr" in t.value.columns)
    assert list(table.columns) == ["", "optimizer.lr", "model.encoder", "miou", "status", "runs"]
    assert len(table) == 3  # two ended trials asked for the third
    assert sorted(table["miou"].dropna().round(2)) == [0.64, 0.71]
    assert set(table["status"]) >= {"complete"}
    assert len(_charts(at)) == 2  # parallel coordinates, overlaid validation curves
    assert any("Trials ended" == m.label for m in at.metric)


def test_a_grid_experiment_is_shown_the_same_way(seeded, ui):
    from worker.services import experiments

    grid = {"axes": [{"path": "loss", "values": ["ce", "dice"]}, {"path": "model.encoder", "values": ["resnet18"]}]}
    with ui.scope() as s:
        exp = experiments.create_experiment(s, actor=seeded["ada"], name="loss-grid", grid=grid,
                                            config=ui.config_dict(seeded["source"]), dataset_id=seeded["dataset"])
    for i, rid in enumerate(exp.run_ids):
        ui.finish(rid, 0.6 + i / 10)
    at = ui.open_page("sweeps", actor=seeded["ada"], grid=exp.id)
    ui.no_exceptions(at)
    table = next(t.value for t in at.dataframe if "loss" in t.value.columns)
    assert list(table["loss"]) == ["ce", "dice"] and list(table["model.encoder"]) == ["resnet18", "resnet18"]
    assert list(table["miou"].round(2)) == [0.6, 0.7]
    assert len(_charts(at)) == 2


def test_a_sweep_is_created_from_the_page(seeded, ui, published):
    at = ui.open_page("sweeps", actor=seeded["bob"])
    ui.no_exceptions(at)
    next(b for b in at.button if b.label == "Create the sweep").click().run()
    ui.no_exceptions(at)
    from worker.services import sweeps

    with ui.scope() as s:
        made = sweeps.list_sweeps(s)
    assert len(made) == 1 and made[0].owner_id == seeded["bob"] and made[0].budget == 8
    assert len(published[-1]["run_ids"]) == 2 and len(made[0].trials) == 2


def test_the_new_experiment_form_counts_the_runs_of_several_axes(seeded, ui, published):
    at = ui.open_page("new_experiment", actor=seeded["ada"])
    next(t for t in at.toggle if t.label.startswith("Ablation grid")).set_value(True).run()
    next(n for n in at.number_input if n.label == "Axes").set_value(2).run()
    next(s for s in at.selectbox if s.label == "Axis").set_value("each loss").run()
    next(m for m in at.multiselect if m.label == "Values").set_value(["ce", "dice"]).run()
    next(s for s in at.selectbox if s.label == "Axis 2").set_value("each architecture").run()
    next(m for m in at.multiselect if m.label == "Values 2").set_value(["Unet", "FPN"]).run()
    ui.no_exceptions(at)
    assert any("This queues 4 run(s): 4 group(s)" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Queue 4 run(s)").click().run()
    ui.no_exceptions(at)
    from worker.services import experiments

    with ui.scope() as s:
        exp = experiments.get_experiment(s, experiment_id=experiments.list_experiments(s)[0].id)
    assert [g.label for g in exp.groups] == ["loss=ce, model.arch=Unet", "loss=ce, model.arch=FPN",
                                             "loss=dice, model.arch=Unet", "loss=dice, model.arch=FPN"]
    assert published[-1]["run_ids"] == exp.run_ids
