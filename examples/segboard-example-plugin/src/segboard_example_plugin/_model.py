"""The example model: stem -> stride-2 stage -> upsample + skip -> 1x1 classifier."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TinyConvNet"]


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TinyConvNet(nn.Module):
    """Logits ``[N, classes, H, W]`` from images ``[N, in_channels, H, W]`` (H, W even)."""

    def __init__(self, *, in_channels: int, classes: int, width: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = _block(in_channels, width)
        self.down = nn.Sequential(_block(width, 2 * width, stride=2), _block(2 * width, 2 * width))
        self.fuse = _block(3 * width, width)
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.stem(x)
        deep = nn.functional.interpolate(self.down(skip), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.dropout(self.fuse(torch.cat([skip, deep], dim=1))))
