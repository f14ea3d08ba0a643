"""Recipes: segcore's named starting configs, listed for the New experiment page and fitted to a dataset.

A recipe is a whole config (model, loss, augmentation, crop policy, schedule); fitting it to a registered
dataset takes the data's origin from the dataset (source, classes, task, ignore index) and keeps the
recipe's data policy (image or crop size, rare-class crops); split lists that belong to the recipe's
own data become a 20% hold-out (the form's split controls change it).

Example:
    >>> [r.name for r in list_recipes(session)]  # doctest: +SKIP
    ['baseline', 'fast', 'strong', 'xray']
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from worker.db.models import Dataset
from worker.errors import InvalidInput
from worker.services._common import get_or_raise

__all__ = ["RecipeRead", "list_recipes", "recipe_config"]


class RecipeRead(BaseModel):
    """A recipe as the page lists it."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    needs_gpu: bool


def list_recipes(session: Session) -> list[RecipeRead]:
    """Every recipe segcore ships, in its order (the session is unused: recipes are files)."""
    from segcore.recipes import list_recipes as segcore_recipes

    return [RecipeRead(name=r.name, description=r.description, needs_gpu=r.needs_gpu) for r in segcore_recipes()]


def recipe_config(session: Session, *, name: str, dataset_id: int) -> dict[str, Any]:
    """The recipe's config for a registered dataset, as a dict the form loads.

    Raises:
        InvalidInput: no recipe has this name (the message lists them).
        NotFound: no such dataset.
    """
    from segcore.errors import ConfigError
    from segcore.recipes import load_recipe

    ds = get_or_raise(session, Dataset, dataset_id, "dataset", "register the dataset first")
    try:
        cfg = load_recipe(name).to_dict()
    except ConfigError as exc:
        raise InvalidInput(str(exc)) from exc
    data = cfg.setdefault("data", {})
    data.update({"source": copy.deepcopy(ds.source), "classes": list(ds.classes), "task": ds.task.value,
                 "ignore_index": ds.ignore_index})
    data.pop("fingerprint", None)
    if (data.get("split") or {}).get("kind") == "predefined":  # the recipe's own data's split lists
        data["split"] = {"kind": "holdout", "val_fraction": 0.2, "seed": 0}
    cfg["name"] = f"{ds.name}-{name}"
    return cfg
