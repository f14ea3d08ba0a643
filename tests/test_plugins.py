"""Plugins through entry points: the installed example package, and packages made in the test.

``segboard-example-plugin`` (examples/) is installed in the test environment. Other distributions
are written into a temporary folder on ``sys.path`` (a ``.dist-info`` with ``entry_points.txt``),
which importlib.metadata finds exactly like an installed package.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from segcore import catalog, plugins
from segcore.config import parse_config
from segcore.errors import ConfigError, PluginError
from segcore.losses import LOSSES, build_loss
from segcore.models import ARCHITECTURES, build_model

from .conftest import tiny_config_dict

EXAMPLE = "segboard-example-plugin"

MakeDist = Callable[..., Path]


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeDist]:
    """Write a distribution (metadata, entry points, modules) onto ``sys.path``; forgotten afterwards."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def make(name: str, entry_points: dict[str, dict[str, str]], sources: dict[str, str], version: str = "1.0") -> Path:
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        sections = [f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for g, eps in entry_points.items()]
        (info / "entry_points.txt").write_text("".join(sections))
        for module, source in sources.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            modules.append(module)
        importlib.invalidate_caches()
        plugins.refresh()
        return info

    yield make
    monkeypatch.undo()
    for module in modules:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()
    plugins.refresh()


def _cfg(**overrides: Any) -> dict[str, Any]:
    source = {"format": "mask_folder", "root": "/nowhere"}
    cfg: dict[str, Any] = {"data": {"source": source, "classes": ["bg", "a", "b"]}}
    cfg.update(overrides)
    return cfg


# ---------------------------------------------------------------- the installed example package


def test_example_items_appear_in_the_catalog_with_their_parameters() -> None:
    data = catalog.catalog()
    net = next(a for a in data["architectures"] if a["name"] == "tiny_convnet")
    assert net["plugin"]["distribution"] == EXAMPLE and net["plugin"]["version"] == "0.1.0"
    assert [(p["name"], p["default"]) for p in net["params"]] == [("width", 16), ("dropout", 0.0)]  # pydantic model
    assert "Channels of the first stage" in net["params"][0]["description"]
    loss = next(x for x in data["losses"] if x["name"] == "poly_ce")
    assert loss["tasks"] == ["multiclass"] and [p["name"] for p in loss["params"]] == ["epsilon"]  # signature
    assert "Poly-1" in loss["description"] and f"[plugin: {EXAMPLE} 0.1.0]" in loss["description"]
    assert data["plugin_problems"] == []
    # the form's lists and the runtime registries hold them too, after the built-ins
    assert list(catalog.ARCHITECTURES)[-1] == "tiny_convnet" and "poly_ce" in catalog.LOSSES
    assert "tiny_convnet" in ARCHITECTURES.names() and LOSSES.get("poly_ce").tags == ("multiclass",)


def test_unknown_names_list_plugins_like_built_ins() -> None:
    with pytest.raises(ConfigError, match=r"model\.arch: unknown architecture 'tiny'; valid choices: .*tiny_convnet"):
        parse_config(_cfg(model={"arch": "tiny"}))
    with pytest.raises(ConfigError, match=r"unknown loss 'poly'; valid choices: .*ssim, bce, soft_bce, poly_ce$"):
        parse_config(_cfg(loss="poly"))
    # a multiclass-only plugin term on a multilabel task: the built-ins' message
    with pytest.raises(ConfigError, match=r"loss 'poly_ce' is for multiclass tasks, not multilabel"):
        parse_config(_cfg(data={**_cfg()["data"], "task": "multilabel"}, loss="poly_ce"))


def test_plugin_parameters_are_checked_by_name_and_by_the_pydantic_model() -> None:
    cfg = parse_config(_cfg(model={"arch": "tiny_convnet", "params": {"widht": 8}}))
    with pytest.raises(ConfigError, match=r"model 'tiny_convnet' has no parameter 'widht'; its parameters are: width"):
        build_model(cfg.model, 3)
    cfg = parse_config(_cfg(model={"arch": "tiny_convnet", "params": {"width": 2}}))
    with pytest.raises(ConfigError, match=r"model 'tiny_convnet': invalid parameters \(width: .*greater than or equal"):
        build_model(cfg.model, 3)
    cfg = parse_config(_cfg(loss={"terms": [{"name": "poly_ce", "params": {"eps": 1}}]}))
    with pytest.raises(ConfigError, match=r"loss 'poly_ce' has no parameter 'eps'; its parameters are: epsilon"):
        build_loss(cfg)


