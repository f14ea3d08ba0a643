"""Contract tests over the loss registry, and the weighted sum."""

from __future__ import annotations

from typing import Any

import pytest
import segmentation_models_pytorch as smp
import torch

from segcore import catalog
from segcore.config import ExperimentConfig, LossTerm, TaskType
from segcore.errors import ConfigError
from segcore.losses import LOSSES, WeightedLoss, build_loss, build_loss_term, loss_terms

torch.set_num_threads(1)

C = 3
IGNORE = 255
CASES = [(name, task) for name, meta in catalog.LOSSES.items() for task in meta["tasks"]]


def _config(loss: Any, task: str = "multiclass", ignore_index: int = IGNORE) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "data": {
                "source": {"format": "mask_folder", "root": "/nowhere"},
                "classes": [f"c{i}" for i in range(C)],
                "task": task,
                "ignore_index": ignore_index,
            },
            "loss": loss,
        }
    )


def _params(name: str) -> dict[str, Any]:
    return {"weights": [1.0, 2.0, 0.5]} if name == "weighted_ce" else {}


def _single(name: str, task: str) -> WeightedLoss:
    return build_loss(_config({"terms": [{"name": name, "params": _params(name)}]}, task))


def _data(task: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random logits, a target, and the 'good direction' (+ on the true class)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, C, 64, 64, generator=g)
    if task == "multiclass":
        target = torch.randint(0, C, (2, 64, 64), generator=g)
        target[:, :8] = IGNORE  # a band of unlabelled pixels
        direction = torch.nn.functional.one_hot(target.clamp(max=C - 1), C).permute(0, 3, 1, 2).float()
    else:
        target = (torch.rand(2, C, 64, 64, generator=g) > 0.6).float()
        direction = 2 * target - 1
    return logits, target, direction


@pytest.mark.parametrize(("name", "task"), CASES)
def test_finite_positive_and_decreasing(name: str, task: str) -> None:
    loss_fn = _single(name, task)
    logits, target, direction = _data(task)
    logits.requires_grad_(True)
    value = loss_fn(logits, target)
    assert value.ndim == 0 and torch.isfinite(value) and value.item() > 0
    value.backward()
    assert torch.isfinite(logits.grad).all()
    better = loss_fn(logits.detach() + 3.0 * direction, target)
    assert better.item() < value.item()


@pytest.mark.parametrize("name", [n for n, t in CASES if t == "multiclass"])
def test_ignored_pixels_have_no_effect(name: str) -> None:
    loss_fn = _single(name, "multiclass")
    logits, target, _ = _data("multiclass")
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    changed = logits.clone()
    changed[ignored] = torch.randn(int(ignored.sum()), generator=torch.Generator().manual_seed(9)) * 10
    changed.requires_grad_(True)
    a = loss_fn(logits, target)
    b = loss_fn(changed, target)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    b.backward()
    assert changed.grad[ignored].abs().max() == 0


@pytest.mark.parametrize("name", [n for n, t in CASES if t == "multiclass"])
def test_all_ignored_batch_is_zero(name: str) -> None:
    loss_fn = _single(name, "multiclass")
    logits = torch.randn(2, C, 64, 64, requires_grad=True)
    value = loss_fn(logits, torch.full((2, 64, 64), IGNORE))
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(logits.grad).all()


def test_registry_matches_catalog_and_has_descriptions() -> None:
    assert sorted(LOSSES.names()) == sorted(catalog.LOSSES)
    for entry in LOSSES:
        assert entry.description == catalog.LOSSES[entry.name]["description"]
        assert set(entry.tags) == set(catalog.LOSSES[entry.name]["tasks"])


def test_weighted_sum_and_terms() -> None:
    loss_fn = build_loss(_config("0.6*ce + 0.4*jaccard"))
    logits, target, _ = _data("multiclass")
    parts = loss_terms(loss_fn, logits, target)
    assert set(parts) == {"ce", "jaccard", "total"}
    torch.testing.assert_close(parts["total"], 0.6 * parts["ce"] + 0.4 * parts["jaccard"])
    torch.testing.assert_close(loss_fn(logits, target), parts["total"])


def test_repeated_term_names_get_suffixes() -> None:
    cfg = _config({"terms": [{"name": "dice"}, {"name": "dice", "params": {"log_loss": True}}]})
    logits, target, _ = _data("multiclass")
    assert set(loss_terms(build_loss(cfg), logits, target)) == {"dice", "dice_2", "total"}


def test_ce_matches_torch_on_labelled_pixels() -> None:
    logits, target, _ = _data("multiclass")
    keep = target != IGNORE
    expected = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target[keep])
    torch.testing.assert_close(_single("ce", "multiclass")(logits, target), expected)


def test_weighted_ce_and_label_smoothing_reach_torch() -> None:
    logits, target, _ = _data("multiclass")
    w = torch.tensor([1.0, 2.0, 0.5])
    expected = torch.nn.functional.cross_entropy(logits, target, weight=w, ignore_index=IGNORE)
    torch.testing.assert_close(_single("weighted_ce", "multiclass")(logits, target), expected)
    smooth = build_loss(_config({"terms": [{"name": "label_smoothing_ce", "params": {"smoothing": 0.2}}]}))
    expected = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE, label_smoothing=0.2)
    torch.testing.assert_close(smooth(logits, target), expected)


def test_focal_tversky_is_tversky_to_the_gamma() -> None:
    logits, target, _ = _data("multiclass")
    tv = build_loss(_config({"terms": [{"name": "tversky"}]}))(logits, target)
    ftv = build_loss(_config({"terms": [{"name": "focal_tversky", "params": {"gamma": 2.0}}]}))(logits, target)
    torch.testing.assert_close(ftv, tv**2)


