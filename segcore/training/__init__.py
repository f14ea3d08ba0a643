"""Training: ``fit`` (a plain function) over its parts, its callbacks, and optimizers/schedulers."""

from segcore.training._epoch import evaluate, train_one_epoch
from segcore.training.callbacks import Callback, EpochReport, FitResult, StepReport, StopTraining
from segcore.training.loop import fit

__all__ = [
    "fit", "train_one_epoch", "evaluate", "Callback", "EpochReport", "FitResult", "StepReport", "StopTraining",
]
