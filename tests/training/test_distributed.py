"""One run on two processes (DDP, gloo, CPU) against one process with the same global batch."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from segcore.checkpoint import load_checkpoint
from segcore.errors import ConfigError, TrainingError
from segcore.training import fit
from segcore.training.distributed import resolve_devices

pytestmark = pytest.mark.slow

STEPS = 3


def _config(tiny_config, *, batch_size: int, devices: int | None = None, epochs: int = 1):
    # no BatchNorm anywhere (ConvNeXt: LayerNorm, FPN decoder: GroupNorm), no dropout and no augmentation, so the
    # two ranks' mean gradient is exactly the one-process gradient of the same 4 images
    return tiny_config(
        model={"arch": "FPN", "encoder": "tu-convnext_atto", "encoder_weights": None,
               "params": {"decoder_dropout": 0.0}},
        loss="ce",
        augmentation={"preset": "none"},
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.0},  # Adam would magnify float noise
        scheduler={"name": "constant"},
        data={**tiny_config().data.model_dump(mode="json"),
              "split": {"kind": "holdout", "val_fraction": 0.35, "seed": 0}},
        training={"epochs": epochs, "batch_size": batch_size, "seed": 1, "device": "cpu", "precision": "fp32",
                  "steps_per_epoch": STEPS, "devices": devices},
    )


def test_two_ranks_equal_one_process_with_the_same_global_batch(tiny_config, tmp_path):
    from segcore.data.formats import open_dataset
    from segcore.data.splits import split_ids

    cfg = _config(tiny_config, batch_size=4)
    ds = open_dataset(cfg.data.source, classes=cfg.data.classes, task=cfg.data.task)
    assert len(split_ids(ds, cfg.data.split)[1]) % 2 == 1, "the test needs an odd number of validation images"
    single = fit(cfg, tmp_path / "single", write_val_store=False)
    ddp = fit(_config(tiny_config, batch_size=2, devices=2), tmp_path / "ddp", write_val_store=False)

    assert ddp.status == single.status == "completed"
    wa = load_checkpoint(single.last_checkpoint).model.state_dict()
    wb = load_checkpoint(ddp.last_checkpoint).model.state_dict()
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=2e-5, rtol=1e-4), k

    # validation: each image on one rank only (an odd count: a padded shard would repeat one), counts summed
    assert ddp.history[0].val is not None and single.history[0].val is not None
    a, b = single.last_metrics, ddp.last_metrics
    assert a["per_class"]["support"] == b["per_class"]["support"]
    assert b["miou"] == pytest.approx(a["miou"], abs=1e-4)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    # training figures cover both ranks' images
    assert ddp.history[0].train_loss == pytest.approx(single.history[0].train_loss, rel=1e-4)

    # rank 0 alone writes: one line per epoch, one checkpoint folder each
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["best", "last"]
    assert load_checkpoint(ddp.last_checkpoint).provenance["world_size"] == 2


def _children() -> list[int]:
    """This process's child processes (Linux /proc)."""
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def _rank_processes() -> list[int]:
    return [pid for pid in _children()
            if b"segcore.training.distributed" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_a_dead_rank_fails_the_run_instead_of_hanging(tiny_config, tmp_path):
    class KillRankOne:
        def on_step(self, report):
            if report.step == 2:
                for pid in _rank_processes():
                    os.kill(pid, signal.SIGKILL)

    cfg = _config(tiny_config, batch_size=2, devices=2, epochs=3)
    with pytest.raises(TrainingError, match="a training rank failed: rank 1 exited with code -9"):
        fit(cfg, tmp_path / "dead", callbacks=[KillRankOne()], write_val_store=False)
    assert not _rank_processes()


def test_resume_continues_a_distributed_run(tiny_config, tmp_path):
    from segcore.training import StopTraining

    class StopAfterFirst:
        def on_epoch_end(self, report):
            raise StopTraining("interrupted for the test")

    cfg = _config(tiny_config, batch_size=2, devices=2, epochs=2)
    first = fit(cfg, tmp_path / "run", callbacks=[StopAfterFirst()], write_val_store=False)
    assert first.status == "stopped" and first.epochs_run == 1
    assert not _rank_processes()
    second = fit(cfg, tmp_path / "run", resume=True, write_val_store=False)
    assert second.status == "completed" and [r.epoch for r in second.history] == [2]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_device_lists_are_checked_with_the_fix():
    assert resolve_devices(None, "cpu") is None
    assert resolve_devices(1, "cpu") is None
    assert resolve_devices(2, "cpu") == [0, 1]
    with pytest.raises(ConfigError, match="process count"):
        resolve_devices([0, 1], "cpu")
    if torch.cuda.device_count() < 8:
        with pytest.raises(ConfigError, match="are visible"):
            resolve_devices([0, 7], "cuda")
