"""Argument checks for the recording API: clear ``ValidationError``s, nothing else.

Limits (documented in the README):

- identifiers (``model``, ``agent_id``, ``provider_id``, ``provider``, ``error_code``,
  ``budget_id``): non-empty strings of at most ``MAX_ID_LENGTH`` characters — longer ones
  raise (they are keys of stats and indexes); ``""`` for an optional id means "none";
- ``error_message``: truncated to ``MAX_MESSAGE_LENGTH`` characters (an upstream's error
  text can be arbitrarily long; losing the failure would be worse than trimming it);
- token counts: ``int`` (not ``bool``) from 0 to 2**53-1; cache parts ≤ ``input_tokens``;
- durations in milliseconds: finite numbers from 0 to 1e10; ``status_code`` 100–599.
"""

from __future__ import annotations

import math
from typing import Final

from ._exceptions import ValidationError

__all__ = [
    "MAX_COUNT",
    "MAX_ID_LENGTH",
    "MAX_MESSAGE_LENGTH",
    "check_count",
    "check_duration",
    "check_id",
    "check_message",
    "check_optional_id",
    "check_status",
]

MAX_ID_LENGTH: Final = 256
MAX_MESSAGE_LENGTH: Final = 2_000
MAX_COUNT: Final = 2**53 - 1
MAX_DURATION_MS: Final = 1e10


def check_id(name: str, value: object) -> str:
    """A required identifier."""
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH:  # the common case, fast
        return value
    if type(value) is not str and not isinstance(value, str):
        raise ValidationError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValidationError(f"{name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError(f"{name} is {len(value)} characters; the limit is {MAX_ID_LENGTH}")
    return str(value)


def check_optional_id(name: str, value: object) -> str | None:
    """An optional identifier; ``None`` and ``""`` mean none."""
    if value is None or value == "":
        return None
    if type(value) is str and len(value) <= MAX_ID_LENGTH:
        return value
    return check_id(name, value)


def check_count(name: str, value: object) -> int:
    """A token (or other) count."""
    if type(value) is int and 0 <= value <= MAX_COUNT:  # the common case, fast
        return value
    if type(value) is not int:
        raise ValidationError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 0 or value > MAX_COUNT:
        raise ValidationError(f"{name} must be within 0..{MAX_COUNT}, got {value}")
    return value


def check_duration(name: str, value: object) -> float | None:
    """An optional duration in milliseconds."""
    if type(value) is float and 0.0 <= value <= MAX_DURATION_MS:  # the common case, fast
        return value
    if value is None:
        return None
    if type(value) is bool or not isinstance(value, int | float):
        raise ValidationError(f"{name} must be a number of milliseconds, got {value!r}")
    v = float(value)
    if not (0.0 <= v <= MAX_DURATION_MS) or math.isnan(v):
        raise ValidationError(
            f"{name} must be finite and within 0..{MAX_DURATION_MS:g} ms, got {value!r}"
        )
    return v


def check_status(value: object) -> int | None:
    """An optional HTTP status code."""
    if value is None:
        return None
    if type(value) is not int or not 100 <= value <= 599:
        raise ValidationError(f"status_code must be an int within 100..599, got {value!r}")
    return value


def check_message(value: object) -> str | None:
    """An optional error message, truncated to ``MAX_MESSAGE_LENGTH`` characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"error_message must be a str, got {type(value).__name__}")
    if len(value) > MAX_MESSAGE_LENGTH:
        return value[: MAX_MESSAGE_LENGTH - 1] + "…"
    return value