def test_a_config_records_the_plugin_packages_it_uses() -> None:
    cfg = parse_config(_cfg(model={"arch": "tiny_convnet"}, loss="0.7*poly_ce + 0.3*dice"))
    assert cfg.plugins == {EXAMPLE: "0.1.0"}
    dumped = cfg.to_dict()
    assert list(dumped)[-1] == "plugins" and parse_config(dumped).plugins == cfg.plugins
    # built-ins only: no field in the dump, so such configs read as they always did
    assert "plugins" not in parse_config(_cfg()).to_dict()
    cfg.loss = "dice"  # assignment is validated: the record follows
    assert cfg.plugins == {EXAMPLE: "0.1.0"}
    cfg.model.arch = "Unet"
    cfg.loss = "dice"
    assert cfg.plugins == {}


# ---------------------------------------------------------------- one training over all four groups

METRIC_AND_PRESET = """
    def mean_recall(*, tp, fp, fn):
        '''Mean recall over classes that occur in the ground truth.'''
        scores = [t / (t + n) for t, n in zip(tp, fn) if t + n]
        return sum(scores) / len(scores) if scores else None


    def vflips(ctx):
        '''Vertical flips only.'''
        import albumentations as A
        return [A.VerticalFlip(p=0.5)]
"""


def test_plugins_train_one_epoch_and_the_run_records_their_packages(
    tiny_coco: Any, tmp_path: Path, make_dist: MakeDist
) -> None:
    from segcore.training import fit

    make_dist("segboard-test-extras", {"segboard.metrics": {"mean_recall": "sbt_extras:mean_recall"},
                                       "segboard.augmentations": {"vflips": "sbt_extras:vflips"}},
              {"sbt_extras": METRIC_AND_PRESET}, version="2.3")
    raw = tiny_config_dict(
        tiny_coco,
        model={"arch": "tiny_convnet", "params": {"width": 8}},
        loss="0.5*poly_ce + 0.3*dice + 0.2*ssim",
        augmentation={"preset": "vflips"},
        evaluation={"monitor": "mean_recall"},
        training={"epochs": 1, "batch_size": 8, "seed": 0, "device": "cpu", "steps_per_epoch": 2},
    )
    cfg = parse_config(raw)
    assert cfg.plugins == {EXAMPLE: "0.1.0", "segboard-test-extras": "2.3"}
    result = fit(cfg, tmp_path / "run", write_val_store=False)
    assert result.status == "completed" and result.epochs_run == 1
    assert 0.0 <= result.best_metrics["mean_recall"] <= 1.0  # the plugin metric, monitored
    assert result.best_checkpoint is not None
    provenance = json.loads((result.best_checkpoint / "provenance.json").read_text())
    assert provenance["plugins"] == {EXAMPLE: "0.1.0", "segboard-test-extras": "2.3"}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["plugins"] == provenance["plugins"]
    model = build_model(cfg.model, cfg.data.num_classes)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)


# ---------------------------------------------------------------- broken, duplicate and missing plugins

BROKEN = """
    import segboard_module_that_does_not_exist  # noqa: F401

    def factory(**kwargs):
        raise AssertionError("never called")
"""

NET = """
    def net(*, in_channels, classes):
        '''A model.'''
        from torch import nn
        return nn.Conv2d(in_channels, classes, 1)
"""


