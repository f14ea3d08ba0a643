"""fit(): learning, checkpoints, resume equivalence, NaN detection, stopping, the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from segcore.checkpoint import load_checkpoint
from segcore.errors import ConfigError, TrainingError
from segcore.training import EpochReport, StopTraining, fit
from segcore.training._device import resolve_runtime

pytestmark = pytest.mark.slow


def test_tiny_fit_learns_well_above_chance(trained_run):
    result = trained_run["result"]
    assert result.status == "completed"
    assert result.epochs_run == 8
    # 4 classes: a model that predicts one class everywhere scores at most ~0.25 mIoU here
    assert result.best_metrics["miou"] > 0.5, result.best_metrics
    first = result.history[0].val["miou"]
    assert result.best_metrics["miou"] > first
    for key in ("miou", "miou_per_image", "dice", "dice_per_image", "pixel_accuracy", "loss", "per_class"):
        assert key in result.best_metrics
    lines = (trained_run["workdir"] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_best_checkpoint_rebuilds_the_same_model(trained_run):
    result = trained_run["result"]
    ckpt = load_checkpoint(result.best_checkpoint)
    assert ckpt.config == trained_run["config"]
    assert ckpt.provenance["dataset_fingerprint"] == result.dataset_fingerprint
    assert ckpt.provenance["epoch"] == result.best_epoch
    assert "torch" in ckpt.provenance["versions"]
    assert ckpt.metrics["miou"] == pytest.approx(result.best_metrics["miou"])
    x = torch.rand(1, 3, 64, 64)
    again = load_checkpoint(result.best_checkpoint)
    assert torch.equal(ckpt.model(x), again.model(x))
    last = load_checkpoint(result.last_checkpoint, with_train_state=True)
    assert last.train_state["epoch"] == 8
    assert "optimizer" in last.train_state and "rng" in last.train_state


class _StopAfter:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, report: EpochReport) -> None:
        if report.epoch == self.epoch:
            raise StopTraining("interrupted for the test")


def test_resumed_run_matches_uninterrupted_run(tiny_config, tmp_path):
    cfg = tiny_config(training={"epochs": 4, "batch_size": 8, "seed": 3})
    straight = fit(cfg, tmp_path / "straight", write_val_store=False)

    first = fit(cfg, tmp_path / "resumed", callbacks=[_StopAfter(2)], write_val_store=False)
    assert first.status == "stopped" and first.epochs_run == 2
    second = fit(cfg, tmp_path / "resumed", resume=True, write_val_store=False)
    assert second.status == "completed"
    assert [r.epoch for r in second.history] == [3, 4]

    a, b = straight.last_metrics, second.last_metrics
    for key in ("miou", "miou_per_image", "dice", "loss"):
        assert a[key] == pytest.approx(b[key], abs=1e-4), key
    wa = load_checkpoint(straight.last_checkpoint).model.state_dict()
    wb = load_checkpoint(second.last_checkpoint).model.state_dict()
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-4), k


def test_nan_loss_fails_within_the_first_epoch(tiny_config, tmp_path):
    cfg = tiny_config(optimizer={"name": "sgd", "lr": 1e30, "momentum": 0.0}, training={"epochs": 3, "batch_size": 4})
    with pytest.raises(TrainingError, match=r"epoch 1, step \d+.*lower optimizer.lr"):
        fit(cfg, tmp_path / "nan")


def test_callback_stop_is_reported(tiny_config, tmp_path):
    seen = []

    class Cancel:
        def on_step(self, report):
            seen.append(report)
            if report.step >= 2:
                raise StopTraining("cancelled by alice")

    cfg = tiny_config()
    result = fit(cfg, tmp_path / "stop", callbacks=[Cancel()])
    assert result.status == "stopped" and result.stop_reason == "cancelled by alice"
    assert result.epochs_run == 0 and result.val_store is None
    # the CPU reports every step; CUDA reads the loss at most once a second, so reports are sparser there
    if resolve_runtime(cfg.training).device.type == "cpu":
        assert [r.step for r in seen] == [1, 2]
    assert seen[-1].step >= 2 and seen[-1].steps_per_epoch == 3


class _Snapshots:
    """The raw weights after each epoch, read back from `last` (checkpointed every epoch)."""

    def __init__(self) -> None:
        self.by_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def on_checkpoint(self, path, best):
        if not best:
            ckpt = load_checkpoint(path, with_train_state=True)
            self.by_epoch[ckpt.train_state["epoch"]] = ckpt.model.state_dict()


def test_early_stopping_and_averaging_options(tiny_config, tmp_path):
    # early stopping on mIoU, which stalls in the first epochs here; the stop epoch computed by hand
    stopping = tiny_config(training={"epochs": 8, "batch_size": 8, "early_stopping_patience": 1})
    result = fit(stopping, tmp_path / "stop", write_val_store=False)
    scores = [r.val["miou"] for r in result.history]
    best, expected_stop = -math.inf, None
    for epoch, score in enumerate(scores, start=1):
        if score <= best:
            expected_stop = epoch
            break
        best = score
    assert expected_stop is not None and expected_stop < 8, scores
    assert result.status == "early_stopped" and result.epochs_run == expected_stop

    # SWA from epoch 2 and EMA: the averages by hand from the raw weights of every epoch
    averaging = tiny_config(training={"epochs": 4, "batch_size": 8, "ema_decay": 0.9, "swa_start_epoch": 2})
    snaps = _Snapshots()
    result = fit(averaging, tmp_path / "avg", callbacks=[snaps], write_val_store=False)
    assert result.status == "completed"
    state = load_checkpoint(result.last_checkpoint, with_train_state=True).train_state
    swa = state["swa"]
    assert int(swa["n_averaged"]) == 3
    for name, value in snaps.by_epoch[4].items():
        if not value.is_floating_point():  # num_batches_tracked: recounted by the BN update over 3 steps
            assert int(swa[f"module.{name}"]) == 3, name
        elif "running_" not in name:  # BatchNorm statistics are recomputed for the average, not averaged
            hand = torch.stack([snaps.by_epoch[e][name].double() for e in (2, 3, 4)]).mean(0)
            assert torch.allclose(swa[f"module.{name}"].double(), hand, atol=1e-6), name
    # the best checkpoint (epoch >= 2) holds the SWA weights; EMA was updated after each of 3 x 4 steps
    assert result.best_epoch >= 2
    best_weights = load_checkpoint(result.best_checkpoint).model.state_dict()
    kept = [e for e in range(2, result.best_epoch + 1)]
    for name, value in best_weights.items():
        if value.is_floating_point() and "running_" not in name:
            hand = torch.stack([snaps.by_epoch[e][name].double() for e in kept]).mean(0)
            assert torch.allclose(value.double(), hand, atol=1e-6), name
    assert int(state["ema"]["n_averaged"]) == 4 * 3


def test_fp16_on_cpu_is_refused_with_a_fix(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        fit(tiny_config(training={"epochs": 1, "precision": "fp16", "device": "cpu"}), tmp_path / "x")


def test_command_line_trains_and_reports(tiny_config, tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(tiny_config().to_yaml())
    proc = subprocess.run(
        [sys.executable, "-m", "segcore", "train", str(cfg_path), "--workdir", str(tmp_path / "run"),
         "--set", "training.epochs=1"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "completed" and summary["epochs_run"] == 1
    assert "epoch 1/1" in proc.stderr and "img/s" in proc.stderr

    bad = subprocess.run(
        [sys.executable, "-m", "segcore", "train", str(cfg_path), "--set", "model.arch=Unet3D"],
        capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode == 2
    assert "model.arch" in bad.stderr and "UnetPlusPlus" in bad.stderr and "Traceback" not in bad.stderr


def test_auto_crop_and_weights_are_resolved_once_and_recorded(tiny_config, tmp_path):
    cfg = tiny_config(
        data={**tiny_config().data.model_dump(mode="json"), "crop_size": "auto",
              "rare_class_crop": {"p": 0.5, "class_weights": "auto"}},
        loss={"terms": [{"name": "weighted_ce", "params": {"weights": "auto"}}]},
        training={"epochs": 1, "batch_size": 4},
    )
    starts = []

    class Start:
        def on_train_start(self, info):
            starts.append(info)

    result = fit(cfg, tmp_path / "run", callbacks=[Start()], write_val_store=False)
    assert result.status == "completed"
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["data"]["crop_size"] == [64, 64]  # 64 px images: the crop never exceeds them
    assert all(isinstance(w, float) for w in stored["loss"]["terms"][0]["params"]["weights"])
    policy = json.loads((tmp_path / "run" / "data_policy.json").read_text())
    assert policy["crop_size"] == [64, 64] and "auto" in policy["crop_rule"]
    assert starts[0]["crop_size"] == [64, 64]
    assert load_checkpoint(result.best_checkpoint).config.data.crop_size == (64, 64)


def test_the_validation_score_is_the_full_resolution_one_that_inspect_computes(tiny_config, tiny_coco, tmp_path):
    """Trained at half size, the run's validation score is its stored predictions' against full-size masks:
    the figure Inspect (segcore.analysis) and group scores compute; the training-size one is the curve."""
    from segcore.analysis import analyze_store
    from segcore.data.formats import open_dataset
    from segcore.oof import score_store

    cfg = tiny_config(training={"epochs": 2, "batch_size": 8, "seed": 0})
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"image_size": (32, 32)})})
    result = fit(cfg, tmp_path / "run")
    dataset = open_dataset(cfg.data.source, classes=cfg.data.classes, task=cfg.data.task,
                           ignore_index=cfg.data.ignore_index)
    assert dataset.load_mask(dataset.ids[0]).shape == (64, 64)  # the masks are larger than the training size
    stored = score_store(result.val_store, dataset.load_mask, ignore_index=cfg.data.ignore_index)
    from segcore.inference import ProbabilityStore

    inspect = analyze_store(ProbabilityStore.open(result.val_store), dataset.load_mask, task=cfg.data.task, classes=cfg.data.classes,
                            ignore_index=cfg.data.ignore_index)
    best = result.best_metrics
    assert best["miou"] == stored["miou"] and best["per_class"] == stored["per_class"]
    assert abs(best["miou"] - inspect.pooled.mean_iou) < 1e-4
    assert abs(best["dice"] - inspect.pooled.mean_dice) < 1e-4
    curve = result.history[result.best_epoch - 1].val
    assert best["at_training_size"]["miou"] == curve["miou"] and best["loss"] == curve["loss"]
