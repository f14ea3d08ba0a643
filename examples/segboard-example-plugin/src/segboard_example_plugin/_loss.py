"""The example loss term: Poly-1 cross-entropy over labelled pixels."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Poly1CrossEntropy"]


class Poly1CrossEntropy(nn.Module):
    """``mean over labelled pixels of -log p_t + epsilon * (1 - p_t)``.

    Pixels labelled ``ignore_index`` contribute neither value nor gradient.
    """

    def __init__(self, *, epsilon: float = 1.0, ignore_index: int = 255) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labelled = target != self.ignore_index
        safe = torch.where(labelled, target, torch.zeros_like(target))
        log_pt = logits.float().log_softmax(1).gather(1, safe.unsqueeze(1)).squeeze(1)
        loss = -log_pt + self.epsilon * (1.0 - log_pt.exp())
        weight = labelled.to(loss.dtype)
        return (loss * weight).sum() / weight.sum().clamp_min(1.0)
