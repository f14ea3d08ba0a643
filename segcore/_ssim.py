"""The SSIM loss term: ``1 - SSIM`` between class probabilities and one-hot targets.

The structural similarity map comes from torchmetrics' functional SSIM (Gaussian window, reflect
padding, so the map has the input's size); segcore only turns logits and labels into the two images
and averages the map over labelled pixels.

Multiclass pixels labelled ``ignore_index`` contribute nothing: both images are set to 0 there before
SSIM is computed (so a window overlapping them sees the same constant whatever the logits say) and
their own map values are left out of the mean. Their logits therefore get no gradient.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segcore.config import TaskType
from segcore.errors import ConfigError

__all__ = ["SSIMLoss", "ssim_map"]


def ssim_map(probs: torch.Tensor, target: torch.Tensor, *, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel, per-class SSIM of two images in ``[0, 1]`` (torchmetrics' functional SSIM).

    Args:
        probs: ``[N, C, H, W]`` float, e.g. softmax probabilities.
        target: ``[N, C, H, W]`` float, e.g. one-hot labels.
        sigma: Standard deviation of the Gaussian window (its size is ``2 * int(3.5 * sigma + 0.5) + 1``).

    Returns:
        ``[N, C, H, W]`` SSIM values (1 where the images agree in mean, contrast and structure).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure  # imported on first use

    out = structural_similarity_index_measure(
        probs, target, gaussian_kernel=True, sigma=sigma, data_range=1.0, return_full_image=True
    )
    assert isinstance(out, tuple)  # return_full_image=True: (mean per image, full map)
    return out[1]


class SSIMLoss(nn.Module):
    """``1 - mean SSIM`` over labelled pixels and classes, between probabilities and one-hot targets.

    Args:
        task: Multiclass (softmax, one-hot of the class indices) or multilabel (sigmoid, the 0/1 masks).
        ignore_index: Multiclass label whose pixels are left out; None for multilabel.
        sigma: Standard deviation of the Gaussian window in pixels (1.5: an 11 x 11 window).

    Example:
        >>> loss = SSIMLoss(TaskType.MULTICLASS, ignore_index=255)
        >>> loss(torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))).shape
        torch.Size([])
    """

    def __init__(self, task: TaskType, *, ignore_index: int | None, sigma: float = 1.5) -> None:
        super().__init__()
        number = isinstance(sigma, (int, float)) and not isinstance(sigma, bool)
        if not (number and math.isfinite(sigma) and 0 < sigma <= 16):
            raise ConfigError(f"loss 'ssim': parameter 'sigma' must be a number in (0, 16], got {sigma!r}")
        self.task = task
        self.ignore_index = ignore_index
        self.sigma = float(sigma)
        self._pad = int(3.5 * self.sigma + 0.5)  # the window's half-width

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss (a scalar) of logits ``[N, C, H, W]`` against the target (see :mod:`segcore.losses`)."""
        n, c, h, w = logits.shape
        if min(h, w) <= self._pad:
            raise ConfigError(
                f"loss 'ssim' needs images larger than its window's half-width ({self._pad} px), got {h}x{w}; "
                "use a smaller sigma or larger crops"
            )
        logits = logits.float()
        if self.task is TaskType.MULTICLASS:
            probs = logits.softmax(1)
            labelled = torch.ones_like(target, dtype=torch.bool)
            if self.ignore_index is not None:
                labelled = target != self.ignore_index
            onehot = nn.functional.one_hot(torch.where(labelled, target, 0).clamp(0, c - 1), c)
            keep = labelled.unsqueeze(1).to(probs.dtype)  # [N, 1, H, W]
            probs, truth = probs * keep, onehot.permute(0, 3, 1, 2).to(probs.dtype) * keep
        else:
            probs, truth = logits.sigmoid(), target.to(logits.dtype)
            keep = torch.ones_like(probs[:, :1])
        weight = keep.expand(n, c, h, w)
        similarity = ssim_map(probs, truth, sigma=self.sigma)
        return 1.0 - (similarity * weight).sum() / weight.sum().clamp_min(1.0)
