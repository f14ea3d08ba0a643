"""The one submit-time check: what a config must pass before any of its runs is queued (docs/access.md).

:func:`validate_submission` is the only place that decides whether a config may run on a dataset.
:func:`worker.services.experiments.create_experiment` calls it before it writes anything, so the New
experiment form, its YAML tab, clones, pseudo-label students, the CLI and every later client pass
through it. It checks, in this order:

1. the actor: a member or an admin (viewers only read);
2. the config model, with a message per field (unknown keys, wrong types, unknown names);
3. the bounds (docs/config.md): sizes, epochs, batch size, folds, seeds, grid values, runs;
4. the paths: every local path inside the dataset roots, every URL under an allowed prefix
   (:mod:`worker.services.confinement`), for the config and for each grid value;
5. what the worker would refuse for this config on this dataset, from what the database stores
   about it (its classes, task, source, fingerprint, image sizes and counts): classes or task that
   differ, images of different sizes with nothing that makes them batchable, more folds than images,
   a split list that is not a list of image stems, pseudo-labels on a multilabel task, a format that
   cannot serve the task.

A refusal is an :class:`~worker.errors.InvalidFields` listing every problem as ``field.path: message``.

Example:
    >>> cfg = validate_submission(session, actor=me, config=yaml_text, dataset_id=3)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from segcore import limits
from segcore.config import DatasetSource, ExperimentConfig, TaskType, field_problems
from worker.db.models import Dataset
from worker.errors import InvalidFields, InvalidInput
from worker.schemas import GridSpec
from worker.services import access, confinement
from worker.services._common import check_actor, get_or_raise

__all__ = ["validate_submission", "parse_submitted_config", "check_expansion"]

_FORMAT_TASK = {"coco": TaskType.MULTICLASS, "mask_folder": TaskType.MULTICLASS,
                "multilabel_json": TaskType.MULTILABEL}
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,2})?")
_SIZE = re.compile(r"(\d{1,6})x(\d{1,6})")
_REFUSED = "the experiment was not queued; fix these fields"


def _load_text(text: str) -> Any:
    """JSON or YAML text, safely: YAML tags that build Python objects are refused."""
    unreadable = "the config is not valid YAML or JSON"
    try:
        if text.lstrip().startswith("{"):  # JSON first: YAML 1.1 reads a JSON number such as 1e20 as text
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                pass
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise InvalidFields(unreadable, [
            ("(config)", f"it cannot be read{where}; tags such as !!python/object are not accepted")
        ]) from None
    except RecursionError:
        raise InvalidFields(unreadable, [("(config)", "it nests too deeply")]) from None


def parse_submitted_config(config: ExperimentConfig | dict[str, Any] | str) -> ExperimentConfig:
    """The config as a validated model, from a model, a dict or YAML/JSON text (safe loading only).

    A model is validated again from its dict, so one built without validation cannot slip through.

    Raises:
        InvalidFields: one ``field.path: message`` per problem; also a ``ConfigError``.
    """
    if isinstance(config, ExperimentConfig):
        config = config.to_dict()
    if isinstance(config, str):
        config = _load_text(config)
    if not isinstance(config, dict):
        raise InvalidFields("invalid experiment config",
                            [("(config)", f"a config must be a mapping of sections, got {type(config).__name__}")])
    try:
        return ExperimentConfig.model_validate(config)
    except ValidationError as exc:
        raise InvalidFields("invalid experiment config:", field_problems(exc)) from exc
    except RecursionError:
        raise InvalidFields("invalid experiment config", [("(config)", "it nests too deeply")]) from None


def check_expansion(n_folds: Any, seeds: Any, grid: GridSpec | None) -> list[tuple[str, str]]:
    """``[(field, message), ...]`` for folds, seeds and grid values outside the bounds (docs/config.md)."""
    out = []
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or not 1 <= n_folds <= limits.MAX_FOLDS:
        out.append(("n_folds", f"n_folds must be 1 (no cross-validation) or 2..{limits.MAX_FOLDS}, got {n_folds!r}"))
    seeds = list(seeds) if isinstance(seeds, Iterable) and not isinstance(seeds, (str, bytes)) else [seeds]
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        out.append(("seeds", f"seeds must be a non-empty list of integers, got {seeds[:8]!r}"))
    elif len(seeds) > limits.MAX_SEEDS:
        out.append(("seeds", f"at most {limits.MAX_SEEDS} seeds per experiment, got {len(seeds)}"))
    elif any(not 0 <= s <= limits.MAX_SEED for s in seeds):
        out.append(("seeds", f"seeds must be integers from 0 to {limits.MAX_SEED}"))
    elif len(set(seeds)) != len(seeds):
        out.append(("seeds", f"seeds must not repeat, got {seeds!r}"))
    if grid is not None and len(grid.values) > limits.MAX_GRID_VALUES:
        out.append(("grid.values", f"at most {limits.MAX_GRID_VALUES} grid values, got {len(grid.values)}"))
    if not out:
        total = n_folds * len(seeds) * (len(grid.values) if grid is not None else 1)
        if total > limits.MAX_RUNS_PER_EXPERIMENT:
            out.append(("n_folds", f"this experiment expands into {total} runs, more than "
                                   f"{limits.MAX_RUNS_PER_EXPERIMENT}; use fewer folds, seeds or grid values"))
    return out


def _sizes(record: dict[str, Any] | None) -> dict[str, int]:
    sizes = (record or {}).get("image_sizes") or {}
    return {str(k): int(v) for k, v in sizes.items() if _SIZE.fullmatch(str(k))} if isinstance(sizes, dict) else {}


def _count(record: dict[str, Any] | None, key: str) -> int | None:
    value = (record or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _same_source(cfg: ExperimentConfig, stored: dict[str, Any], roots: confinement.DataRoots) -> bool:
    mine = cfg.data.source.model_dump(mode="json")
    try:
        theirs = TypeAdapter(DatasetSource).validate_python(stored).model_dump(mode="json")
    except ValidationError:
        return False
    if {k: v for k, v in mine.items() if k != "root"} != {k: v for k, v in theirs.items() if k != "root"}:
        return False
    if mine.get("root") == theirs.get("root"):
        return True
    resolved = [confinement.resolve_location(str(s.get("root", "")), base=roots.dataset_root) for s in (mine, theirs)]
    return resolved[0] == resolved[1]


def _dataset_problems(cfg: ExperimentConfig, ds: Dataset, roots: confinement.DataRoots,
                      folds_field: str) -> list[tuple[str, str]]:
    """What the worker would refuse for ``cfg`` on the registered dataset ``ds``, from its stored records."""
    out = []
    data = cfg.data
    if list(ds.classes) != list(data.classes):
        out.append(("data.classes", f"the config's classes {data.classes} differ from dataset {ds.name!r}'s "
                                    f"{list(ds.classes)}; use the dataset's classes in index order"))
    if ds.task is not data.task:
        out.append(("data.task", f"dataset {ds.name!r} is {ds.task.value}; set data.task to {ds.task.value!r}"))
    if not _same_source(cfg, ds.source, roots):
        out.append(("data.source", f"is not the source dataset {ds.name!r} was registered with; pick the dataset "
                                   "again (the form copies its source), or register these files as a dataset"))
    if data.fingerprint and ds.fingerprint and data.fingerprint != ds.fingerprint:
        out.append(("data.fingerprint", f"is not dataset {ds.name!r}'s fingerprint, so the run would stop at its "
                                        "start; clear data.fingerprint (the dataset's is pinned) or register the "
                                        "dataset again"))
    sizes = _sizes(ds.statistics) or _sizes(ds.report)
    if len(sizes) > 1 and data.image_size is None and data.crop_size is None and cfg.training.batch_size > 1:
        shown = ", ".join(sorted(sizes, key=lambda k: -sizes[k])[:4])
        out.append(("data.image_size", f"the images of dataset {ds.name!r} have {len(sizes)} different sizes "
                                       f"({shown}{', ...' if len(sizes) > 4 else ''}), so they cannot be batched: "
                                       "set data.image_size or data.crop_size, or training.batch_size to 1"))
    images = _count(ds.statistics, "num_images") or _count(ds.report, "num_images")
    split = data.split
    if images is not None and split.kind == "kfold" and split.n_folds > images:
        out.append((folds_field, f"{split.n_folds}-fold cross-validation needs at least {split.n_folds} images; "
                                 f"dataset {ds.name!r} has {images}: use fewer folds"))
    if images is not None and split.kind == "holdout" and images < 2:
        out.append(("data.split", f"a hold-out split needs at least 2 images; dataset {ds.name!r} has {images}"))
    return out


def _config_problems(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """What the worker would refuse for ``cfg`` whatever the dataset."""
    out = []
    data = cfg.data
    needed = _FORMAT_TASK.get(data.source.format)
    if needed is not None and data.task is not needed:
        out.append(("data.task", f"{data.source.format} datasets are {needed.value}; set data.task to "
                                 f"{needed.value!r}"))
    if data.pseudo_labels and data.task is TaskType.MULTILABEL:
        out.append(("data.pseudo_labels", "pseudo-label datasets serve multiclass tasks only; remove them"))
    if not _DEVICE.fullmatch(cfg.training.device):
        out.append(("training.device", f"{cfg.training.device!r} is not a device; use 'auto', 'cpu', 'cuda' or "
                                       "'cuda:N'"))
    return out


def _split_list_problems(cfg: ExperimentConfig, roots: confinement.DataRoots) -> list[tuple[str, str]]:
    """Read a predefined split's lists (already confined) and refuse files that are not lists of image stems."""
    from segcore.data.splits import check_id_list, read_id_list
    from segcore.errors import DatasetError

    split = cfg.data.split
    root = confinement.resolve_location(cfg.data.source.root, base=roots.dataset_root)
    if split.kind != "predefined" or confinement.is_url(root):
        return []
    out = []
    lists: dict[str, list[str]] = {}
    for name in ("train", "val"):
        rel = getattr(split, name)
        path = Path(root) / rel
        try:
            items = read_id_list(path)
            check_id_list(items, name=name, path=rel)
        except DatasetError as exc:
            out.append((f"data.split.{name}", str(exc)))
            continue
        lists[name] = items
    if "val" in lists and not lists["val"]:
        out.append(("data.split.val", f"the val list {split.val} is empty; list at least one image stem"))
    if len(lists) == 2 and set(lists["train"]) & set(lists["val"]):
        both = len(set(lists["train"]) & set(lists["val"]))
        out.append(("data.split.val", f"{both} image stems are in both the train and the val list; "
                                      "remove them from one list"))
    return out


