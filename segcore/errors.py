"""Exception types raised by segcore.

Every error says what is wrong and how to fix it. Callers (the worker, the web app) catch
:class:`SegcoreError` to turn expected problems into messages instead of tracebacks.
"""

__all__ = [
    "SegcoreError",
    "ConfigError",
    "RegistryError",
    "PluginError",
    "DatasetError",
    "CheckpointError",
    "TrainingError",
    "StoreError",
    "EnsembleError",
    "SubmissionError",
]


class SegcoreError(Exception):
    """Base class of every error segcore raises on purpose."""


class ConfigError(SegcoreError, ValueError):
    """An experiment config (or part of one) is invalid."""


class RegistryError(SegcoreError, KeyError):
    """An unknown or duplicate name in a registry."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class PluginError(ConfigError):
    """An installed plugin cannot be used (failed import, duplicate name) or is missing on this machine."""


class DatasetError(SegcoreError, ValueError):
    """A dataset on disk is missing, unreadable or inconsistent."""


class CheckpointError(SegcoreError, ValueError):
    """A checkpoint folder is missing, incomplete or does not match its config."""


class TrainingError(SegcoreError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN)."""


class StoreError(SegcoreError, ValueError):
    """A probability store is missing, corrupt or does not match what was asked for."""


class EnsembleError(SegcoreError, ValueError):
    """Ensemble members do not fit together (different images, classes or sizes)."""


class SubmissionError(SegcoreError, ValueError):
    """A submission file cannot be written or read."""
