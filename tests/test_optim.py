"""Optimizer param groups, Lookahead, and learning-rate curves at known steps."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from segcore import catalog
from segcore.config import ModelConfig, OptimizerConfig, SchedulerConfig
from segcore.errors import CheckpointError, ConfigError
from segcore.models import build_model
from segcore.training.optim import (
    OPTIMIZERS,
    SCHEDULERS,
    Lookahead,
    build_optimizer,
    build_scheduler,
    param_groups,
)

torch.set_num_threads(1)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _lrs(opt: torch.optim.Optimizer) -> list[float]:
    return [g["lr"] for g in opt.param_groups]


def test_registries_match_catalog() -> None:
    assert sorted(OPTIMIZERS.names()) == sorted(catalog.OPTIMIZERS)
    assert sorted(SCHEDULERS.names()) == sorted(catalog.SCHEDULERS)
    assert all(e.description == catalog.SCHEDULERS[e.name] for e in SCHEDULERS)


def test_param_groups_split() -> None:
    model = Tiny()
    groups = {g["name"]: g for g in param_groups(model, OptimizerConfig(lr=1e-3, weight_decay=0.01, encoder_lr_mult=0.1))}
    assert list(groups) == ["decoder", "decoder_no_decay", "encoder", "encoder_no_decay"]
    assert groups["decoder"]["params"] == [model.head.weight]
    assert groups["decoder_no_decay"]["params"] == [model.head.bias]
    assert groups["encoder"]["params"] == [model.encoder[0].weight]
    assert groups["encoder_no_decay"]["params"] == [model.encoder[1].weight, model.encoder[1].bias]
    assert groups["encoder"]["lr"] == pytest.approx(1e-4) and groups["decoder"]["lr"] == 1e-3
    assert groups["decoder"]["weight_decay"] == 0.01 and groups["encoder_no_decay"]["weight_decay"] == 0.0


def test_param_groups_cover_an_smp_model_once() -> None:
    model = build_model(ModelConfig(arch="FPN", encoder="resnet18"), 2)
    model.encoder.conv1.weight.requires_grad_(False)
    groups = param_groups(model, OptimizerConfig(encoder_lr_mult=0.5))
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(trainable) and len(ids) == len(set(ids))
    enc = {id(p) for p in model.encoder.parameters()}
    for g in groups:
        assert all((id(p) in enc) == g["name"].startswith("encoder") for p in g["params"])
        assert all((p.ndim <= 1) == g["name"].endswith("no_decay") for p in g["params"])


@pytest.mark.parametrize("name", OPTIMIZERS.names())
@pytest.mark.parametrize("lookahead", [False, True])
def test_every_optimizer_trains(name: str, lookahead: bool) -> None:
    torch.manual_seed(0)
    model = Tiny()
    opt = build_optimizer(model, OptimizerConfig(name=name, lr=0.05, lookahead=lookahead, lookahead_k=2))
    assert isinstance(opt, Lookahead) == lookahead
    x, y = torch.randn(4, 3, 8, 8), torch.randn(4, 2, 6, 6)
    first = None
    for _ in range(8):
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert (model(x) - y).square().mean().item() < first


def test_lookahead_by_hand() -> None:
    # loss = p, plain SGD lr 0.1: fast weights fall by 0.1 a step; k=2, alpha=0.5
    p = nn.Parameter(torch.tensor([1.0]))
    opt = Lookahead(torch.optim.SGD([p], lr=0.1), k=2, alpha=0.5)
    expected = [0.9, 0.9, 0.8, 0.8]  # after steps 1..4: 0.9; sync(1, 0.8) = 0.9; 0.8; sync(0.9, 0.7) = 0.8
    for want in expected:
        opt.zero_grad()
        p.sum().backward()
        opt.step()
        assert p.item() == pytest.approx(want)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 2, 6, 6, generator=g)
        opt.zero_grad()
        (model(x) - y).square().mean().backward()
        opt.step()


def test_lookahead_resume_is_exact() -> None:
    cfg = OptimizerConfig(name="adamw", lr=0.01, lookahead=True, lookahead_k=3)
    torch.manual_seed(0)
    a = Tiny()
    opt_a = build_optimizer(a, cfg)
    _train(a, opt_a, 4, seed=1)
    saved_model, saved_opt = copy.deepcopy(a.state_dict()), copy.deepcopy(opt_a.state_dict())
    _train(a, opt_a, 5, seed=2)

    b = Tiny()
    b.load_state_dict(saved_model)
    opt_b = build_optimizer(b, cfg)
    opt_b.load_state_dict(saved_opt)
    _train(b, opt_b, 5, seed=2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_lookahead_rejects_plain_state() -> None:
    model = Tiny()
    plain = build_optimizer(model, OptimizerConfig()).state_dict()
    with pytest.raises(CheckpointError, match="lookahead"):
        build_optimizer(model, OptimizerConfig(lookahead=True)).load_state_dict(plain)


def test_lookahead_groups_are_the_inner_groups() -> None:
    opt = build_optimizer(Tiny(), OptimizerConfig(lookahead=True))
    build_scheduler(opt, SchedulerConfig(name="cosine", warmup_epochs=1), epochs=3, steps_per_epoch=4)
    assert opt.base.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(1e-3 / 4)


def _setup(name: str, **kw: object) -> tuple[torch.optim.Optimizer, object]:
    opt = build_optimizer(Tiny(), OptimizerConfig(name="sgd", lr=1.0, encoder_lr_mult=0.1))
    epochs = kw.pop("epochs", 2)
    spe = kw.pop("spe", 5)
    mode = kw.pop("mode", "max")
    sched = build_scheduler(opt, SchedulerConfig(name=name, min_lr=0.01, **kw), epochs=epochs, steps_per_epoch=spe, mode=mode)
    return opt, sched


def _curve(sched: object, steps: int) -> list[float]:
    """lr of group 0 after 0..steps optimizer steps."""
    out = [sched.get_last_lr()[0]]
    for _ in range(steps):
        sched.step_batch()
        out.append(sched.get_last_lr()[0])
    return out


def _cos(t: float, base: float = 1.0, low: float = 0.01) -> float:
    return low + (base - low) * 0.5 * (1 + math.cos(math.pi * t))


def test_constant_with_warmup() -> None:
    _, s = _setup("constant", warmup_epochs=1, epochs=5, spe=10)
    lrs = _curve(s, 20)
    assert lrs[0] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.5) and lrs[9] == pytest.approx(1.0)
    assert lrs[10:] == pytest.approx([1.0] * 11)


def test_cosine_curve_and_group_lrs() -> None:
    opt, s = _setup("cosine")  # 10 steps, no warm-up
    lrs = _curve(s, 10)
    assert lrs[0] == 1.0 and lrs[5] == pytest.approx(0.505) and lrs[10] == pytest.approx(0.01)
    assert s.get_last_lr() == pytest.approx([0.01, 0.01, 0.01, 0.01])
    _, s = _setup("cosine")
    for _ in range(5):
        s.step_batch()
    assert s.get_last_lr() == pytest.approx([0.505, 0.505, _cos(0.5, 0.1), _cos(0.5, 0.1)])


def test_cosine_with_fractional_warmup() -> None:
    _, s = _setup("cosine", warmup_epochs=0.5, epochs=3, spe=10)  # 5 warm-up steps, then 25
    lrs = _curve(s, 31)
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[5] == pytest.approx(1.0) and lrs[15] == pytest.approx(_cos(10 / 25)) and lrs[30] == pytest.approx(0.01)
    assert lrs[31] == pytest.approx(0.01)  # past the end it stays at min_lr


def test_cosine_restarts() -> None:
    _, s = _setup("cosine_restarts", restart_epochs=1, restart_mult=2, epochs=4, spe=4)
    lrs = _curve(s, 12)
    assert lrs[0] == 1.0 and lrs[2] == pytest.approx(0.505) and lrs[3] == pytest.approx(_cos(0.75))
    assert lrs[4] == 1.0 and lrs[8] == pytest.approx(0.505) and lrs[12] == 1.0


def test_poly() -> None:
    _, s = _setup("poly", power=2.0)
    lrs = _curve(s, 10)
    assert lrs[5] == pytest.approx(0.01 + 0.99 * 0.25) and lrs[10] == pytest.approx(0.01)


def test_plateau_max_and_min() -> None:
    _, s = _setup("plateau", patience=1, factor=0.5, epochs=10)
    seen = []
    for metric in [0.5, 0.6, 0.6, None, 0.6, 0.6, 0.6]:
        s.step_epoch(metric)
        seen.append(s.get_last_lr()[0])
    # bad epochs: 0.6 (1), None (skipped), 0.6 (2 > patience: halve), 0.6 (1), 0.6 (2: halve)
    assert seen == pytest.approx([1, 1, 1, 1, 0.5, 0.5, 0.25])
    _, s = _setup("plateau", patience=0, factor=0.1, epochs=10, mode="min")
    for metric in [1.0, 0.9, 0.95]:
        s.step_epoch(metric)
    assert s.get_last_lr()[0] == pytest.approx(0.1)
    for _ in range(3):
        s.step_epoch(2.0)
    assert s.get_last_lr()[0] == pytest.approx(0.01)  # floored at min_lr


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_onecycle() -> None:
    opt, s = _setup("onecycle", warmup_epochs=1, epochs=4, spe=5, max_lr_factor=10)
    lrs = _curve(s, 21)  # one step more than planned is ignored, not an error
    assert lrs[0] == pytest.approx(1.0)  # starts at the base lr
    assert lrs[4] == pytest.approx(10.0) and max(lrs) == pytest.approx(10.0)  # peak at the end of warm-up
    assert lrs[19] == pytest.approx(0.01) and lrs[21] == pytest.approx(0.01)  # ends at min_lr
    assert s.get_last_lr()[2] == pytest.approx(0.001)  # encoder group keeps its share


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize(("total", "warmup_steps"), [(1, 0), (2, 0), (2, 1), (3, 1), (3, 2), (10, 1), (10, 9)])
def test_onecycle_short_runs(total: int, warmup_steps: int) -> None:
    opt = build_optimizer(Tiny(), OptimizerConfig(lr=1.0))
    s = build_scheduler(
        opt, SchedulerConfig(name="onecycle", warmup_epochs=warmup_steps / total, min_lr=0.01),
        epochs=1, steps_per_epoch=total,
    )
    lrs = _curve(s, total)
    assert all(math.isfinite(v) and v <= 10.0 + 1e-9 for v in lrs)
    if total > 2:
        assert lrs[-1] == pytest.approx(0.01)


def test_warmup_longer_than_training() -> None:
    opt = build_optimizer(Tiny(), OptimizerConfig())
    with pytest.raises(ConfigError, match="warmup_epochs"):
        build_scheduler(opt, SchedulerConfig(warmup_epochs=3), epochs=3, steps_per_epoch=4)


@pytest.mark.parametrize("name", SCHEDULERS.names())
@pytest.mark.parametrize("optimizer_first", [True, False])
def test_state_dict_round_trip_mid_schedule(name: str, optimizer_first: bool) -> None:
    spe, metrics = 4, [0.3, 0.2, 0.2, 0.1, 0.1, 0.1]

    def run(opt: torch.optim.Optimizer, sched: object, start: int, stop: int) -> list[list[float]]:
        out = []
        for step in range(start, stop):
            opt.step()
            sched.step_batch()
            if (step + 1) % spe == 0:
                sched.step_epoch(metrics[(step + 1) // spe - 1])
            out.append(sched.get_last_lr())
        return out

    cfg = SchedulerConfig(name=name, warmup_epochs=0.5, patience=0, restart_epochs=1, min_lr=1e-4)
    ocfg = OptimizerConfig(name="adamw", lookahead=name == "cosine", encoder_lr_mult=0.1)
    model = Tiny()
    opt = build_optimizer(model, ocfg)
    sched = build_scheduler(opt, cfg, epochs=6, steps_per_epoch=spe)
    run(opt, sched, 0, 9)
    saved_opt, saved_sched = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())
    expected = run(opt, sched, 9, 24)

    opt2 = build_optimizer(model, ocfg)
    sched2 = build_scheduler(opt2, cfg, epochs=6, steps_per_epoch=spe)
    if optimizer_first:
        opt2.load_state_dict(saved_opt)
        sched2.load_state_dict(saved_sched)
    else:
        sched2.load_state_dict(saved_sched)
        opt2.load_state_dict(saved_opt)
    assert run(opt2, sched2, 9, 24) == expected
