"""Turn the errors a page can expect into ``st.error`` messages that say how to fix them.

Pages wrap service calls in :func:`guard`; the router wraps every page in one as a last line, so a
visitor never sees a traceback. Unexpected errors are logged with their traceback on the server
and shown as one line.

Example:
    >>> with guard("Saving the score") as outcome:  # doctest: +SKIP
    ...     resources.write(submissions.record_public_score, submission_id=3, score="abc")
    >>> outcome.failed  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import streamlit as st
from pydantic import ValidationError

from segcore.config import format_validation_error
from worker.errors import ConfigError, Conflict, DatasetError, InvalidInput, NotFound, SegcoreError, ServiceError

__all__ = ["Outcome", "describe", "guard", "show"]

log = logging.getLogger("webapp")

_BROKER_HINT = (
    "the queue (Redis) cannot be reached. What was saved stays queued in the database and is published "
    "again by the reaper once Redis is back; check that `segboard up` (or the Redis service) is running"
)


@dataclasses.dataclass
class Outcome:
    """What happened inside a :func:`guard` block."""

    error: BaseException | None = None
    message: str | None = None

    @property
    def failed(self) -> bool:
        """Whether the block raised."""
        return self.error is not None


def _is_broker_error(exc: BaseException) -> bool:
    # kombu, redis and amqp errors, matched by module so that none of them is imported here
    names = {c.__module__.split(".")[0] for c in type(exc).__mro__}
    return bool(names & {"kombu", "redis", "amqp", "celery"})


def describe(exc: BaseException) -> str:
    """A one-paragraph message for ``exc`` that says what went wrong and what to do.

    Args:
        exc: The exception a page caught.

    Returns:
        Text for ``st.error``.
    """
    import sqlalchemy.exc as sa_exc

    from worker.services.runtime import SettingsFileError

    if isinstance(exc, NotFound):
        return f"{exc}."
    if isinstance(exc, (InvalidInput, Conflict, ServiceError)):
        return str(exc)
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, DatasetError):
        return f"The dataset cannot be read: {exc}"
    if isinstance(exc, SegcoreError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return "Invalid values:\n" + format_validation_error(exc)
    if isinstance(exc, SettingsFileError):
        return f"{exc}"
    if isinstance(exc, sa_exc.OperationalError):
        text = str(exc.orig) if getattr(exc, "orig", None) is not None else str(exc)
        if "no such table" in text or "does not exist" in text:
            return (
                "The database has no SegBoard tables yet (or an old schema): run `segboard db upgrade` "
                f"against SEGBOARD_DATABASE_URL, then reload. ({text})"
            )
        return (
            f"The database cannot be reached: {text}. Check SEGBOARD_DATABASE_URL and that the database "
            "server is running, then reload the page."
        )
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return f"The database refused the request: {exc}. Reload the page and try again."
    if _is_broker_error(exc):
        return f"The request was saved, but {_BROKER_HINT}. ({type(exc).__name__}: {exc})"
    if isinstance(exc, ValueError) and "SegBoard settings" in str(exc):
        return f"{exc}. Fix the SEGBOARD_* variables (or the settings file) and restart the dashboard."
    if isinstance(exc, ValueError):  # form parsing and upload checks raise ValueError with a user message
        text = str(exc)
        return text[:1].upper() + text[1:] if text else "Invalid value."
    return (
        f"Unexpected error ({type(exc).__name__}: {exc}). Nothing else was changed; the details are in "
        "the dashboard's log. Reload the page and try again."
    )


def show(exc: BaseException, action: str | None = None) -> str:
    """Render ``exc`` as ``st.error`` (prefixed with ``action``) and return the message."""
    message = describe(exc)
    message = message[:1].upper() + message[1:]
    if action:
        message = f"{action} failed. {message}"
    st.error(message, icon=":material/error:")
    return message


_EXPECTED: tuple[type[BaseException], ...] = (ServiceError, SegcoreError, ValidationError, ValueError)


@contextlib.contextmanager
def guard(action: str | None = None) -> Iterator[Outcome]:
    """Show any exception raised in the block as ``st.error`` instead of a traceback.

    Streamlit's own control flow (``st.rerun``, ``st.stop``, ``st.switch_page``) derives from
    ``BaseException`` and passes through untouched.

    Args:
        action: What the block does ("Registering the dataset"); prefixes the message.

    Yields:
        An :class:`Outcome` that tells the caller whether the block failed.
    """
    outcome = Outcome()
    try:
        yield outcome
    except Exception as exc:  # this is the UI boundary
        if not isinstance(exc, _EXPECTED):
            log.exception("%s failed", action or "page")
        outcome.error = exc
        outcome.message = show(exc, action)
