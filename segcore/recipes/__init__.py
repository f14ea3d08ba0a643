"""Named, complete starting configs a user picks and edits.

Example:
    >>> from segcore.recipes import load_recipe
    >>> cfg = load_recipe("fast")
    >>> cfg.model.arch
    'Unet'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segcore.config import ExperimentConfig, load_config
from segcore.errors import ConfigError

__all__ = ["Recipe", "RECIPES", "list_recipes", "recipe_path", "load_recipe"]

_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    needs_gpu: bool


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("baseline", "The plain hand loop to check other recipes against: Unet-resnet18 from scratch, CE, "
                           "Adam + cosine, 256x256 crops + flips, batch 8.", False),
        Recipe("fast", "CPU-sized Unet-resnet18 from scratch for trying ideas in minutes: crops sized from the "
                       "data, half of them on rare classes, full-resolution validation.", False),
        Recipe("strong", "Competition pipeline: UNet++ EfficientNet-B4, CE+IoU, flips/rot90, EMA (GPU, pretrained).",
               True),
        Recipe("xray", "Multilabel X-rays: sigmoid Unet, BCE+Dice, 1024 px, sliding-window prediction (GPU).", True),
    )
}


def list_recipes() -> list[Recipe]:
    return list(RECIPES.values())


def recipe_path(name: str) -> Path:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; valid choices: {', '.join(RECIPES)}")
    return _DIR / f"{name}.yaml"


def load_recipe(name: str) -> ExperimentConfig:
    return load_config(recipe_path(name))
