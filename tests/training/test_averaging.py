"""EMA and SWA weight averages against a float64 hand computation, on the CPU and (when present) CUDA."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from segcore.training.averaging import WeightAverage, make_ema, make_swa

DECAY = 0.9  # far from 1 so that every snapshot visibly moves the EMA
STEPS = 5
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda", id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

State = dict[str, torch.Tensor]


def _tiny(device: str = "cpu") -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    return model.to(device)


@torch.no_grad()
def _step(model: nn.Module, gen: torch.Generator) -> None:
    """Perturb every parameter and run a train-mode forward (BN statistics and counter change)."""
    device = next(model.parameters()).device
    for p in model.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=gen).to(device))
    model.train()
    model(torch.randn(2, 3, 8, 8, generator=gen).to(device))


def _cpu64(state: State) -> State:
    state = {k: v.detach().cpu() for k, v in state.items()}
    return {k: v.double() if v.is_floating_point() else v for k, v in state.items()}


def _run(device: str) -> tuple[WeightAverage, WeightAverage, nn.Module, list[State]]:
    """EMA and SWA fed the same ``STEPS`` snapshots; returns them, the model and the snapshots."""
    model = _tiny(device)
    ema, swa = make_ema(model, DECAY), make_swa(model)
    gen = torch.Generator().manual_seed(1)
    snapshots = []
    for _ in range(STEPS):
        _step(model, gen)
        ema.update(model)
        swa.update(model)
        snapshots.append(_cpu64(model.state_dict()))
    return ema, swa, model, snapshots


def _assert_close(got: State, want: State, **tol: float) -> None:
    assert got.keys() == want.keys()
    for k in want:
        if want[k].is_floating_point():
            torch.testing.assert_close(got[k], want[k], check_dtype=False, msg=k, **tol)
        else:
            assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("device", DEVICES)
def test_ema_matches_hand_computation(device: str) -> None:
    ema, _, model, snaps = _run(device)
    # e_1 = w_1 (the first update copies), then e_t = d * e_{t-1} + (1 - d) * w_t, buffers included.
    want = {k: v.clone() for k, v in snaps[0].items()}
    for snap in snaps[1:]:
        for k, v in snap.items():
            want[k] = DECAY * want[k] + (1 - DECAY) * v if v.is_floating_point() else v
    _assert_close(_cpu64(ema.module.state_dict()), want, rtol=1e-5, atol=1e-6)
    assert int(ema.module[1].num_batches_tracked) == int(model[1].num_batches_tracked) == STEPS


@pytest.mark.parametrize("device", DEVICES)
def test_swa_matches_hand_computation(device: str) -> None:
    _, swa, model, snaps = _run(device)
    param_names = {name for name, _ in model.named_parameters()}
    # Parameters: the plain mean of the snapshots. Buffers: the model's latest, copied exactly.
    want = {k: sum(s[k] for s in snaps) / STEPS if k in param_names else snaps[-1][k] for k in snaps[0]}
    got = _cpu64(swa.module.state_dict())
    _assert_close(got, want, rtol=1e-5, atol=1e-6)
    for name, buf in model.named_buffers():
        assert torch.equal(swa.module.get_buffer(name), buf), name


@needs_cuda
def test_cuda_matches_cpu() -> None:
    on_cpu, on_gpu = _run("cpu"), _run("cuda")
    for cpu_avg, gpu_avg in zip(on_cpu[:2], on_gpu[:2], strict=True):
        assert next(gpu_avg.module.parameters()).is_cuda
        # Loose on floats: cuDNN may run the convolution in TF32, which moves the BN statistics.
        got, want = _cpu64(gpu_avg.module.state_dict()), _cpu64(cpu_avg.module.state_dict())
        _assert_close(got, want, rtol=1e-3, atol=1e-4)


@needs_cuda
def test_update_does_not_sync_on_cuda() -> None:
    model = _tiny("cuda").to(memory_format=torch.channels_last)
    averages = [make_ema(model, DECAY), make_swa(model)]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        _step(model, gen)
        torch.cuda.synchronize()
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for avg in averages:
                avg.update(model)
                assert avg.n_averaged >= 1
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    for avg in averages:
        assert avg.module[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_module_keeps_device_memory_format_and_eval_mode() -> None:
    model = _tiny().to(memory_format=torch.channels_last)
    for avg in (make_ema(model, DECAY), make_swa(model)):
        avg.update(model)
        weight = avg.module[0].weight
        assert weight.device == model[0].weight.device
        assert weight.is_contiguous(memory_format=torch.channels_last)
        assert weight is not model[0].weight and not avg.module.training


def test_n_averaged_counts_updates_as_an_int() -> None:
    model = _tiny()
    ema, swa = make_ema(model, DECAY), make_swa(model)
    assert ema.n_averaged == swa.n_averaged == 0
    for _ in range(3):
        ema.update(model)
        swa.update(model)
    assert type(ema.n_averaged) is int and ema.n_averaged == swa.n_averaged == 3


@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_state_dict_round_trip_restores_the_average(kind: str) -> None:
    make = (lambda m: make_ema(m, DECAY)) if kind == "ema" else make_swa
    model, gen = _tiny(), torch.Generator().manual_seed(1)
    saved = make(model)
    for _ in range(3):
        _step(model, gen)
        saved.update(model)
    restored = make(_tiny())
    restored.load_state_dict(saved.state_dict())
    assert restored.n_averaged == 3
    _assert_close(restored.module.state_dict(), saved.module.state_dict(), rtol=0, atol=0)
    _step(model, gen)  # and both continue identically
    saved.update(model)
    restored.update(model)
    _assert_close(restored.module.state_dict(), saved.module.state_dict(), rtol=0, atol=0)


def test_state_dict_has_averaged_model_keys() -> None:
    model = _tiny()
    old = AveragedModel(model, use_buffers=True).state_dict()
    assert set(make_swa(model).state_dict()) == set(old)
    assert "n_averaged" in old and "module.1.num_batches_tracked" in old


def test_loads_an_averaged_model_state_dict() -> None:
    """Run folders hold ``AveragedModel`` state dicts (``module.<name>`` + ``n_averaged``)."""
    model, gen = _tiny(), torch.Generator().manual_seed(1)
    old = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY), use_buffers=True)
    for _ in range(3):
        _step(model, gen)
        old.update_parameters(model)
    ema = make_ema(_tiny(), DECAY)
    ema.load_state_dict(old.state_dict())
    assert ema.n_averaged == 3
    _assert_close(ema.module.state_dict(), old.module.state_dict(), rtol=0, atol=0)


def test_rejects_a_state_dict_without_n_averaged() -> None:
    with pytest.raises(KeyError, match="n_averaged"):
        make_swa(_tiny()).load_state_dict(_tiny().state_dict())


def test_rejects_a_decay_outside_0_1() -> None:
    with pytest.raises(ValueError, match="decay"):
        make_ema(_tiny(), 1.5)
