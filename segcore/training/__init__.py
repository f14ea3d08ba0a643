"""Training: ``fit`` (a plain function), its callbacks, and optimizers/schedulers."""

from segcore.training.callbacks import Callback, EpochReport, FitResult, StepReport, StopTraining
from segcore.training.loop import evaluate_model, fit

__all__ = ["fit", "evaluate_model", "Callback", "EpochReport", "FitResult", "StepReport", "StopTraining"]
