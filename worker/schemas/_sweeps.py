"""Input and read models of sweeps: the run count of an expansion, a search spec, sweeps and their trials,
and the axis-values-against-score view that sweeps and grid experiments share.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from segcore import limits
from worker.db.models import RunStatus, SweepStatus
from worker.schemas._base import _Input, _Read

__all__ = ["ExpansionPlan", "SearchParam", "SweepSpec", "SweepTrialRead", "SweepRead", "SweepPoint", "SweepView"]

MAX_SEARCH_PARAMS = 32
MAX_CHOICES = limits.MAX_GRID_VALUES


class ExpansionPlan(_Read):
    """What an experiment would queue: groups x folds x seeds runs, and why that is too many (if it is)."""

    runs: int
    groups: int
    n_folds: int
    n_seeds: int
    max_runs: int
    problem: str | None = None


Choice = str | int | float | bool | None


class SearchParam(_Input):
    """One dimension of a search space: a float or int range (optionally on a log scale) or a list of choices.

    Written in a spec as ``{low: 1.0e-4, high: 1.0e-2, log: true}``, ``{low: 4, high: 16, step: 4}``
    (both bounds whole numbers: an int range), ``{choices: [a, b]}``, or just a list ``[a, b]``.
    """

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Choice] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"type": "categorical", "choices": data}
        if isinstance(data, dict) and "type" not in data:
            if "choices" in data:
                return {**data, "type": "categorical"}
            bounds = [data.get("low"), data.get("high"), data.get("step", 1)]
            whole = all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
            return {**data, "type": "int" if whole else "float"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a list of choices needs at least one choice")
            if len(self.choices) > MAX_CHOICES:
                raise ValueError(f"at most {MAX_CHOICES} choices, got {len(self.choices)}")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices must differ, got {self.choices!r}")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} range needs low and high, e.g. {{low: 0.0001, high: 0.01, log: true}}")
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got low={self.low} high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be positive, got {self.step}")
        if self.log and self.step is not None and not (self.type == "int" and self.step == 1):
            raise ValueError("a log-scale range takes no step; remove step or log")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError("an int range needs whole-number low, high and step")
        return self

    def extremes(self) -> list[Any]:
        """The values that bound the space (each choice, or low and high), to check against the config first."""
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "int":
            return [int(self.low or 0), int(self.high or 0)]
        return [self.low, self.high]


class SweepSpec(_Input):
    """A search: a base config on a dataset, the config paths to search over, a budget of trials, how
    many run at once, the sampler, and the metric to optimise (default: the config's ``evaluation.monitor``).

    Example (YAML)::

        name: unet-lr
        dataset: tiny            # the CLI resolves a dataset name to dataset_id
        config: base.yaml        # or the config itself as a mapping
        search:
          optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
          model.encoder: [resnet18, resnet34]
        budget: 12
        parallelism: 2
        sampler: tpe
    """

    name: str = Field(min_length=1, max_length=limits.MAX_NAME_CHARS)
    config: dict[str, Any]
    dataset_id: int | None = None
    search: dict[str, SearchParam] = Field(min_length=1, max_length=MAX_SEARCH_PARAMS)
    budget: int = Field(ge=1, le=limits.MAX_RUNS_PER_EXPERIMENT,
                        description="Trials in all (each one queued run).")
    parallelism: int = Field(default=1, ge=1, le=64, description="Trials queued or running at once.")
    sampler: Literal["tpe", "random"] = "tpe"
    metric: str | None = Field(default=None, description="Default: the config's evaluation.monitor.")
    direction: Literal["maximize", "minimize"] | None = Field(default=None,
                                                              description="Default: from the metric.")
    seed: int = Field(default=0, ge=0, le=limits.MAX_SEED, description="The runs' seed and the sampler's.")
    priority: int = 0
    tags: list[str] = Field(default_factory=list)
    note: str = ""

    @field_validator("search")
    @classmethod
    def _paths(cls, v: dict[str, SearchParam]) -> dict[str, SearchParam]:
        for path in v:
            if not path or any(not p.strip() for p in path.split(".")):
                raise ValueError(f"search key {path!r} is not a dotted config path like 'optimizer.lr'")
        return v


class SweepTrialRead(_Read):
    """A trial: its parameters, the run it queued, and what the study was told (``state`` None: not yet)."""

    number: int
    params: dict[str, Any]
    experiment_id: int | None
    run_id: int | None
    run_status: RunStatus | None = None
    state: str | None
    value: float | None
    message: str
    created_at: dt.datetime


class SweepRead(_Read):
    id: int
    name: str
    study_name: str
    spec: dict[str, Any]
    budget: int
    parallelism: int
    metric: str
    direction: str
    status: SweepStatus
    owner_id: int | None
    dataset_id: int | None
    message: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    trials: list[SweepTrialRead] = Field(default_factory=list)
    best_value: float | None = None
    best_trial: int | None = None
    queued_run_ids: list[int] = Field(default_factory=list,
                                      description="Runs this call queued: publish them after commit.")


class SweepPoint(_Read):
    """One point of a sweep or grid: its parameter (axis) values and its score."""

    label: str
    params: dict[str, Any]
    score: float | None
    status: str
    run_ids: list[int] = Field(default_factory=list)
    experiment_id: int | None = None


class SweepView(_Read):
    """A sweep's trials or a grid experiment's groups as points: parameter values against the score."""

    kind: Literal["sweep", "grid"]
    id: int
    name: str
    metric: str
    direction: str
    params: list[str]
    points: list[SweepPoint]
