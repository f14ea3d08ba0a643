"""create_experiment: validation before anything is written, folds x seeds and grid expansion."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import yaml

from segcore.errors import ConfigError
from worker.db.models import AuditEvent, EpochMetric, Experiment, Run, RunGroup, RunStatus, Submission
from worker.errors import Conflict, InvalidInput, NotFound
from worker.services import experiments, members, runs, submissions


def _counts(session) -> tuple[int, ...]:
    return tuple(
        session.scalar(sa.select(sa.func.count()).select_from(m)) for m in (Experiment, RunGroup, Run, AuditEvent)
    )


@pytest.fixture
def actor(any_session) -> int:
    return members.create_member(any_session, actor=None, name="alice").id


def test_invalid_config_is_rejected_with_the_field_named_and_nothing_written(any_session, actor, config_dict):
    before = _counts(any_session)
    config_dict["model"]["encoder"] = "resnet_999"
    with pytest.raises(ConfigError, match=r"model\.encoder: unknown encoder 'resnet_999'"):
        experiments.create_experiment(any_session, actor=actor, config=config_dict, n_folds=3)
    config_dict["model"]["encoder"] = "resnet18"
    config_dict["training"]["epochs"] = 0
    with pytest.raises(ConfigError, match=r"training\.epochs"):
        experiments.create_experiment(any_session, actor=actor, config=config_dict)
    any_session.flush()
    assert _counts(any_session) == before


def test_an_invalid_grid_value_names_the_axis_and_writes_nothing(any_session, actor, config_dict):
    before = _counts(any_session)
    grid = {"axis": "augmentation.preset", "values": ["basic", "no_such_preset"]}
    with pytest.raises(ConfigError, match=r"(?s)no_such_preset.*augmentation\.preset"):
        experiments.create_experiment(any_session, actor=actor, config=config_dict, grid=grid)
    any_session.flush()
    assert _counts(any_session) == before


def test_three_folds_times_two_seeds_is_six_queued_runs_in_one_group(any_session, actor, config_dict):
    exp = experiments.create_experiment(
        any_session, actor=actor, name="cv", config=config_dict, n_folds=3, seeds=(0, 1), priority=5, tags=["cv"]
    )
    assert len(exp.run_ids) == 6 and len(exp.groups) == 1
    group = exp.groups[0]
    assert group.kind.value == "folds_seeds" and group.label == "3 folds x 2 seeds"
    assert group.run_ids == exp.run_ids and group.status_counts == {"queued": 6}
    assert exp.expansion.kind.value == "folds_seeds" and exp.expansion.n_folds == 3 and exp.expansion.seeds == [0, 1]
    runs = any_session.scalars(sa.select(Run).order_by(Run.id)).all()
    assert {(r.fold, r.seed) for r in runs} == {(f, s) for f in range(3) for s in (0, 1)}
    for r in runs:
        assert r.status is RunStatus.QUEUED and r.queued_at is not None and r.priority == 5
        assert r.config["data"]["split"] == {
            "kind": "kfold", "n_folds": 3, "fold": r.fold, "seed": 0, "stratify": True, "group_key": None,
        }
        assert r.config["training"]["seed"] == r.seed
        assert r.owner_id == actor and r.tags == ["cv"] and r.arch == "Unet" and r.total_epochs == 3
    assert len({r.name for r in runs}) == 6
    event = any_session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "experiment.create")).one()
    assert event.actor_id == actor and event.object_id == exp.id and event.detail["run_ids"] == exp.run_ids


def test_a_grid_of_three_values_is_three_groups(any_session, actor, config_dict):
    exp = experiments.create_experiment(
        any_session, actor=actor, config=config_dict, n_folds=2,
        grid={"axis": "model.encoder", "values": ["resnet18", "resnet34", "efficientnet-b0"]},
    )
    assert len(exp.groups) == 3 and len(exp.run_ids) == 6
    assert [g.label for g in exp.groups] == [
        "model.encoder=resnet18 2 folds x 1 seed", "model.encoder=resnet34 2 folds x 1 seed",
        "model.encoder=efficientnet-b0 2 folds x 1 seed",
    ]
    assert [g.axis_value for g in exp.groups] == ["resnet18", "resnet34", "efficientnet-b0"]
    encoders = dict(any_session.execute(sa.select(Run.id, Run.encoder)).all())
    for g in exp.groups:
        assert {encoders[i] for i in g.run_ids} == {g.axis_value}


def test_a_loss_grid_takes_expressions(any_session, actor, config_dict):
    exp = experiments.create_experiment(
        any_session, actor=actor, config=config_dict, grid={"axis": "loss", "values": ["ce", "0.5*ce + 0.5*dice"]}
    )
    configs = [any_session.get(Run, i).config["loss"]["terms"] for i in exp.run_ids]
    assert [[t["name"] for t in terms] for terms in configs] == [["ce"], ["ce", "dice"]]
    assert exp.expansion.kind.value == "grid" and exp.expansion.axis == "loss"


def test_single_run_and_yaml_text(any_session, actor, config_dict):
    exp = experiments.create_experiment(any_session, actor=actor, config=yaml.safe_dump(config_dict))
    assert exp.name == "unet-r18" and len(exp.run_ids) == 1 and exp.groups[0].kind.value == "single"
    run = any_session.get(Run, exp.run_ids[0])
    assert run.fold is None and run.config["data"]["split"]["kind"] == "holdout"
    fetched = experiments.get_experiment(any_session, experiment_id=exp.id)
    assert fetched.run_ids == exp.run_ids and fetched.groups[0].run_ids == exp.run_ids
    assert [e.id for e in experiments.list_experiments(any_session)] == [exp.id]


def test_dataset_classes_must_match_and_its_fingerprint_is_pinned(any_session, actor, config_dict, seed):
    ds = seed.add_dataset(any_session, fingerprint="abc123")
    exp = experiments.create_experiment(any_session, actor=actor, config=config_dict, dataset_id=ds)
    run = any_session.get(Run, exp.run_ids[0])
    assert run.dataset_id == ds and run.dataset_fingerprint == "abc123"
    assert run.config["data"]["fingerprint"] == "abc123"
    other = seed.add_dataset(any_session, name="other", classes=["a", "b"])
    with pytest.raises(InvalidInput, match="classes"):
        experiments.create_experiment(any_session, actor=actor, config=config_dict, dataset_id=other)
    with pytest.raises(NotFound, match="dataset 999"):
        experiments.create_experiment(any_session, actor=actor, config=config_dict, dataset_id=999)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_folds": 25}, "n_folds"),
        ({"n_folds": 0}, "n_folds"),
        ({"seeds": ()}, "seeds"),
        ({"seeds": (1, 1)}, "repeat"),
        ({"grid": {"axis": "nonsense.field", "values": [1]}}, "grid axis"),
        ({"grid": {"axis": "model.encoder", "values": []}}, "grid must look like"),
        ({"priority": "high"}, "priority"),
        ({"priority": 10}, r"priority must be an integer from 0 \(lowest\) to 9 \(highest\), got 10"),
        ({"name": "  "}, "name"),
    ],
)
def test_malformed_arguments_are_refused(session, config_dict, kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        experiments.create_experiment(session, actor=None, config=config_dict, **kwargs)


def test_unknown_actor_is_refused(session, config_dict):
    with pytest.raises(NotFound, match="member 42"):
        experiments.create_experiment(session, actor=42, config=config_dict)


def test_existing_kfold_split_settings_are_kept(session, config_dict):
    config_dict["data"]["split"] = {"kind": "kfold", "n_folds": 5, "fold": 2, "seed": 7, "group_key": r"^(\w+)_"}
    single = experiments.create_experiment(session, actor=None, config=config_dict)
    assert session.get(Run, single.run_ids[0]).fold == 2
    exp = experiments.create_experiment(session, actor=None, config=config_dict, n_folds=4)
    split = session.get(Run, exp.run_ids[3]).config["data"]["split"]
    assert split["n_folds"] == 4 and split["fold"] == 3 and split["seed"] == 7 and split["group_key"] == r"^(\w+)_"


def test_delete_an_experiment_with_everything_below_it(any_session, actor, config_dict):
    keep = experiments.create_experiment(any_session, actor=actor, name="keep", config=config_dict)
    gone = experiments.create_experiment(any_session, actor=actor, name="gone", config=config_dict, n_folds=2)
    any_session.add(EpochMetric(run_id=gone.run_ids[0], epoch=1, train_loss=0.5))
    submissions.create_submission(any_session, actor=actor, run_id=gone.run_ids[0])
    clone = experiments.create_experiment(any_session, actor=actor, name="clone", config=config_dict,
                                          parent_run_id=gone.run_ids[0])
    any_session.get(Run, gone.run_ids[1]).status = RunStatus.RUNNING
    any_session.flush()
    with pytest.raises(Conflict, match="running"):
        experiments.delete_experiment(any_session, actor=actor, experiment_id=gone.id)
    any_session.get(Run, gone.run_ids[1]).status = RunStatus.CANCELLED
    any_session.flush()
    assert experiments.delete_experiment(any_session, actor=actor, experiment_id=gone.id) == gone.run_ids
    with pytest.raises(NotFound, match="run"):
        runs.get_run(any_session, run_id=gone.run_ids[0])
    with pytest.raises(NotFound, match="experiment"):
        experiments.get_experiment(any_session, experiment_id=gone.id)
    count = lambda m: any_session.scalar(sa.select(sa.func.count()).select_from(m))  # noqa: E731
    assert (count(Run), count(RunGroup), count(EpochMetric), count(Submission)) == (2, 2, 0, 0)
    assert runs.get_run(any_session, run_id=clone.run_ids[0]).parent_run_id is None
    assert runs.get_run(any_session, run_id=keep.run_ids[0]).status is RunStatus.QUEUED
    event = any_session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "experiment.delete")).one()
    assert event.detail["run_ids"] == gone.run_ids


def test_a_taken_name_is_refused_with_a_free_one_and_a_default_name_is_numbered(any_session, actor, config_dict):
    first = experiments.create_experiment(any_session, actor=actor, name="unet-r18", config=config_dict)
    before = _counts(any_session)
    with pytest.raises(Conflict, match=r"'unet-r18' exists already; choose another name, e.g. 'unet-r18-2'"):
        experiments.create_experiment(any_session, actor=actor, name=" unet-r18 ", config=config_dict)
    assert _counts(any_session) == before
    # no name given: the config's name, numbered past the taken ones
    config_dict["name"] = "unet-r18"
    second = experiments.create_experiment(any_session, actor=actor, config=config_dict)
    third = experiments.create_experiment(any_session, actor=actor, config=config_dict)
    assert (first.name, second.name, third.name) == ("unet-r18", "unet-r18-2", "unet-r18-3")
    assert any_session.get(Run, second.run_ids[0]).name.startswith("unet-r18-2")


def test_the_database_holds_experiment_names_unique(any_session, actor, config_dict):
    experiments.create_experiment(any_session, actor=actor, name="cv", config=config_dict)
    any_session.add(Experiment(name="cv", config={}, expansion={}))
    with pytest.raises(sa.exc.IntegrityError):
        any_session.flush()
