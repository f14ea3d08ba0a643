"""An example SegBoard plugin: the entry points name the factories in this module.

This module stays light (no torch import): SegBoard's web app reads the factories' descriptions and
parameters to build its form without loading torch. The torch code lives in ``_model`` and ``_loss``
and is imported when a factory is called, on the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TinyConvNetParams", "tiny_convnet", "poly_ce"]


class TinyConvNetParams(BaseModel):
    """The parameters of ``tiny_convnet`` (``model.params`` in a config)."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(default=16, ge=4, le=256, description="Channels of the first stage (the second has twice).")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout before the classifier.")


def tiny_convnet(*, in_channels: int, classes: int, width: int = 16, dropout: float = 0.0) -> nn.Module:
    """A tiny two-scale conv net with one skip connection; for tests and as a template.

    Returns logits ``[N, classes, H, W]`` for any even ``H`` and ``W``.
    """
    from segboard_example_plugin._model import TinyConvNet

    return TinyConvNet(in_channels=in_channels, classes=classes, width=width, dropout=dropout)


tiny_convnet.params_model = TinyConvNetParams  # type: ignore[attr-defined]  # read by SegBoard
tiny_convnet.input_multiple = 2  # type: ignore[attr-defined]  # input sides must be even (one stride-2 stage)


def poly_ce(*, task: Any, num_classes: int, ignore_index: int, epsilon: float = 1.0) -> nn.Module:
    """Poly-1 cross-entropy (Leng et al., 2022): CE + epsilon * (1 - p_t), over labelled pixels.

    epsilon > 0 puts more weight on confident pixels than cross-entropy does; 0 is plain CE.
    """
    from segboard_example_plugin._loss import Poly1CrossEntropy

    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not -1.0 <= epsilon <= 10.0:
        raise ValueError(f"loss 'poly_ce': epsilon must be a number in [-1, 10], got {epsilon!r}")
    return Poly1CrossEntropy(epsilon=float(epsilon), ignore_index=ignore_index)


poly_ce.tasks = ("multiclass",)  # type: ignore[attr-defined]  # read by SegBoard
