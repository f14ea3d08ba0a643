"""Loss terms and their weighted sum.

Every name in :data:`segcore.catalog.LOSSES` is registered in :data:`LOSSES` with a factory
that builds the term from smp (:mod:`segmentation_models_pytorch.losses`) or torch; segcore adds
only the composition. :func:`build_loss` turns ``config.loss`` (e.g. ``"0.6*ce + 0.4*jaccard"``)
into a :class:`WeightedLoss`.

Inputs of every term and of the sum:

- ``logits``: ``[N, C, H, W]`` raw model output (computed in float32 whatever the autocast dtype).
- ``target``: multiclass ``[N, H, W]`` int64 class indices, ``ignore_index`` where unlabelled;
  multilabel ``[N, C, H, W]`` float in ``{0, 1}``.

Multiclass pixels labelled ``ignore_index`` contribute nothing to any term (neither value nor
gradient): torch's cross-entropy and every smp loss used here (Dice, Jaccard, Tversky, Focal,
Lovasz) take ``ignore_index`` natively, and the SSIM term (torchmetrics' SSIM, :mod:`segcore._ssim`)
masks them itself; a batch with no labelled pixel gives a loss of 0. Installed plugins add terms
(entry-point group ``segboard.losses``, see ``docs/plugins.md``) with the same factory contract.
smp's multiclass focal loss is one-vs-rest: a sigmoid focal term per class, averaged over classes.

Example:
    >>> loss_fn = build_loss(cfg)                         # cfg.loss = "0.6*ce + 0.4*jaccard"
    >>> loss = loss_fn(logits, target)                    # weighted sum, a scalar tensor
    >>> parts = loss_terms(loss_fn, logits, target)       # {"ce": ..., "jaccard": ..., "total": ...}
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from segcore import catalog as _catalog, plugins as _plugins
from segcore.config import ExperimentConfig, LossTerm, TaskType
from segcore.errors import ConfigError, TrainingError
from segcore.registry import Entry, Registry

__all__ = [
    "LOSSES",
    "LossFactory",
    "WeightedLoss",
    "build_loss",
    "build_loss_term",
    "loss_terms",
]

#: A factory: ``factory(*, task, num_classes, ignore_index, **params) -> nn.Module`` whose
#: forward is ``(logits [N, C, H, W] float32, target) -> scalar``.
LossFactory = Callable[..., nn.Module]

_CONTEXT = ("task", "num_classes", "ignore_index")


def _plugin_entry(item: _plugins.PluginItem) -> Entry[LossFactory]:
    """A plugin's loss factory behind the built-ins' contract: declared params only, an nn.Module out."""

    def factory(*, task: TaskType, num_classes: int, ignore_index: int, **params: Any) -> nn.Module:
        module = item.obj(task=task, num_classes=num_classes, ignore_index=ignore_index,
                          **_plugins.checked_params(item, params))
        if not isinstance(module, nn.Module):
            raise ConfigError(f"plugin loss {item.source} returned a {type(module).__name__}, not a torch nn.Module")
        return module

    keyword = inspect.Parameter.KEYWORD_ONLY
    factory.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # read by build_loss_term
        [inspect.Parameter(n, keyword) for n in (*_CONTEXT, *(p.name for p in item.params))]
    )
    defaults = {p.name: p.default for p in item.params if not p.required}
    return Entry(item.name, factory, item.summary(), defaults, item.tasks)


#: Loss name -> factory: the built-ins, then installed plugins' terms. ``defaults`` lists each
#: term's params and their default values.
LOSSES: Registry[LossFactory] = Registry("loss", plugins="losses", adapt=_plugin_entry)


def _register(name: str, defaults: dict[str, Any]) -> Callable[[LossFactory], LossFactory]:
    meta = _catalog.LOSSES[name]
    return LOSSES.register(
        name, description=meta["description"], defaults=defaults, tags=tuple(meta["tasks"])
    )


def _smp_mode(task: TaskType) -> str:
    return smp_losses.MULTICLASS_MODE if task is TaskType.MULTICLASS else smp_losses.MULTILABEL_MODE


def _ignore(task: TaskType, ignore_index: int) -> int | None:
    # multilabel targets are 0/1 per class: there is no ignore label to honour
    return ignore_index if task is TaskType.MULTICLASS else None


def _fraction(
    term: str, param: str, value: Any, *, low: float = 0.0, high: float = 1.0, closed_high: bool = False
) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value and (value <= high if closed_high else value < high)
    if not ok:
        bracket = "]" if closed_high else ")"
        raise ConfigError(
            f"loss {term!r}: parameter {param!r} must be a number in [{low}, {high}{bracket}, got {value!r}"
        )
    return float(value)


def _positive(term: str, param: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"loss {term!r}: parameter {param!r} must be a positive number, got {value!r}")
    return float(value)


def _non_negative(term: str, param: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (value >= 0 and math.isfinite(value)):
        raise ConfigError(f"loss {term!r}: parameter {param!r} must be a number >= 0, got {value!r}")
    return float(value)


def _per_class(term: str, param: str, value: Any, num_classes: int) -> torch.Tensor:
    if (
        not isinstance(value, Sequence)
        or len(value) != num_classes
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise ConfigError(
            f"loss {term!r}: parameter {param!r} needs one non-negative number per class "
            f"({num_classes}), got {value!r}"
        )
    return torch.tensor([float(v) for v in value], dtype=torch.float32)


def _bool(term: str, param: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"loss {term!r}: parameter {param!r} must be true or false, got {value!r}")
    return value


# ---------------------------------------------------------------- cross-entropy family


def _cross_entropy(
    ignore_index: int, weights: torch.Tensor | None = None, smoothing: float = 0.0
) -> nn.Module:
    # torch's loss averages over labelled pixels only (weighted by class weight when given)
    return nn.CrossEntropyLoss(weight=weights, ignore_index=ignore_index, label_smoothing=smoothing)


@_register("ce", {})
def _make_ce(*, task: TaskType, num_classes: int, ignore_index: int) -> nn.Module:
    return _cross_entropy(ignore_index)


@_register("weighted_ce", {"weights": None, "smoothing": 0.0})
def _make_weighted_ce(
    *, task: TaskType, num_classes: int, ignore_index: int, weights: Any = None, smoothing: float = 0.0
) -> nn.Module:
    if weights == "auto":
        raise ConfigError(
            "loss 'weighted_ce': weights 'auto' come from the training split's pixel shares, once per run: resolve "
            "the config with segcore.data.policy.resolve_data_policy before building the loss"
        )
    w = _per_class("weighted_ce", "weights", weights, num_classes)
    if float(w.sum()) <= 0:
        raise ConfigError("loss 'weighted_ce': parameter 'weights' must not be all zero")
    return _cross_entropy(ignore_index, w, _fraction("weighted_ce", "smoothing", smoothing))


@_register("label_smoothing_ce", {"smoothing": 0.1})
def _make_label_smoothing_ce(
    *, task: TaskType, num_classes: int, ignore_index: int, smoothing: float = 0.1
) -> nn.Module:
    return _cross_entropy(ignore_index, smoothing=_fraction("label_smoothing_ce", "smoothing", smoothing))


@_register("bce", {"pos_weight": None})
def _make_bce(*, task: TaskType, num_classes: int, ignore_index: int, pos_weight: Any = None) -> nn.Module:
    pw = None if pos_weight is None else _per_class("bce", "pos_weight", pos_weight, num_classes).view(-1, 1, 1)
    return nn.BCEWithLogitsLoss(pos_weight=pw)


@_register("soft_bce", {"smoothing": 0.1, "pos_weight": None})
def _make_soft_bce(
    *, task: TaskType, num_classes: int, ignore_index: int, smoothing: float = 0.1, pos_weight: Any = None
) -> nn.Module:
    pw = None if pos_weight is None else _per_class("soft_bce", "pos_weight", pos_weight, num_classes).view(-1, 1, 1)
    return smp_losses.SoftBCEWithLogitsLoss(
        smooth_factor=_fraction("soft_bce", "smoothing", smoothing, high=0.5), ignore_index=None, pos_weight=pw
    )


# ---------------------------------------------------------------- region and focal losses


@_register("focal", {"gamma": 2.0, "alpha": None})
def _make_focal(
    *, task: TaskType, num_classes: int, ignore_index: int, gamma: float = 2.0, alpha: float | None = None
) -> nn.Module:
    return smp_losses.FocalLoss(
        _smp_mode(task),
        gamma=_non_negative("focal", "gamma", gamma),
        alpha=None if alpha is None else _fraction("focal", "alpha", alpha, closed_high=True),
        ignore_index=_ignore(task, ignore_index),
    )


@_register("dice", {"smooth": 0.0, "log_loss": False})
def _make_dice(
    *, task: TaskType, num_classes: int, ignore_index: int, smooth: float = 0.0, log_loss: bool = False
) -> nn.Module:
    return smp_losses.DiceLoss(
        _smp_mode(task),
        smooth=_non_negative("dice", "smooth", smooth),
        log_loss=_bool("dice", "log_loss", log_loss),
        ignore_index=_ignore(task, ignore_index),
    )


@_register("jaccard", {"smooth": 0.0, "log_loss": False})
def _make_jaccard(
    *, task: TaskType, num_classes: int, ignore_index: int, smooth: float = 0.0, log_loss: bool = False
) -> nn.Module:
    return smp_losses.JaccardLoss(
        _smp_mode(task),
        smooth=_non_negative("jaccard", "smooth", smooth),
        log_loss=_bool("jaccard", "log_loss", log_loss),
        ignore_index=_ignore(task, ignore_index),
    )


def _tversky(name: str, task: TaskType, ignore_index: int, alpha: Any, beta: Any, gamma: Any, smooth: Any) -> nn.Module:
    # smp: TI = TP / (TP + alpha * FP + beta * FN); loss = mean_c(1 - TI_c) ** gamma
    return smp_losses.TverskyLoss(
        _smp_mode(task),
        alpha=_non_negative(name, "alpha", alpha),
        beta=_non_negative(name, "beta", beta),
        gamma=_positive(name, "gamma", gamma),
        smooth=_non_negative(name, "smooth", smooth),
        ignore_index=_ignore(task, ignore_index),
    )


# alpha=0.3, beta=0.7 penalise missed pixels more than false alarms (the usual choice for
# small structures); alpha = beta = 0.5 would make Tversky the Dice loss.
@_register("tversky", {"alpha": 0.3, "beta": 0.7, "smooth": 0.0})
def _make_tversky(
    *, task: TaskType, num_classes: int, ignore_index: int, alpha: float = 0.3, beta: float = 0.7, smooth: float = 0.0
) -> nn.Module:
    return _tversky("tversky", task, ignore_index, alpha, beta, 1.0, smooth)


@_register("focal_tversky", {"alpha": 0.3, "beta": 0.7, "gamma": 4 / 3, "smooth": 0.0})
def _make_focal_tversky(
    *,
    task: TaskType,
    num_classes: int,
    ignore_index: int,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 4 / 3,
    smooth: float = 0.0,
) -> nn.Module:
    return _tversky("focal_tversky", task, ignore_index, alpha, beta, gamma, smooth)


@_register("lovasz", {"per_image": False})
def _make_lovasz(*, task: TaskType, num_classes: int, ignore_index: int, per_image: bool = False) -> nn.Module:
    return smp_losses.LovaszLoss(
        _smp_mode(task), per_image=_bool("lovasz", "per_image", per_image), ignore_index=_ignore(task, ignore_index)
    )


@_register("ssim", {"sigma": 1.5})
def _make_ssim(*, task: TaskType, num_classes: int, ignore_index: int, sigma: float = 1.5) -> nn.Module:
    from segcore._ssim import SSIMLoss

    return SSIMLoss(task, ignore_index=_ignore(task, ignore_index), sigma=sigma)


# ---------------------------------------------------------------- composition


def build_loss_term(term: LossTerm, *, task: TaskType, num_classes: int, ignore_index: int = 255) -> nn.Module:
    """Build one term (unweighted).

    Args:
        term: name, weight (unused here) and params of the term.
        task: multiclass or multilabel.
        num_classes: ``C``.
        ignore_index: multiclass label ignored by the term.

    Raises:
        ConfigError: unknown parameter, bad value, or a term not defined for ``task``.
    """
    entry = LOSSES.get(term.name)
    if task.value not in entry.tags:
        raise ConfigError(
            f"loss {term.name!r} is for {' or '.join(entry.tags)} tasks, not {task.value}; "
            f"choose from: {', '.join(e.name for e in LOSSES if task.value in e.tags)}"
        )
    accepted = [n for n in inspect.signature(entry.obj).parameters if n not in _CONTEXT]
    for key in term.params:
        if key not in accepted:
            valid = ", ".join(accepted) or "none"
            raise ConfigError(
                f"loss {term.name!r} has no parameter {key!r}; its parameters are: {valid}"
            )
    return entry.obj(task=task, num_classes=num_classes, ignore_index=ignore_index, **term.params)


class WeightedLoss(nn.Module):
    """``sum_i weight_i * term_i(logits, target)``.

    Args:
        terms: ``(key, weight, module)`` per term; ``key`` names the term in :func:`loss_terms`.
        task: multiclass or multilabel (decides the target's expected shape).
        ignore_index: multiclass label that is not scored.
    """

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]], *, task: TaskType, ignore_index: int) -> None:
        super().__init__()
        if not terms:
            raise ConfigError("a loss needs at least one term, e.g. 'ce'")
        self.keys = [k for k, _, _ in terms]
        self.weights = [float(w) for _, w, _ in terms]
        self.terms = nn.ModuleList([m for _, _, m in terms])
        self.task = task
        self.ignore_index = ignore_index

    def _check(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if logits.ndim != 4:
            raise TrainingError(f"loss expects logits [N, C, H, W], got shape {tuple(logits.shape)}")
        n, c, h, w = logits.shape
        if self.task is TaskType.MULTICLASS:
            if target.shape != (n, h, w) or target.dtype != torch.int64:
                raise TrainingError(
                    f"multiclass loss expects an int64 target [N, H, W] = {(n, h, w)}, "
                    f"got {target.dtype} {tuple(target.shape)}"
                )
        elif target.shape != logits.shape:
            raise TrainingError(
                f"multilabel loss expects a float target [N, C, H, W] = {(n, c, h, w)}, got {tuple(target.shape)}"
            )

    def forward_terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every unweighted term and the weighted ``"total"``, in one pass.

        Args:
            logits: ``[N, C, H, W]``.
            target: ``[N, H, W]`` int64 (multiclass) or ``[N, C, H, W]`` float (multilabel).

        Returns:
            ``{key: scalar tensor}`` per term plus ``"total"``, all attached to the graph.
        """
        self._check(logits, target)
        logits = logits.float()  # region losses are unstable in half precision
        if self.task is TaskType.MULTILABEL:
            target = target.float()
            values = {k: term(logits, target) for k, term in zip(self.keys, self.terms)}
        else:
            # A batch with nothing labelled (e.g. a crop inside an ignored region) would make several
            # terms divide by zero. It is scored on a stand-in target and weighed 0, decided on the
            # device: reading the flag on the host would stall every training step on a GPU.
            labelled = (target != self.ignore_index).any()
            target = torch.where(labelled, target, torch.zeros_like(target))
            values = {k: term(logits, target) * labelled for k, term in zip(self.keys, self.terms)}
        total = sum(w * values[k] for k, w in zip(self.keys, self.weights))
        return {**values, "total": total}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted sum (a scalar); see :meth:`forward_terms` for shapes."""
        return self.forward_terms(logits, target)["total"]


def loss_terms(loss: WeightedLoss, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each term's unweighted value plus the weighted ``"total"`` (for logging per term).

    Terms named twice get ``_2``, ``_3`` suffixes. Call ``backward()`` on ``["total"]`` to train
    with the same forward pass.
    """
    return loss.forward_terms(logits, target)


def build_loss(cfg: ExperimentConfig) -> WeightedLoss:
    """The weighted sum of ``cfg.loss.terms`` for ``cfg.data``'s task, classes and ignore index.

    Args:
        cfg: the experiment config.

    Returns:
        A :class:`WeightedLoss`; ``loss(logits [N, C, H, W], target)`` is a scalar tensor.

    Raises:
        ConfigError: a term's parameter is unknown or out of range.
    """
    task, num_classes, ignore = cfg.data.task, cfg.data.num_classes, cfg.data.ignore_index
    built: list[tuple[str, float, nn.Module]] = []
    seen: dict[str, int] = {}
    for term in cfg.loss.terms:
        seen[term.name] = seen.get(term.name, 0) + 1
        key = term.name if seen[term.name] == 1 else f"{term.name}_{seen[term.name]}"
        built.append((key, term.weight, build_loss_term(term, task=task, num_classes=num_classes, ignore_index=ignore)))
    return WeightedLoss(built, task=task, ignore_index=ignore)
