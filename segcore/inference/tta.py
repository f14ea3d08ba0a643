"""Test-time augmentation: a JSON-able policy and exact geometric transforms with their inverses.

A policy is the product of its parts, as in ttach: ``flips=["h", "v"]`` gives 4 flip states,
``rotations=[0, 90, 180, 270]`` 4 rotations, ``scales=[0.75, 1, 1.25]`` 3 scales, so 48 views.
Flips and rotations are applied to the (padded) input and undone exactly on the logits;
a scale resizes the input and its logits are resized back to the input's size (bilinear).
The views' probabilities are merged by their mean or by a normalised geometric mean.

Example:
    >>> policy = TTAPolicy(flips=["h", "v"], scales=[0.75, 1.0, 1.25])
    >>> policy.num_views
    12
    >>> TTAPolicy.model_validate_json(policy.model_dump_json()) == policy
    True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["TTAPolicy", "View", "augment", "deaugment"]

Rotation = Literal[0, 90, 180, 270]


def _no_rotation() -> list[Rotation]:
    return [0]


class TTAPolicy(BaseModel):
    """Which views to predict and how to merge them.

    Attributes:
        flips: flip axes; each listed axis doubles the views (with and without the flip).
        rotations: counter-clockwise rotations in degrees, multiples of 90; 0 is the plain view.
        scales: input scale factors; 1.0 is the plain view.
        merge: ``mean`` of probabilities, or ``gmean``: the normalised geometric mean (softmax of
            the mean log-probability for multiclass, sigmoid of the mean logit for multilabel).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    flips: list[Literal["h", "v"]] = Field(default_factory=list)
    rotations: list[Rotation] = Field(default_factory=_no_rotation)
    scales: list[float] = Field(default_factory=lambda: [1.0])
    merge: Literal["mean", "gmean"] = "mean"

    @field_validator("flips", "rotations", "scales")
    @classmethod
    def _unique_nonempty(cls, v: list[Any]) -> list[Any]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate entries in {v}")
        return v

    @field_validator("rotations", "scales")
    @classmethod
    def _nonempty(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("give at least one value (0 rotation / 1.0 scale is the plain view)")
        return v

    @field_validator("scales")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        bad = [s for s in v if not 0.1 <= s <= 4.0]
        if bad:
            raise ValueError(f"scales must lie in [0.1, 4], got {bad}")
        return v

    @classmethod
    def flip(cls) -> TTAPolicy:
        """Horizontal x vertical flips: 4 views."""
        return cls(flips=["h", "v"])

    @classmethod
    def d4(cls) -> TTAPolicy:
        """The dihedral group: horizontal flip x 4 rotations = 8 views (ttach's ``d4_transform``)."""
        return cls(flips=["h"], rotations=[0, 90, 180, 270])

    @property
    def num_views(self) -> int:
        return (2 ** len(self.flips)) * len(self.rotations) * len(self.scales)

    @property
    def is_identity(self) -> bool:
        return self.num_views == 1 and self.rotations == [0] and self.scales == [1.0]

    def views(self) -> list[View]:
        """Every view of the policy, the plain one first when present."""
        flip_states = list(itertools.product(*[[False, True]] * len(self.flips)))
        out = []
        for scale in self.scales:
            for rot in self.rotations:
                for state in flip_states:
                    hflip = any(s and a == "h" for s, a in zip(state, self.flips))
                    vflip = any(s and a == "v" for s, a in zip(state, self.flips))
                    out.append(View(hflip=hflip, vflip=vflip, k=rot // 90, scale=float(scale)))
        out.sort(key=lambda v: (v.scale != 1.0, v.k != 0, v.hflip, v.vflip))
        return out


@dataclass(frozen=True)
class View:
    """One TTA view: flips, then ``k`` counter-clockwise quarter turns, at ``scale``."""

    hflip: bool = False
    vflip: bool = False
    k: int = 0
    scale: float = 1.0


def augment(x: torch.Tensor, view: View) -> torch.Tensor:
    """Apply a view's flips and rotation to N x C x H x W (scale is handled by the caller)."""
    dims = [d for d, on in ((-1, view.hflip), (-2, view.vflip)) if on]
    if dims:
        x = torch.flip(x, dims)
    if view.k % 4:
        x = torch.rot90(x, view.k, dims=(-2, -1))
    return x


def deaugment(y: torch.Tensor, view: View) -> torch.Tensor:
    """Undo :func:`augment` exactly on N x K x H' x W' outputs."""
    if view.k % 4:
        y = torch.rot90(y, -view.k, dims=(-2, -1))
    dims = [d for d, on in ((-1, view.hflip), (-2, view.vflip)) if on]
    if dims:
        y = torch.flip(y, dims)
    return y
