"""Optimizers and learning-rate schedules.

:data:`OPTIMIZERS` and :data:`SCHEDULERS` register exactly the names of
:data:`segcore.catalog.OPTIMIZERS` and :data:`segcore.catalog.SCHEDULERS`.

- :func:`build_optimizer` splits the model's parameters into groups: encoder parameters at
  ``lr * encoder_lr_mult``, and no weight decay on biases and normalisation parameters. With
  ``lookahead: true`` the optimizer is wrapped in :class:`Lookahead`.
- :func:`build_scheduler` returns a :class:`Scheduler`, stepped once per optimizer step
  (:meth:`Scheduler.step_batch`) and once per epoch (:meth:`Scheduler.step_epoch`, which only the
  plateau schedule uses). Every schedule starts with ``warmup_epochs`` of linear warm-up
  (fractional epochs allowed), then runs over the remaining steps.

Example:
    >>> optimizer = build_optimizer(model, cfg.optimizer)
    >>> scheduler = build_scheduler(optimizer, cfg.scheduler, epochs=20, steps_per_epoch=100)
    >>> for epoch in range(20):
    ...     for batch in loader:
    ...         ...; optimizer.step(); scheduler.step_batch()
    ...     scheduler.step_epoch(val_miou)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import OneCycleLR

from segcore import catalog as _catalog
from segcore.config import OptimizerConfig, SchedulerConfig
from segcore.errors import CheckpointError, ConfigError
from segcore.registry import Registry

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "Lookahead",
    "Scheduler",
    "build_optimizer",
    "build_scheduler",
    "param_groups",
]

OptimizerFactory = Callable[[list[dict[str, Any]], OptimizerConfig], Optimizer]

#: Optimizer name -> ``factory(param_groups, cfg) -> torch.optim.Optimizer``.
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


def _register_optimizer(name: str) -> Callable[[OptimizerFactory], OptimizerFactory]:
    return OPTIMIZERS.register(name, description=_catalog.OPTIMIZERS[name])


@_register_optimizer("adam")
def _adam(groups: list[dict[str, Any]], cfg: OptimizerConfig) -> Optimizer:
    # ``momentum`` is Adam's beta1; weight decay is the classic L2 penalty
    return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)


@_register_optimizer("adamw")
def _adamw(groups: list[dict[str, Any]], cfg: OptimizerConfig) -> Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)


@_register_optimizer("sgd")
def _sgd(groups: list[dict[str, Any]], cfg: OptimizerConfig) -> Optimizer:
    return torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay
    )


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # 1-D tensors are biases and the scales/shifts of BatchNorm, LayerNorm, GroupNorm, ...
    return param.ndim <= 1 or name.endswith(".bias")


def param_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict[str, Any]]:
    """Split trainable parameters into up to four groups.

    Groups, in this order (empty ones left out): ``decoder`` (everything outside
    ``model.encoder``, at ``cfg.lr``), ``decoder_no_decay``, ``encoder`` (at
    ``cfg.lr * cfg.encoder_lr_mult``) and ``encoder_no_decay``; ``*_no_decay`` groups hold
    biases and normalisation parameters and get ``weight_decay=0``. So ``param_groups[0]["lr"]``
    is the base learning rate.

    Args:
        model: any module; an smp model's ``encoder`` attribute gets the encoder lr.
        cfg: the optimizer config.

    Returns:
        Param-group dicts with ``params``, ``lr``, ``weight_decay`` and ``name``.
    """
    encoder = getattr(model, "encoder", None)
    encoder_ids = {id(p) for p in encoder.parameters()} if isinstance(encoder, nn.Module) else set()
    buckets: dict[str, list[nn.Parameter]] = {
        "decoder": [], "decoder_no_decay": [], "encoder": [], "encoder_no_decay": []
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "encoder" if id(p) in encoder_ids else "decoder"
        buckets[part + ("_no_decay" if _no_decay(name, p) else "")].append(p)
    groups = []
    for key, params in buckets.items():
        if params:
            lr = cfg.lr * (cfg.encoder_lr_mult if key.startswith("encoder") else 1.0)
            wd = 0.0 if key.endswith("no_decay") else cfg.weight_decay
            groups.append({"params": params, "lr": lr, "weight_decay": wd, "name": key})
    if not groups:
        raise ConfigError("the model has no trainable parameters: nothing to optimize")
    return groups


class Lookahead(Optimizer):
    """Lookahead (Zhang et al., 2019) around any optimizer.

    Every ``k`` steps of the inner ("fast") optimizer, the slow weights move ``alpha`` of the way
    towards the fast weights, and the fast weights restart from them::

        slow <- slow + alpha * (fast - slow);  fast <- slow

    ``param_groups`` are the inner optimizer's own (so learning-rate schedules act on it), and
    :meth:`state_dict` holds the inner state plus the slow weights and the step counter, so a
    resumed run continues exactly.

    Args:
        base: the inner optimizer.
        k: inner steps per synchronisation.
        alpha: slow-weight step size, in (0, 1].
    """

    def __init__(self, base: Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        if k < 1:
            raise ConfigError(f"lookahead_k must be >= 1, got {k}")
        if not 0 < alpha <= 1:
            raise ConfigError(f"lookahead_alpha must be in (0, 1], got {alpha}")
        self.base = base
        self.k = k
        self.alpha = alpha
        self.lookahead_steps = 0
        self._slow: list[torch.Tensor] | None = None
        super().__init__(base.param_groups, base.defaults)
        self.param_groups = base.param_groups  # one list: schedulers and GradScaler see the inner groups
        self.state = base.state

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]  # Optimizer.step is overloaded on closure
        """One inner step; every ``k``-th also updates the slow weights."""
        if self._slow is None:  # the slow weights start where this window starts
            self._slow = [p.detach().clone() for p in self._params()]
        loss = self.base.step(closure)
        self.lookahead_steps += 1
        if self.lookahead_steps % self.k == 0:
            for p, slow in zip(self._params(), self._slow):
                slow.add_(p.detach() - slow, alpha=self.alpha)
                p.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict plus ``lookahead``: k, alpha, step count, slow weights."""
        return {
            "base": self.base.state_dict(),
            "lookahead": {
                "k": self.k,
                "alpha": self.alpha,
                "steps": self.lookahead_steps,
                "slow": None if self._slow is None else [s.clone() for s in self._slow],
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (for the same parameters)."""
        if "base" not in state_dict or "lookahead" not in state_dict:
            raise CheckpointError(
                "this optimizer state was saved without Lookahead; resume with the same "
                "optimizer.lookahead setting it was trained with"
            )
        self.base.load_state_dict(state_dict["base"])
        la = state_dict["lookahead"]
        self.k, self.alpha, self.lookahead_steps = int(la["k"]), float(la["alpha"]), int(la["steps"])
        slow = la["slow"]
        if slow is None:
            self._slow = None
            return
        params = self._params()
        if len(slow) != len(params):
            raise CheckpointError(
                f"Lookahead state has {len(slow)} slow tensors for {len(params)} parameters; "
                "it was saved for another model"
            )
        self._slow = [s.detach().to(device=p.device, dtype=p.dtype).clone() for s, p in zip(slow, params)]


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> Optimizer:
    """The optimizer ``cfg`` names over :func:`param_groups` of ``model``, wrapped in
    :class:`Lookahead` when ``cfg.lookahead``.

    Raises:
        ConfigError: unknown optimizer name or no trainable parameter.
    """
    try:
        factory = OPTIMIZERS.get(cfg.name).obj
    except KeyError as exc:
        raise ConfigError(str(exc)) from exc
    optimizer = factory(param_groups(model, cfg), cfg)
    if cfg.lookahead:
        optimizer = Lookahead(optimizer, k=cfg.lookahead_k, alpha=cfg.lookahead_alpha)
    return optimizer


# ---------------------------------------------------------------- schedules
#
# The closed-form schedules are plain functions of the step after warm-up, so warm-up composes
# with every one of them and a resumed run recomputes the exact lr from the step counter.

LrCurve = Callable[[int, int, float, float, SchedulerConfig, int], float]

#: Scheduler name -> how it sets the lr. Entries tagged ``curve`` hold
#: ``curve(step, main_steps, base_lr, min_lr, cfg, steps_per_epoch) -> lr`` for the steps after
#: warm-up (``plateau``, also tagged ``metric``, is then scaled by :meth:`Scheduler.step_epoch`);
#: ``onecycle``, tagged ``torch``, holds a factory of torch's ``OneCycleLR``.
SCHEDULERS: Registry[Callable[..., Any]] = Registry("scheduler")


def _register_scheduler(
    name: str, tags: tuple[str, ...] = ("curve",)
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return SCHEDULERS.register(name, description=_catalog.SCHEDULERS[name], tags=tags)


def _cosine(progress: float, base: float, low: float) -> float:
    return low + (base - low) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


@_register_scheduler("constant")
def _constant_curve(step: int, main: int, base: float, low: float, cfg: SchedulerConfig, spe: int) -> float:
    return base


@_register_scheduler("cosine")
def _cosine_curve(step: int, main: int, base: float, low: float, cfg: SchedulerConfig, spe: int) -> float:
    return _cosine(step / main, base, low)


@_register_scheduler("cosine_restarts")
def _restarts_curve(step: int, main: int, base: float, low: float, cfg: SchedulerConfig, spe: int) -> float:
    # SGDR: cycles of restart_epochs, each restart_mult times longer than the last
    length = cfg.restart_epochs * spe
    while step >= length:
        step -= length
        length *= cfg.restart_mult
    return _cosine(step / length, base, low)


@_register_scheduler("poly")
def _poly_curve(step: int, main: int, base: float, low: float, cfg: SchedulerConfig, spe: int) -> float:
    return low + (base - low) * (1.0 - min(step / main, 1.0)) ** cfg.power


@_register_scheduler("plateau", tags=("curve", "metric"))
def _plateau_curve(step: int, main: int, base: float, low: float, cfg: SchedulerConfig, spe: int) -> float:
    return base  # Scheduler multiplies by the plateau scale


@_register_scheduler("onecycle", tags=("torch",))
def _onecycle(
    optimizer: Optimizer, cfg: SchedulerConfig, *, base_lrs: list[float], total_steps: int, warmup_steps: int
) -> OneCycleLR:
    # OneCycleLR's rising phase is the warm-up; it starts at the base lr, peaks at
    # max_lr_factor x base after the warm-up and ends at min_lr (x the group's share of the
    # base lr). A rise needs two steps: OneCycleLR divides by zero on a one-step phase.
    pct = min(max(warmup_steps, 2) / total_steps, 1.0) if warmup_steps else 0.3
    main_lr = base_lrs[0]
    final_div = main_lr / cfg.min_lr if 0 < cfg.min_lr < main_lr else 1e4
    return OneCycleLR(
        optimizer,
        max_lr=[b * cfg.max_lr_factor for b in base_lrs],
        total_steps=total_steps,
        pct_start=pct,
        div_factor=cfg.max_lr_factor,
        final_div_factor=final_div,
    )


class Scheduler:
    """Per-step learning rates for every param group (see :func:`build_scheduler`).

    Args:
        optimizer: its groups' ``initial_lr`` (set here from ``lr`` when absent) are the base lrs.
        cfg: the scheduler config.
        total_steps: ``epochs * steps_per_epoch``.
        steps_per_epoch: optimizer steps per epoch.
        mode: ``"max"`` when a higher monitored metric is better (plateau only).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        cfg: SchedulerConfig,
        *,
        total_steps: int,
        steps_per_epoch: int,
        mode: Literal["max", "min"] = "max",
    ) -> None:
        if mode not in ("max", "min"):
            raise ConfigError(f"plateau mode must be 'max' or 'min', got {mode!r}")
        self.optimizer = optimizer
        self.cfg = cfg
        self.name = cfg.name
        entry = SCHEDULERS.get(cfg.name)
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
        if self.warmup_steps >= total_steps:
            raise ConfigError(
                f"scheduler.warmup_epochs ({cfg.warmup_epochs:g}) must be shorter than training "
                f"({total_steps / steps_per_epoch:g} epochs); lower warmup_epochs or train longer"
            )
        self.main_steps = total_steps - self.warmup_steps
        self.mode = mode
        self.step_count = 0
        self.plateau_scale = 1.0
        self.plateau_best: float | None = None
        self.plateau_bad_epochs = 0
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.curve: LrCurve | None = None
        self._onecycle: OneCycleLR | None = None
        if "torch" in entry.tags:
            self._onecycle = entry.obj(
                optimizer, cfg, base_lrs=self.base_lrs, total_steps=total_steps, warmup_steps=self.warmup_steps
            )
        else:
            self.curve = entry.obj
            self._apply()

    def _curve_lrs(self, step: int) -> list[float]:
        """The lr of every group after ``step`` optimizer steps (schedules tagged ``curve``)."""
        assert self.curve is not None
        lrs = []
        for base in self.base_lrs:
            low = min(self.cfg.min_lr, base)
            if step < self.warmup_steps:
                lrs.append(base * (step + 1) / self.warmup_steps)
                continue
            lr = self.curve(step - self.warmup_steps, self.main_steps, base, low, self.cfg, self.steps_per_epoch)
            if self.name == "plateau":
                lr = max(lr * self.plateau_scale, low)
            lrs.append(lr)
        return lrs

    def _apply(self) -> None:
        for g, lr in zip(self.optimizer.param_groups, self._curve_lrs(self.step_count)):
            g["lr"] = lr

    def step_batch(self) -> None:
        """Advance one optimizer step (call after ``optimizer.step()``)."""
        self.step_count += 1
        if self._onecycle is not None:
            if self._onecycle.last_epoch < self.total_steps - 1:  # OneCycleLR refuses to go past the end
                self._onecycle.step()
            return
        self._apply()

    def step_epoch(self, metric: float | None = None) -> None:
        """End of an epoch: the plateau schedule compares ``metric`` with the best so far.

        Args:
            metric: the monitored validation value, or None when the epoch was not validated
                (then nothing changes). Other schedules ignore it.
        """
        if self.name != "plateau" or metric is None or math.isnan(metric) or math.isinf(metric):
            return
        better = (
            self.plateau_best is None
            or (self.mode == "max" and metric > self.plateau_best + 1e-4 * abs(self.plateau_best))
            or (self.mode == "min" and metric < self.plateau_best - 1e-4 * abs(self.plateau_best))
        )
        if better:
            self.plateau_best, self.plateau_bad_epochs = float(metric), 0
        else:
            self.plateau_bad_epochs += 1
            if self.plateau_bad_epochs > self.cfg.patience:
                self.plateau_scale *= self.cfg.factor
                self.plateau_bad_epochs = 0
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The current lr of every param group."""
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue with identical learning rates."""
        return {
            "name": self.name,
            "step_count": self.step_count,
            "base_lrs": list(self.base_lrs),
            "plateau": {"scale": self.plateau_scale, "best": self.plateau_best, "bad_epochs": self.plateau_bad_epochs},
            "onecycle": None if self._onecycle is None else self._onecycle.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` and set the groups' lrs for the restored step."""
        if state.get("name") != self.name:
            raise CheckpointError(
                f"scheduler state is for {state.get('name')!r}, not {self.name!r}; resume with the "
                "scheduler the run was started with"
            )
        self.step_count = int(state["step_count"])
        self.base_lrs = [float(b) for b in state["base_lrs"]]
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = base
        p = state["plateau"]
        self.plateau_scale = float(p["scale"])
        self.plateau_best = None if p["best"] is None else float(p["best"])
        self.plateau_bad_epochs = int(p["bad_epochs"])
        if self._onecycle is not None:
            self._onecycle.load_state_dict(state["onecycle"])
            # recompute lr and momentum of the restored step, whatever order the optimizer was restored in
            self._onecycle.last_epoch -= 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self._onecycle.step()
            return
        self._apply()


def build_scheduler(
    optimizer: Optimizer,
    cfg: SchedulerConfig,
    *,
    epochs: int,
    steps_per_epoch: int,
    mode: Literal["max", "min"] = "max",
) -> Scheduler:
    """The learning-rate schedule ``cfg`` names, with its warm-up, over ``epochs * steps_per_epoch``
    optimizer steps.

    Args:
        optimizer: from :func:`build_optimizer`.
        cfg: the scheduler config.
        epochs: training epochs.
        steps_per_epoch: optimizer steps per epoch (after gradient accumulation).
        mode: for ``plateau``: ``"max"`` if a higher monitored metric is better, ``"min"`` for a loss.

    Raises:
        ConfigError: warm-up as long as training, bad sizes, or an unknown name.
    """
    if epochs < 1 or steps_per_epoch < 1:
        raise ConfigError(f"epochs ({epochs}) and steps_per_epoch ({steps_per_epoch}) must be >= 1")
    if cfg.name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {cfg.name!r}; valid choices: {', '.join(SCHEDULERS.names())}")
    return Scheduler(optimizer, cfg, total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch, mode=mode)