def test_dice_matches_smp() -> None:
    logits, target, _ = _data("multilabel")
    expected = smp.losses.DiceLoss("multilabel")(logits, target)
    torch.testing.assert_close(_single("dice", "multilabel")(logits, target), expected)


def test_half_precision_logits_are_computed_in_float32() -> None:
    logits, target, _ = _data("multiclass")
    value = _single("dice", "multiclass")(logits.to(torch.bfloat16), target)
    assert value.dtype == torch.float32


@pytest.mark.parametrize(
    ("term", "match"),
    [
        ({"name": "focal", "params": {"gama": 2}}, r"'focal' has no parameter 'gama'.*gamma, alpha"),
        ({"name": "focal", "params": {"alpha": 2.0}}, r"'focal'.*'alpha'"),
        ({"name": "label_smoothing_ce", "params": {"smoothing": 1.5}}, r"'label_smoothing_ce'.*'smoothing'"),
        ({"name": "tversky", "params": {"alpha": -1}}, r"'tversky'.*'alpha'"),
        ({"name": "focal_tversky", "params": {"gamma": 0}}, r"'focal_tversky'.*'gamma'"),
        ({"name": "lovasz", "params": {"per_image": "yes"}}, r"'lovasz'.*'per_image'"),
        ({"name": "dice", "params": {"smooth": "a"}}, r"'dice'.*'smooth'"),
    ],
)
def test_bad_params_name_term_and_parameter(term: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_loss(_config({"terms": [term]}))


def test_bad_per_class_list() -> None:
    term = LossTerm(name="weighted_ce", params={"weights": [1.0, 2.0]})
    with pytest.raises(ConfigError, match=r"'weighted_ce'.*'weights'.*\(3\)"):
        build_loss_term(term, task=TaskType.MULTICLASS, num_classes=3)


def test_term_for_the_wrong_task() -> None:
    with pytest.raises(ConfigError, match="multilabel"):
        build_loss_term(LossTerm(name="bce"), task=TaskType.MULTICLASS, num_classes=3)


def test_wrong_target_shape_is_explained() -> None:
    logits, _, _ = _data("multiclass")
    with pytest.raises(Exception, match=r"int64 target \[N, H, W\]"):
        _single("ce", "multiclass")(logits, torch.zeros(2, 64, 64, dtype=torch.float32))


def test_a_batch_with_nothing_labelled_gives_zero_loss_and_zero_gradients() -> None:
    from segcore.config import parse_config
    from segcore.losses import build_loss

    cfg = parse_config({"data": {"source": {"format": "mask_folder", "root": "x"}, "classes": ["a", "b", "c"]},
                        "loss": "0.5*ce + 0.3*dice + 0.2*lovasz"})
    loss_fn = build_loss(cfg)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.full((2, 8, 8), cfg.data.ignore_index, dtype=torch.long)
    loss = loss_fn(logits, target)
    loss.backward()
    assert float(loss) == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    # one labelled pixel: a real loss again
    target[0, 0, 0] = 1
    assert float(loss_fn(logits, target)) > 0


# ---------------------------------------------------------------- SSIM against the reference implementation


def _reference_ssim(probs: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from torchmetrics.functional.image import structural_similarity_index_measure

    mean, full = structural_similarity_index_measure(probs, truth, data_range=1.0, return_full_image=True)
    return mean, full


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_ssim_is_one_minus_torchmetrics_ssim_of_probabilities_and_one_hot_targets(task: str) -> None:
    logits, target, _ = _data(task, seed=3)
    if task == "multiclass":
        target = target.clamp(max=C - 1)  # every pixel labelled
        probs, truth = logits.softmax(1), torch.nn.functional.one_hot(target, C).permute(0, 3, 1, 2).float()
    else:
        probs, truth = logits.sigmoid(), target
    term = build_loss_term(LossTerm(name="ssim"), task=TaskType(task), num_classes=C, ignore_index=IGNORE)
    mean, _ = _reference_ssim(probs, truth)
    torch.testing.assert_close(term(logits, target), 1 - mean, rtol=1e-5, atol=1e-6)


def test_ssim_leaves_ignored_pixels_out_as_the_reference_does_on_masked_images() -> None:
    logits, target, _ = _data("multiclass", seed=4)  # a band of ignored rows
    labelled = (target != IGNORE).unsqueeze(1).float()
    onehot = torch.nn.functional.one_hot(target.clamp(max=C - 1), C).permute(0, 3, 1, 2).float()
    _, full = _reference_ssim(logits.softmax(1) * labelled, onehot * labelled)
    weight = labelled.expand_as(full)
    expected = 1 - (full * weight).sum() / weight.sum()
    term = build_loss_term(LossTerm(name="ssim"), task=TaskType.MULTICLASS, num_classes=C, ignore_index=IGNORE)
    torch.testing.assert_close(term(logits, target), expected, rtol=1e-5, atol=1e-6)


def test_ssim_in_a_weighted_sum_with_focal_and_dice() -> None:
    loss_fn = build_loss(_config("0.5*focal + 0.3*dice + 0.2*ssim"))
    logits, target, _ = _data("multiclass")
    parts = loss_terms(loss_fn, logits, target)
    assert set(parts) == {"focal", "dice", "ssim", "total"} and 0 < parts["ssim"].item() < 2
    torch.testing.assert_close(parts["total"], 0.5 * parts["focal"] + 0.3 * parts["dice"] + 0.2 * parts["ssim"])


def test_ssim_sigma_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"loss 'ssim': parameter 'sigma' must be a number in \(0, 16\]"):
        build_loss(_config({"terms": [{"name": "ssim", "params": {"sigma": 0}}]}))
