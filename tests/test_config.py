"""The experiment config: round trips, defaults, and errors that name the field and the choices."""

from __future__ import annotations

import json

import pytest

from segcore.config import ExperimentConfig, dump_config, load_config, parse_config
from segcore.errors import ConfigError
from segcore.recipes import RECIPES, load_recipe

BASE = {
    "name": "t",
    "data": {"source": {"format": "mask_folder", "root": "/d"}, "classes": ["bg", "a", "b"]},
}


def make(**sections):
    data = json.loads(json.dumps(BASE))
    data.update(sections)
    return data


def test_minimal_config_gets_defaults():
    cfg = parse_config(make())
    assert cfg.schema_version == 1
    assert cfg.model.arch == "Unet" and cfg.model.encoder_weights is None
    assert [t.name for t in cfg.loss.terms] == ["ce"]
    assert cfg.data.num_classes == 3


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipes_round_trip_json_and_yaml(name, tmp_path):
    cfg = load_recipe(name)
    assert ExperimentConfig.model_validate_json(cfg.to_json()) == cfg
    for suffix in (".yaml", ".json"):
        dump_config(cfg, tmp_path / f"c{suffix}")
        assert load_config(tmp_path / f"c{suffix}") == cfg


def test_loss_expression_is_parsed():
    cfg = parse_config(make(loss="0.6*ce + 0.4*jaccard"))
    assert [(t.name, t.weight) for t in cfg.loss.terms] == [("ce", 0.6), ("jaccard", 0.4)]
    assert cfg.loss.expression() == "0.6*ce + 0.4*jaccard"


@pytest.mark.parametrize(
    ("sections", "field", "hint"),
    [
        ({"model": {"arch": "Unet3D"}}, "model.arch", "UnetPlusPlus"),
        ({"model": {"encoder": "resnet999"}}, "model.encoder", "resnet18"),
        ({"loss": "0.5*cee"}, "loss", "jaccard"),
        ({"loss": "half of ce"}, "loss", "0.6*ce + 0.4*jaccard"),
        ({"training": {"epochs": -1}}, "training.epochs", "greater than or equal to 1"),
        ({"training": {"epochs": "many"}}, "training.epochs", "integer"),
        ({"optimizer": {"name": "adagrad"}}, "optimizer.name", "adamw"),
        ({"scheduler": {"name": "step"}}, "scheduler.name", "cosine"),
        ({"augmentation": {"preset": "heavy"}}, "augmentation.preset", "strong"),
        ({"evaluation": {"monitor": "f1"}}, "evaluation.monitor", "miou_per_image"),
        ({"bogus": 1}, "bogus", "unknown field"),
        ({"training": {"epochz": 3}}, "training.epochz", "unknown field"),
    ],
)
def test_invalid_values_name_the_field_and_the_choices(sections, field, hint):
    with pytest.raises(ConfigError) as err:
        parse_config(make(**sections))
    msg = str(err.value)
    assert field in msg and hint in msg


def test_loss_must_fit_the_task():
    with pytest.raises(ConfigError, match="bce.*multilabel"):
        parse_config(make(loss="bce"))


def test_weighted_ce_needs_one_weight_per_class():
    with pytest.raises(ConfigError, match="one weight per class"):
        parse_config(make(loss={"terms": [{"name": "weighted_ce", "params": {"weights": [1, 2]}}]}))
    ok = parse_config(make(loss={"terms": [{"name": "weighted_ce", "params": {"weights": [1, 2, 3]}}]}))
    assert ok.loss.terms[0].params["weights"] == [1, 2, 3]


def test_kfold_index_must_be_in_range():
    with pytest.raises(ConfigError, match="fold 5 is out of range"):
        parse_config(make(data={**BASE["data"], "split": {"kind": "kfold", "n_folds": 5, "fold": 5}}))


def test_sizes_must_be_multiples_of_32():
    with pytest.raises(ConfigError, match="multiples of 32"):
        parse_config(make(data={**BASE["data"], "image_size": [100, 100]}))


def test_duplicate_classes_are_rejected():
    with pytest.raises(ConfigError, match="duplicate class names"):
        parse_config(make(data={**BASE["data"], "classes": ["a", "a"]}))


def test_not_yaml_and_not_a_mapping():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("a: [1, 2")
    with pytest.raises(ConfigError, match="mapping"):
        parse_config("- 1\n- 2\n")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")
