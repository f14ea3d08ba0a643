"""Sweeps: multi-axis grids and their run count, Optuna searches stored in the platform's database and
driven by run ends, the sweep's migration, and ``segboard sweep``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from worker.db import migrate
from worker.db._sweeps import OPTUNA_TABLES
from worker.db.models import AuditEvent, Experiment, Run, RunStatus, Sweep, SweepTrial
from worker.db.session import make_engine
from worker.errors import ConfigError, InvalidInput, PermissionDenied
from worker.schemas import ExpansionRead, GridSpec
from worker.services import experiments, lifecycle, members, sweeps

SPACE = {"optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "loss": ["ce", "0.5*ce + 0.5*dice"]}


@pytest.fixture
def actor(any_session) -> int:
    return members.create_member(any_session, actor=None, name="alice").id


def _spec(config: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"name": "lr-search", "config": config, "search": SPACE, "budget": 4, "parallelism": 2,
            "sampler": "random", **kw}


def _end(session, run_id: int, *, miou: float | None = None, fail: bool = False, cancel: bool = False) -> None:
    """End a run the way a worker (or a person cancelling it) does, through the lifecycle."""
    if cancel:
        lifecycle.request_cancel(session, run_id=run_id, actor=None)
        return
    token = lifecycle.claim_run(session, run_id=run_id, worker_name="box/cpu", device="cpu", lease_s=60)
    assert token is not None
    if fail:
        assert lifecycle.fail_run(session, token=token, error_message="out of memory")
    else:
        assert lifecycle.finish_run(session, token=token, best_metrics={"miou": miou or 0.0}, monitor="miou",
                                    checkpoint_dir=None, val_store=None, dataset_fingerprint=None)


def _queued(session, sweep_id: int) -> list[int]:
    return list(session.scalars(
        sa.select(Run.id).join(SweepTrial, SweepTrial.run_id == Run.id)
        .where(SweepTrial.sweep_id == sweep_id, Run.status == RunStatus.QUEUED).order_by(Run.id)))


def _url(session) -> str:
    return session.get_bind().url.render_as_string(hide_password=False)


# ------------------------------------------------------------------ grids of several axes


def test_several_axes_make_the_full_grid_and_the_count_is_known_first(any_session, actor, config_dict):
    grid = {"axes": [{"path": "loss", "values": ["ce", "dice"]},
                     {"path": "model.encoder", "values": ["resnet18", "resnet34", "efficientnet-b0"]}]}
    plan = experiments.plan_expansion(n_folds=2, seeds=[0, 1], grid=grid)
    assert (plan.runs, plan.groups, plan.n_folds, plan.n_seeds, plan.problem) == (24, 6, 2, 2, None)
    exp = experiments.create_experiment(any_session, actor=actor, config=config_dict, grid=grid, seeds=[0, 1])
    assert len(exp.groups) == 6 and len(exp.run_ids) == experiments.plan_expansion(seeds=[0, 1], grid=grid).runs
    assert exp.groups[0].label == "loss=ce, model.encoder=resnet18 1 fold x 2 seeds"
    assert exp.groups[0].axis_value == {"loss": "ce", "model.encoder": "resnet18"}
    assert [a.path for a in exp.expansion.axes] == ["loss", "model.encoder"]
    assert exp.expansion.axis == "loss x model.encoder"
    for g in exp.groups:
        for rid in g.run_ids:
            cfg = any_session.get(Run, rid).config
            assert cfg["model"]["encoder"] == g.axis_value["model.encoder"]
            assert [t["name"] for t in cfg["loss"]["terms"]] == [g.axis_value["loss"]]
    again = experiments.get_experiment(any_session, experiment_id=exp.id)
    assert again.expansion.axes == exp.expansion.axes


def test_a_grid_past_the_run_cap_is_refused_and_its_count_says_why(any_session, actor, config_dict):
    grid = {"axes": [{"path": "optimizer.lr", "values": [1e-3, 1e-4, 1e-5, 1e-6]},
                     {"path": "training.epochs", "values": list(range(1, 9))},
                     {"path": "training.batch_size", "values": list(range(1, 9))}]}
    plan = experiments.plan_expansion(grid=grid)
    assert plan.runs == 256 and plan.problem is None
    plan = experiments.plan_expansion(grid=grid, seeds=[0, 1])
    assert plan.runs == 512 and "more than 256" in plan.problem
    with pytest.raises(InvalidInput):
        experiments.create_experiment(any_session, actor=actor, config=config_dict, grid=grid, seeds=[0, 1])
    with pytest.raises(ConfigError, match="grid combination loss=nope, model.encoder=resnet18"):
        experiments.create_experiment(any_session, actor=actor, config=config_dict, grid={"axes": [
            {"path": "loss", "values": ["ce", "nope"]}, {"path": "model.encoder", "values": ["resnet18"]}]})
    with pytest.raises(InvalidInput, match="grid axes must differ"):
        experiments.plan_expansion(grid={"axes": [{"path": "loss", "values": ["ce"]},
                                                  {"path": "loss", "values": ["dice"]}]})


def test_one_axis_grids_keep_their_stored_form(any_session, actor, config_dict):
    assert GridSpec(axis="loss", values=["ce"]) == GridSpec(axes=[{"path": "loss", "values": ["ce"]}])
    exp = experiments.create_experiment(any_session, actor=actor, config=config_dict,
                                        grid={"axis": "loss", "values": ["ce", "dice"]})
    stored = any_session.get(Experiment, exp.id).expansion
    assert stored["axis"] == "loss" and stored["values"] == ["ce", "dice"]
    assert [g.axis_value for g in exp.groups] == ["ce", "dice"] and exp.groups[0].label == "loss=ce"
    # an expansion stored before grids had several axes reads with its one axis
    old = ExpansionRead.model_validate({"kind": "grid", "n_folds": 1, "seeds": [0], "axis": "loss", "values": ["ce"]})
    assert [(a.path, a.values) for a in old.axes] == [("loss", ["ce"])]


def test_a_grid_experiment_is_shown_as_axis_values_against_the_score(any_session, actor, config_dict):
    grid = {"axes": [{"path": "loss", "values": ["ce", "dice"]}, {"path": "optimizer.lr", "values": [1e-3, 1e-4]}]}
    exp = experiments.create_experiment(any_session, actor=actor, config=config_dict, grid=grid)
    for i, rid in enumerate(exp.run_ids):
        _end(any_session, rid, miou=0.5 + i / 10)
    view = sweeps.grid_view(any_session, experiment_id=exp.id)
    assert view.kind == "grid" and view.params == ["loss", "optimizer.lr"] and view.metric == "miou"
    assert [(p.params, p.score, p.status) for p in view.points][-1] == (
        {"loss": "dice", "optimizer.lr": 1e-4}, pytest.approx(0.8), "succeeded")
    assert [e.id for e in sweeps.list_grid_experiments(any_session)] == [exp.id]


# ------------------------------------------------------------------ searches with a budget


def test_a_sweep_asks_and_tells_its_study_in_the_platform_database(any_session, actor, config_dict):
    import optuna

    sweep = sweeps.create_sweep(any_session, actor=actor, spec=_spec(config_dict))
    any_session.commit()
    assert len(sweep.queued_run_ids) == 2 and sweep.status.value == "running" and sweep.direction == "maximize"
    first, second = sweep.queued_run_ids
    for trial in sweeps.get_sweep(any_session, sweep_id=sweep.id).trials:
        cfg = any_session.get(Run, trial.run_id).config
        assert cfg["optimizer"]["lr"] == pytest.approx(trial.params["optimizer.lr"])
        assert 1e-4 <= trial.params["optimizer.lr"] <= 1e-2 and trial.params["loss"] in SPACE["loss"]
        assert cfg["evaluation"]["monitor"] == "miou" and cfg["training"]["seed"] == 0

    _end(any_session, first, miou=0.6)
    any_session.commit()
    now = sweeps.get_sweep(any_session, sweep_id=sweep.id)
    assert [(t.number, t.state, t.value) for t in now.trials][:1] == [(0, "complete", 0.6)]
    assert len(now.trials) == 3 and len(_queued(any_session, sweep.id)) == 2  # one ended, one more queued
    _end(any_session, second, fail=True)
    any_session.commit()
    third, fourth = _queued(any_session, sweep.id)
    assert len(sweeps.get_sweep(any_session, sweep_id=sweep.id).trials) == 4
    _end(any_session, third, miou=0.7)
    _end(any_session, fourth, cancel=True)
    any_session.commit()

    done = sweeps.get_sweep(any_session, sweep_id=sweep.id)
    assert [t.state for t in done.trials] == ["complete", "failed", "complete", "cancelled"]
    assert done.status.value == "finished" and done.finished_at is not None
    assert (done.best_value, done.best_trial) == (pytest.approx(0.7), 2) and not _queued(any_session, sweep.id)
    # the study lives in the test database: Optuna's own storage on the same URL reads it back
    storage = optuna.storages.RDBStorage(_url(any_session), skip_compatibility_check=True)
    try:
        study = optuna.load_study(study_name=done.study_name, storage=storage)
        assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "FAIL"]
        assert study.best_value == pytest.approx(0.7) and study.best_trial.number == 2
        assert study.trials[0].params == done.trials[0].params
    finally:
        storage.engine.dispose()
    actions = set(any_session.scalars(sa.select(AuditEvent.action).where(AuditEvent.object_kind == "sweep")))
    assert actions == {"sweep.create", "sweep.finish"}


def test_settling_a_trial_twice_does_nothing(any_session, actor, config_dict):
    sweep = sweeps.create_sweep(any_session, actor=actor, spec=_spec(config_dict, budget=3, parallelism=1))
    (first,) = sweep.queued_run_ids
    _end(any_session, first, miou=0.5)
    after = sweeps.get_sweep(any_session, sweep_id=sweep.id)
    assert len(after.trials) == 2
    assert sweeps.settle_trial(any_session, run_id=first) == []  # the lifecycle calls it again: no-op
    lifecycle.request_cancel(any_session, run_id=after.trials[1].run_id, actor=None)
    lifecycle.requeue(any_session, run_id=after.trials[1].run_id, actor=None)  # a requeued trial run...
    assert sweeps.settle_trial(any_session, run_id=after.trials[1].run_id) == []  # ...was told once already
    again = sweeps.get_sweep(any_session, sweep_id=sweep.id)
    assert [(t.number, t.state, t.value) for t in again.trials][:2] == [(0, "complete", 0.5), (1, "cancelled", None)]
    assert len(again.trials) == 3
    other = experiments.create_experiment(any_session, actor=actor, config=config_dict)
    assert sweeps.settle_trial(any_session, run_id=other.run_ids[0]) == []  # not a sweep's run


def test_the_budget_bounds_the_trials(any_session, actor, config_dict):
    sweep = sweeps.create_sweep(any_session, actor=actor, spec=_spec(config_dict, budget=3, parallelism=5,
                                                                       sampler="tpe"))
    assert len(sweep.queued_run_ids) == 3
    for i, rid in enumerate(sweep.queued_run_ids):
        _end(any_session, rid, miou=0.4 + i / 10)
    done = sweeps.advance_sweep(any_session, actor=actor, sweep_id=sweep.id)
    assert done.queued_run_ids == [] and len(done.trials) == 3 and done.status.value == "finished"
    assert any_session.scalar(sa.select(sa.func.count()).select_from(Experiment)) == 3


def test_two_sweeps_of_one_name_get_trial_experiments_of_their_own(any_session, actor, config_dict):
    first = sweeps.create_sweep(any_session, actor=actor, spec=_spec(config_dict, budget=1, parallelism=1))
    second = sweeps.create_sweep(any_session, actor=actor, spec=_spec(config_dict, budget=1, parallelism=1))
    assert first.name == second.name and len(first.queued_run_ids) == len(second.queued_run_ids) == 1
    names = any_session.scalars(sa.select(Experiment.name).order_by(Experiment.id)).all()
    assert names == [f"{first.name}-t0", f"{first.name}-t0-2"]  # experiment names are unique


def test_a_search_value_that_breaks_the_config_is_refused_first(any_session, actor, config_dict):
    bad = _spec(config_dict, search={"model.encoder": ["resnet18", "resnet_999"]})
    with pytest.raises(ConfigError, match=r"search value 'resnet_999' for model.encoder"):
        sweeps.create_sweep(any_session, actor=actor, spec=bad)
    with pytest.raises(InvalidInput, match="log-scale range needs low > 0"):
        sweeps.create_sweep(any_session, actor=actor, spec=_spec(config_dict, search={
            "optimizer.lr": {"low": 0, "high": 1, "log": True}}))
    assert any_session.scalar(sa.select(sa.func.count()).select_from(Sweep)) == 0


def test_viewers_cannot_create_sweeps_and_trials_count_against_the_run_limit(session, config_dict, monkeypatch):
    admin = members.create_member(session, actor=None, name="ada").id
    alice = members.create_member(session, actor=admin, name="alice", role="member").id
    vic = members.create_member(session, actor=admin, name="vic", role="viewer").id
    with pytest.raises(PermissionDenied, match="viewers cannot"):
        sweeps.create_sweep(session, actor=vic, spec=_spec(config_dict))
    monkeypatch.setenv("SEGBOARD_MAX_ACTIVE_RUNS_PER_MEMBER", "2")
    other = experiments.create_experiment(session, actor=alice, config=config_dict)
    with pytest.raises(PermissionDenied, match="limit per member is 2"):
        sweeps.create_sweep(session, actor=alice, spec=_spec(config_dict))  # two trials + the other run
    sweep = sweeps.create_sweep(session, actor=alice, spec=_spec(config_dict, parallelism=1))
    with pytest.raises(PermissionDenied, match="only its owner or an admin"):
        sweeps.cancel_sweep(session, actor=members.create_member(session, actor=admin, name="bob").id,
                            sweep_id=sweep.id)
    monkeypatch.setenv("SEGBOARD_MAX_ACTIVE_RUNS_PER_MEMBER", "1")
    _end(session, sweep.queued_run_ids[0], miou=0.5)  # alice still has the other run: the next trial waits
    waiting = sweeps.get_sweep(session, sweep_id=sweep.id)
    assert len(waiting.trials) == 1 and "waiting to queue trial 2" in waiting.message
    _end(session, other.run_ids[0], fail=True)
    resumed = sweeps.advance_sweep(session, actor=alice, sweep_id=sweep.id)
    assert len(resumed.queued_run_ids) == 1 and resumed.message == ""
    cancelled = sweeps.cancel_sweep(session, actor=alice, sweep_id=sweep.id)
    assert cancelled.status.value == "cancelled" and [t.state for t in cancelled.trials] == ["complete", "cancelled"]
    assert sweeps.advance_sweep(session, actor=alice, sweep_id=sweep.id).queued_run_ids == []


def test_a_deleted_trial_experiment_leaves_the_trial_told_failed(session, config_dict):
    alice = members.create_member(session, actor=None, name="alice").id
    sweep = sweeps.create_sweep(session, actor=alice, spec=_spec(config_dict, budget=2, parallelism=1))
    trial = sweeps.get_sweep(session, sweep_id=sweep.id).trials[0]
    experiments.delete_experiment(session, actor=alice, experiment_id=trial.experiment_id)
    after = sweeps.advance_sweep(session, actor=alice, sweep_id=sweep.id)
    assert after.trials[0].state == "failed" and "deleted" in after.trials[0].message
    assert len(after.queued_run_ids) == 1 and len(after.trials) == 2


# ------------------------------------------------------------------ tables and migration


def test_optuna_tables_are_the_ones_optuna_creates():
    from optuna.storages._rdb import models

    assert set(models.BaseModel.metadata.tables) == set(OPTUNA_TABLES)


def test_optuna_tables_stay_out_of_the_schema_comparison(sqlite_engine, config_dict):
    from worker.db.session import make_session_factory

    with make_session_factory(sqlite_engine)() as s:
        alice = members.create_member(s, actor=None, name="alice").id
        sweeps.create_sweep(s, actor=alice, spec=_spec(config_dict))
        s.commit()
    assert OPTUNA_TABLES <= set(sa.inspect(sqlite_engine).get_table_names())
    ours = OPTUNA_TABLES | {"sweeps", "sweep_trials"}
    assert [d for d in migrate.schema_differences(sqlite_engine) if any(f"'{t}'" in repr(d) for t in ours)] == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0004_upgrades_from_0003_and_downgrades(backend, request, tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}" if backend == "sqlite" else request.getfixturevalue("pg_database")("m4")
    migrate.upgrade(url, "0003")
    engine = make_engine(url)
    try:
        assert not {"sweeps", "sweep_trials"} & set(sa.inspect(engine).get_table_names())
        migrate.upgrade(url, "0004")
        inspector = sa.inspect(engine)
        assert {"sweeps", "sweep_trials"} <= set(inspector.get_table_names())
        assert {c["name"] for c in inspector.get_columns("sweep_trials")} >= {
            "sweep_id", "trial_number", "params", "experiment_id", "run_id", "state", "value"}
        assert migrate.current(url) == "0004"
        migrate.downgrade(url, "0003")
        assert not {"sweeps", "sweep_trials"} & set(sa.inspect(engine).get_table_names())
        assert migrate.current(url) == "0003"
    finally:
        engine.dispose()


# ------------------------------------------------------------------ segboard sweep


def test_segboard_sweep_create_list_show(tmp_path: Path, monkeypatch, capsys, config_dict, seed):
    from worker.cli import main
    from worker.db.session import make_session_factory, session_scope

    from .queue_fixtures import child_env, make_settings

    settings = make_settings(tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'cli.db'}", redis_url=None)
    for key, value in child_env(settings).items():
        if key.startswith("SEGBOARD_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("SEGBOARD_REDIS_URL", raising=False)
    assert main(["db", "upgrade"]) == 0
    engine = make_engine(settings)
    with session_scope(make_session_factory(engine)) as s:
        seed.add_dataset(s, name="camvid")
    engine.dispose()
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(config_dict))
    spec = {"name": "cli-search", "dataset": "camvid", "config": "base.yaml", "budget": 3, "parallelism": 2,
            "sampler": "random", "search": {"optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["sweep", "create", str(tmp_path / "spec.yaml")]) == 0
    out = capsys.readouterr().out
    assert "sweep 1 (cli-search)" in out and "queued runs 1, 2" in out
    assert main(["sweep", "list"]) == 0
    out = capsys.readouterr().out
    assert "cli-search" in out and "running" in out and "0/3" in out
    assert main(["sweep", "show", "1"]) == 0
    out = capsys.readouterr().out
    assert "optimizer.lr" in out and "trial" in out and "Optuna study segboard-sweep-1-" in out
    assert main(["sweep", "show", "9"]) == 2
    assert "sweep 9 does not exist" in capsys.readouterr().err


def test_a_finished_sweep_notifies_its_owners_hooks(any_session, actor, config_dict):
    from worker.db.models import NotificationDelivery
    from worker.services import notifications

    notifications.add_hook(any_session, actor=actor, url="https://hooks.example.org/T000/B000/XXXX",
                           payload_format="slack", member_id=actor)
    sweep = sweeps.create_sweep(any_session, actor=actor, spec=_spec(config_dict, budget=2, parallelism=2))
    for i, rid in enumerate(sweep.queued_run_ids):
        _end(any_session, rid, miou=0.5 + i / 10)
    done = sweeps.advance_sweep(any_session, actor=actor, sweep_id=sweep.id)
    assert done.status.value == "finished"
    rows = any_session.scalars(sa.select(NotificationDelivery)
                               .where(NotificationDelivery.object_kind == "sweep")).all()
    assert len(rows) == 1 and rows[0].object_id == sweep.id
    assert "best miou 0.6000" in rows[0].text
