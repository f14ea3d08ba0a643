"""The data policy as the services show it: the form's crop preview and a run's data_policy.json."""

from __future__ import annotations

import copy

import pytest

from segcore.data.policy import DataPolicy
from worker.artifacts import Artifacts
from worker.db.models import Dataset, Run
from worker.errors import InvalidInput, NotFound, ServiceError
from worker.services import datasets, experiments, runs

# Stanford Background's mix: mostly 320x240, some 213 px short sides (docs/recipes.md: -> 128)
MIXED = {"320x240": 5, "213x320": 1, "320x213": 1}


def _cfg(config_dict, **data):
    cfg = copy.deepcopy(config_dict)
    cfg["data"].update(data)
    return cfg


@pytest.fixture
def dataset_id(session, seed) -> int:
    ds_id = seed.add_dataset(session)
    session.get(Dataset, ds_id).report = {"ok": True, "problems": [], "image_sizes": MIXED}
    session.flush()
    return ds_id


def test_preview_crop_auto_from_the_registration_report(session, dataset_id, config_dict):
    text = datasets.preview_crop(session, dataset_id=dataset_id, config=_cfg(config_dict, crop_size="auto"))
    assert text == "auto: 256x256 (median short side 240 px over 7 images, multiple of 32)"


def test_preview_crop_prefers_statistics_and_follows_image_size_and_model(session, dataset_id, config_dict):
    session.get(Dataset, dataset_id).statistics = {"image_sizes": {"512x512": 3}}
    session.flush()
    auto = _cfg(config_dict, crop_size="auto")
    assert datasets.preview_crop(session, dataset_id=dataset_id, config=auto).startswith("auto: 384x384 ")
    resized = _cfg(config_dict, crop_size="auto", image_size=[800, 1024])
    assert datasets.preview_crop(session, dataset_id=dataset_id, config=resized).startswith("auto: 512x512 ")
    pan = {**auto, "model": {"arch": "PAN", "encoder": "resnet18"}}
    session.get(Dataset, dataset_id).statistics = {"image_sizes": {"640x640": 3}}
    session.flush()
    text = datasets.preview_crop(session, dataset_id=dataset_id, config=pan)
    assert text.startswith("auto: 384x384 ") and "multiple of 128" in text  # 480 -> 384, not 480


def test_preview_crop_fixed_none_and_no_sizes(session, seed, dataset_id, config_dict):
    fixed = _cfg(config_dict, crop_size=[256, 192])
    assert datasets.preview_crop(session, dataset_id=dataset_id, config=fixed) == "fixed: 256x192"
    assert datasets.preview_crop(session, dataset_id=dataset_id, config=config_dict) == "none: whole images"
    resized = _cfg(config_dict, image_size=[128, 160])
    assert datasets.preview_crop(session, dataset_id=dataset_id, config=resized) == (
        "none: whole images resized to 128x160")
    bare = seed.add_dataset(session, name="bare")  # registered without sizes in its report
    text = datasets.preview_crop(session, dataset_id=bare, config=_cfg(config_dict, crop_size="auto"))
    assert "chosen when the run starts" in text


def test_preview_crop_refuses_invalid_sections_and_unknown_datasets(session, dataset_id, config_dict):
    with pytest.raises(InvalidInput, match="crop_size"):
        datasets.preview_crop(session, dataset_id=dataset_id, config=_cfg(config_dict, crop_size=[100, 100]))
    with pytest.raises(NotFound, match="dataset 99"):
        datasets.preview_crop(session, dataset_id=99, config=config_dict)


def test_data_policy_of_a_run(session, tmp_path, config_dict):
    arts = Artifacts(str(tmp_path / "artifacts"), cache=tmp_path / "cache")
    run_id = experiments.create_experiment(session, actor=None, config=config_dict).run_ids[0]
    assert runs.data_policy(session, run_id=run_id, artifacts=arts) is None  # not started: no folder yet
    folder = tmp_path / "artifacts" / "runs" / str(run_id)
    folder.mkdir(parents=True)
    session.get(Run, run_id).artifact_dir = str(folder)
    session.flush()
    assert runs.data_policy(session, run_id=run_id, artifacts=arts) is None  # trained before policies were kept
    policy = DataPolicy(crop_size=(128, 128), crop_auto=True, crop_rule="auto: ... -> 128x128",
                        median_short_side=240.0, num_train_images=7, class_shares=[0.7, 0.2, 0.1],
                        rare_crop_weights=[0.5, 1.0, 1.5], loss_weights=None)
    (folder / "data_policy.json").write_text(policy.model_dump_json(indent=2))
    assert runs.data_policy(session, run_id=run_id, artifacts=arts) == policy
    assert runs.data_policy(session, run_id=run_id, artifacts=None) == policy
    (folder / "data_policy.json").write_text('{"crop_rule": 3}')
    with pytest.raises(ServiceError, match="not a data policy record"):
        runs.data_policy(session, run_id=run_id, artifacts=arts)
    with pytest.raises(NotFound, match="run 999"):
        runs.data_policy(session, run_id=999, artifacts=arts)
