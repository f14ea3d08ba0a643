"""How a config's validation errors read: one ``field.path: message`` per problem, for forms and logs.

Split out of :mod:`segcore.config`, which re-exports both functions; import them from there.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

__all__ = ["field_problems", "format_validation_error"]

# Tags pydantic puts into an error's location for a discriminated union; they are not config fields.
_UNION_TAGS = frozenset({"coco", "mask_folder", "multilabel_json", "predefined", "holdout", "kfold"})
_EXPONENT = re.compile(r"\s*[+-]?\d+(\.\d*)?[eE][+-]?\d+\s*")
_BOUND_ERRORS = frozenset({"less_than", "less_than_equal", "greater_than", "greater_than_equal", "too_long",
                           "too_short", "finite_number"})


def field_problems(err: ValidationError) -> list[tuple[str, str]]:
    """``[(dotted field path, message), ...]``, one per problem, for forms that show each next to its field.

    Problems of no single field (cross-field checks) are under ``"(config)"``.
    """
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if str(p) not in _UNION_TAGS and "[" not in str(p))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see the config reference)"
        elif e["type"] == "int_parsing_size":
            msg = "the number is far too large; see the bounds in docs/config.md"
        elif e["type"] == "int_parsing" and isinstance(e.get("input"), str) and _EXPONENT.fullmatch(e["input"]):
            msg = "must be a whole number written without an exponent, such as 100 (see the bounds in docs/config.md)"
        elif e["type"] in _BOUND_ERRORS:
            msg += " (see the bounds in docs/config.md)"
        out.append((loc or "(config)", msg))
    return out


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: ``field.path: message``."""
    return "\n".join(f"{loc}: {msg}" for loc, msg in field_problems(err))