def test_a_plugin_that_fails_to_import_names_its_entry_point_and_package(make_dist: MakeDist) -> None:
    make_dist("segboard-broken", {"segboard.losses": {"broken_loss": "sbt_broken:factory"}}, {"sbt_broken": BROKEN})
    problems = plugins.problems()
    assert len(problems) == 1
    assert "entry point 'broken_loss' (sbt_broken:factory) of package segboard-broken 1.0" in problems[0]
    assert "failed to import (ModuleNotFoundError" in problems[0]
    assert catalog.catalog()["plugin_problems"] == problems
    with pytest.raises(ConfigError, match=r"loss\.terms\.1\.name: plugin loss entry point 'broken_loss' .*"
                                          r"segboard-broken 1\.0 failed to import"):
        parse_config(_cfg(loss="0.5*ce + 0.5*broken_loss"))
    with pytest.raises(PluginError, match="failed to import"):
        LOSSES.get("broken_loss")
    # built-ins and the other plugins are unaffected
    assert parse_config(_cfg(loss="0.5*ce + 0.5*poly_ce")).loss.expression() == "0.5*ce + 0.5*poly_ce"
    assert "broken_loss" not in catalog.LOSSES


def test_a_duplicate_name_is_an_error_naming_both_sources(make_dist: MakeDist) -> None:
    make_dist("segboard-net-a", {"segboard.models": {"dup_net": "sbt_net_a:net"}}, {"sbt_net_a": NET})
    make_dist("segboard-net-b", {"segboard.models": {"dup_net": "sbt_net_b:net", "ce": "sbt_net_b:net"},
                                 "segboard.losses": {"dice": "sbt_net_b:net"}}, {"sbt_net_b": NET})
    with pytest.raises(ConfigError, match=r"model name 'dup_net' is defined twice: by entry point 'dup_net' "
                                          r"\(sbt_net_a:net\) of package segboard-net-a 1\.0 and by .*segboard-net-b"):
        parse_config(_cfg(model={"arch": "dup_net"}))
    problems = "\n".join(plugins.problems())
    assert "loss name 'dice' is defined twice: built into segcore and by entry point 'dice'" in problems
    # a plugin never replaces a built-in: dice is still smp's, and 'ce' as a model name is just another plugin name
    assert LOSSES.get("dice").tags == ("multiclass", "multilabel")
    assert "ce" in catalog.ARCHITECTURES


def test_a_config_from_a_machine_with_the_package_names_it_where_it_is_missing(make_dist: MakeDist) -> None:
    info = make_dist("segboard-gone", {"segboard.models": {"gone_net": "sbt_gone:net"}}, {"sbt_gone": NET},
                     version="1.2")
    recorded = parse_config(_cfg(model={"arch": "gone_net"})).to_dict()
    assert recorded["plugins"] == {"segboard-gone": "1.2"}
    for f in info.iterdir():  # the package is uninstalled: this is now a worker without it
        f.unlink()
    info.rmdir()
    importlib.invalidate_caches()
    plugins.refresh()
    with pytest.raises(ConfigError, match=r"uses plugin package\(s\) segboard-gone 1\.2, not installed on this "
                                          r"machine; install them here and on every worker \(pip install "
                                          r"'segboard-gone==1\.2'\)"):
        parse_config(recorded)
    with pytest.raises(ConfigError, match="unknown architecture 'gone_net'"):  # without the record: the usual error
        parse_config({k: v for k, v in recorded.items() if k != "plugins"})


def test_config_validation_and_the_catalog_stay_torch_free_with_plugins_installed() -> None:
    import subprocess

    code = (
        "import sys, json; import segcore.config, segcore.catalog; "
        "c = segcore.catalog.catalog(); assert any(a['name'] == 'tiny_convnet' for a in c['architectures']); "
        "segcore.config.parse_config({'data': {'source': {'format': 'mask_folder', 'root': '/x'}, "
        "'classes': ['a', 'b']}, 'model': {'arch': 'tiny_convnet'}, 'loss': 'poly_ce'}); "
        "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_importing_segcore_and_validating_built_ins_scans_no_entry_points() -> None:
    import subprocess

    code = (
        "import segcore, segcore.config, segcore.models, segcore.losses, segcore.data.transforms\n"
        "from segcore import plugins\n"
        "from segcore.config import parse_config\n"
        "parse_config({'data': {'source': {'format': 'mask_folder', 'root': '/x'}, 'classes': ['a', 'b']}, "
        "'loss': '0.5*ce + 0.5*ssim'})\n"
        "print(plugins._SCANNED is None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True", out.stdout