def _variants(cfg: ExperimentConfig, n_folds: int, seeds: Sequence[int],
              grid: GridSpec | None) -> list[tuple[str, ExperimentConfig]]:
    """One run config per grid value (its first fold and seed), with the grid value to name in messages."""
    from worker.services.experiments import expand_configs

    out = []
    for value, _label, runs in expand_configs(cfg, n_folds=n_folds, seeds=seeds, grid=grid):
        context = "" if grid is None else f"(grid value {str(value)[:60]!r} for {grid.axis}) "
        out.append((context, runs[0][2]))
    return out


def validate_submission(
    session: Session,
    *,
    actor: int | None,
    config: ExperimentConfig | dict[str, Any] | str,
    dataset_id: int | None = None,
    n_folds: int = 1,
    seeds: Iterable[int] = (0,),
    grid: GridSpec | dict[str, Any] | None = None,
    roots: confinement.DataRoots | None = None,
) -> ExperimentConfig:
    """Check everything about a submission that can be known before a run starts; write nothing.

    Args:
        actor: The acting member (viewers are refused).
        config: An ``ExperimentConfig``, its dict, or YAML/JSON text.
        dataset_id: The registered dataset the runs train on, if any.
        n_folds: 1, or k for k-fold cross-validation.
        seeds: One run per seed (per fold).
        grid: An ablation axis and its values.
        roots: Where data may be read from (:func:`worker.services.confinement.data_roots` of the
            caller's settings); None: this process's current settings.

    Returns:
        The validated config.

    Raises:
        InvalidFields: every problem as ``field.path: message`` (also an ``InvalidInput`` and a ``ConfigError``).
        ConfigError: a grid value makes the config invalid (the value and the field are named).
        PermissionDenied: the actor is a viewer.
        NotFound: the actor or the dataset does not exist.
    """
    check_actor(session, actor)
    access.require_member(session, actor, "queue experiments")
    cfg = parse_submitted_config(config)
    if isinstance(grid, dict):
        try:
            grid = GridSpec.model_validate(grid)
        except ValidationError as exc:
            raise InvalidInput(f"grid must look like {{'axis': 'model.encoder', 'values': [...]}}: "
                               f"{'; '.join(m for _, m in field_problems(exc))}") from exc
    seeds = list(seeds)
    problems = check_expansion(n_folds, seeds, grid)
    if problems:
        raise InvalidFields(_REFUSED, problems)
    roots = roots if roots is not None else confinement.data_roots()
    dataset = get_or_raise(session, Dataset, dataset_id, "dataset", "register the dataset first") \
        if dataset_id is not None else None
    folds_field = "n_folds" if n_folds > 1 else "data.split.n_folds"
    seen: set[str] = set()
    for context, run_cfg in _variants(cfg, n_folds, seeds, grid):
        found = confinement.config_problems(run_cfg, roots=roots) + _config_problems(run_cfg)
        if not any(field.startswith(("data.source", "data.split")) for field, _ in found):
            found += _split_list_problems(run_cfg, roots)
        if dataset is not None:
            found += _dataset_problems(run_cfg, dataset, roots, folds_field)
        for field, message in found:
            if f"{field}: {message}" not in seen:  # grid values that do not touch a field repeat its problems
                seen.add(f"{field}: {message}")
                problems.append((field, context + message))
    if problems:
        raise InvalidFields(_REFUSED, problems)
    return cfg
