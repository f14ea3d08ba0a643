"""Exception types raised by the worker's service layer.

The web app and the CLI catch :class:`ServiceError` and show its message; every message says
what is wrong and how to fix it. segcore's errors that services let through (a config, dataset or
store problem) are re-exported here, so a caller of the services catches them without importing
segcore's internals.
"""

from __future__ import annotations

from segcore.errors import ConfigError, DatasetError, EnsembleError, SegcoreError, StoreError

__all__ = [
    "ServiceError",
    "NotFound",
    "InvalidInput",
    "InvalidFields",
    "Conflict",
    "PermissionDenied",
    "AuthenticationFailed",
    "SegcoreError",
    "ConfigError",
    "DatasetError",
    "StoreError",
    "EnsembleError",
]


class ServiceError(Exception):
    """Base class of every error the service layer raises on purpose."""


class NotFound(ServiceError, LookupError):
    """The requested object does not exist (or no longer exists)."""

    def __init__(self, kind: str, object_id: object, hint: str = "") -> None:
        self.kind = kind
        self.object_id = object_id
        message = f"{kind} {object_id!r} does not exist"
        message += f"; {hint}" if hint else "; it may have been deleted, reload the list and pick another"
        super().__init__(message)


class InvalidInput(ServiceError, ValueError):
    """An argument is invalid; the message names it and the values that are accepted."""


class InvalidFields(InvalidInput, ConfigError):
    """A submission refused field by field; ``problems`` holds ``(dotted field path, message)`` pairs.

    The message is a summary line, then one ``field.path: message`` line per problem, so that a form
    can show each next to its field. It is both an :class:`InvalidInput` and a :class:`ConfigError`.
    """

    def __init__(self, summary: str, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join([summary, *(f"{field}: {message}" for field, message in self.problems)]))

    @property
    def fields(self) -> dict[str, str]:
        """``{field: message}``; several messages for one field are joined with ``; ``."""
        out: dict[str, str] = {}
        for field, message in self.problems:
            out[field] = f"{out[field]}; {message}" if field in out else message
        return out


class Conflict(ServiceError):
    """The request clashes with what is stored (a duplicate name, a state that forbids it)."""


class PermissionDenied(ServiceError, PermissionError):
    """The acting member's role (or a limit set for it) does not allow the action.

    The message is one line: what was refused, why, and who can do it instead.
    """


class AuthenticationFailed(ServiceError):
    """A login, session or API token was not accepted (the message never says which part was wrong)."""
