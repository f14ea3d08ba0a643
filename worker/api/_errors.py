"""Service errors as HTTP answers: one status per error type and a JSON body the client turns back into it.

Every error answer is ``{"error": <type>, "detail": <message>}``, where ``type`` is the most specific
class of :mod:`worker.errors` the exception is an instance of, and ``detail`` the service's message.
Refusals per field (:class:`~worker.errors.InvalidFields`, and a request body or query FastAPI could
not read) add ``"fields": {field: message}`` and ``"problems": [[field, message], ...]``; a
:class:`~worker.errors.NotFound` adds ``kind`` and ``object_id``.

=======================================================  ======
error                                                    status
=======================================================  ======
AuthenticationFailed (no, unknown, revoked, expired       401
token)
PermissionDenied (the role does not allow it)            403
NotFound                                                 404
Conflict (the object's state forbids it)                 409
InvalidFields, InvalidInput, ConfigError, DatasetError,  422
StoreError, EnsembleError
any other ServiceError (e.g. storage that cannot be      503
reached)
=======================================================  ======
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from worker import errors

__all__ = ["STATUS", "error_name", "error_body", "install_handlers"]

log = logging.getLogger(__name__)

#: Status code per error type, most specific first (the first match wins).
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (errors.AuthenticationFailed, 401),
    (errors.PermissionDenied, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.InvalidInput, 422),
    (errors.SegcoreError, 422),
    (errors.ServiceError, 503),
)

_NAMES = tuple(getattr(errors, name) for name in errors.__all__)


def error_name(exc: BaseException) -> str:
    """The most specific :mod:`worker.errors` class ``exc`` is an instance of (``ServiceError`` at worst)."""
    for cls in type(exc).__mro__:
        if cls in _NAMES:
            return cls.__name__
    return "ServiceError"


def _status(exc: BaseException) -> int:
    return next(code for cls, code in STATUS if isinstance(exc, cls))


def error_body(exc: BaseException) -> dict[str, Any]:
    """The JSON body of an error answer (see the module docstring)."""
    # a KeyError's str() quotes its message; the message is what the caller reads
    message = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    body: dict[str, Any] = {"error": error_name(exc), "detail": message}
    if isinstance(exc, errors.InvalidFields):
        body["fields"] = exc.fields
        body["problems"] = [list(p) for p in exc.problems]
    if isinstance(exc, errors.NotFound):
        body["kind"] = exc.kind
        body["object_id"] = exc.object_id if isinstance(exc.object_id, (int, str)) else str(exc.object_id)
    return body


def _service_error(request: Request, exc: Exception) -> JSONResponse:
    status = _status(exc)
    if status == 503:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(exc), status_code=status, headers=headers)


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "(request)"


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # registered for this type only
    problems = [(_field(e.get("loc", ())), str(e.get("msg", "invalid")).removeprefix("Value error, "))
                for e in exc.errors()]
    refused = errors.InvalidFields("the request was refused; fix these fields", problems)
    return JSONResponse(error_body(refused), status_code=422)


def install_handlers(app: FastAPI) -> None:
    """Answer service errors, segcore errors and unreadable requests as the module docstring says."""
    app.add_exception_handler(errors.ServiceError, _service_error)
    app.add_exception_handler(errors.SegcoreError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
