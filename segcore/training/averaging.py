"""Weight averages of a model: an EMA updated every optimizer step, an SWA mean updated every epoch.

Both are timm's ``ModelEmaV3`` driven with an explicit decay: its foreach update lerps floating
tensors and copies the others (``num_batches_tracked``), all on the device with Python-float weights,
so an update never waits for the GPU. torch's ``AveragedModel`` is not used: its ``update_parameters``
reads its ``n_averaged`` tensor on the host at every update (a device sync once the tensor is on the
GPU, a blocking copy to it otherwise), and with ``use_buffers=True`` its SWA path divides integer
buffers on CUDA ("Integer division with addcdiv is no longer supported").

Example:
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    >>> ema = make_ema(model, decay=0.999)
    >>> ema.update(model)  # after each optimizer step
    >>> ema.n_averaged
    1
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from timm.utils import ModelEmaV3
from torch import nn

__all__ = ["WeightAverage", "make_ema", "make_swa"]


class WeightAverage:
    """An averaged copy of a model's weights, updated in place without host-device syncs.

    Build one with `make_ema` or `make_swa`. In both, the first `update` copies the model (the
    convention of torch's ``AveragedModel``, so runs resumed from its checkpoints continue the same
    way), and integer buffers such as BatchNorm's ``num_batches_tracked`` are copied exactly.

    Attributes:
        module: The averaged copy: a deep copy of the model, on its device, in its memory format
            and dtype, left in eval mode.
        decay: The EMA decay, or None for the SWA running mean.
    """

    def __init__(self, model: nn.Module, decay: float | None) -> None:
        """Copy ``model``; prefer `make_ema` / `make_swa`, which say which average is meant."""
        if decay is not None and not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1] (typically 0.99 to 0.9999), got {decay}.")
        self.decay = decay
        # ModelEmaV3's own decay and step schedule are unused: `update` passes the decay each time.
        self._avg = ModelEmaV3(model, decay=1.0 if decay is None else decay)
        self._n = 0  # host-side count, so reading it never touches the device

    @property
    def module(self) -> nn.Module:
        """The averaged copy of the model."""
        return self._avg.module

    @property
    def n_averaged(self) -> int:
        """How many updates the average holds (0 until the first `update`)."""
        return self._n

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average.

        EMA: ``e_t = decay * e_{t-1} + (1 - decay) * w_t`` for floating parameters and buffers,
        ``e_1 = w_1``. SWA: the running mean of the floating parameters; every buffer is copied
        from the model (recompute BatchNorm statistics for the average before evaluating it).
        Only device kernels are queued: no ``.item()``, no host branch on a device tensor.

        Args:
            model: The model being trained, with the same architecture, device and dtypes.
        """
        if self.decay is None:
            # Mean of n+1 snapshots = lerp towards the new one with weight 1/(n+1), i.e. decay n/(n+1).
            self._avg.apply_update_no_buffers_(model, decay=self._n / (self._n + 1))
        else:
            # decay 0 makes the first update an exact copy (lerp with weight 1 returns its end).
            self._avg.apply_update_(model, decay=self.decay if self._n else 0.0)
        self._n += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The average in torch ``AveragedModel``'s format: ``module.<name>`` plus ``n_averaged``."""
        state = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        state["n_averaged"] = torch.tensor(self._n, dtype=torch.long)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor | int]) -> None:
        """Restore an average saved by `state_dict` or by torch's ``AveragedModel``.

        Args:
            state: ``module.<name>`` tensors and ``n_averaged`` (a tensor or an int).

        Raises:
            KeyError: ``state`` has no ``n_averaged``, so it is not a weight average.
            RuntimeError: The tensors do not match the model (from ``nn.Module.load_state_dict``).
        """
        if "n_averaged" not in state:
            raise KeyError(
                "not a weight-average state dict: it has no 'n_averaged'; pass what "
                f"WeightAverage.state_dict() or AveragedModel.state_dict() returned (keys: {list(state)[:5]})"
            )
        weights = {k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")}
        self.module.load_state_dict(weights)
        self._n = int(state["n_averaged"])  # one read at load time, not per update


def make_ema(model: nn.Module, decay: float) -> WeightAverage:
    """An exponential moving average of the model's floating parameters and buffers.

    Args:
        model: The model to average; call `WeightAverage.update` after every optimizer step.
        decay: Weight of the old average at each update, in [0, 1].
    """
    return WeightAverage(model, decay)


def make_swa(model: nn.Module) -> WeightAverage:
    """A stochastic weight average: the plain mean of the parameters over its updates.

    Buffers are copied from the model, so recompute BatchNorm statistics for ``.module`` before
    evaluating it (as ``torch.optim.swa_utils.update_bn`` does).

    Args:
        model: The model to average; call `WeightAverage.update` once per epoch.
    """
    return WeightAverage(model, None)
