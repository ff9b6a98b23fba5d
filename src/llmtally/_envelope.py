"""The envelope every event carries beside its payload: schema version, correlation,
severity, environment and tags — the constants, the defaults and the argument checks.

Limits (``ValidationError`` when recording; the collector's wire decoder enforces the
same patterns and refuses the event):

- ``schema_version``: ``MAJOR.MINOR.PATCH``. This llmtally writes ``SCHEMA_VERSION`` and
  reads every ``1.x.y`` (a newer minor only adds optional fields).
- ``correlation_id``, ``parent_event_id``: 1–128 characters of ``A-Z a-z 0-9 . _ : / + =
  @ -`` (UUIDs, W3C trace ids, request ids, base64 all fit); ``""`` means none.
- ``severity``: ``debug``, ``info``, ``warning``, ``error`` or ``critical``; ``None``
  means the default of the event type (``default_severity``).
- ``environment``: 1–64 characters of ``A-Z a-z 0-9 . _ / -``; ``""`` means none.
- ``tags``: at most ``MAX_TAGS`` (16) ``str → str`` pairs; a key is 1–64 characters of
  ``A-Z a-z 0-9 _ . / -`` starting with a letter, digit or ``_`` (no ``:``, so a query's
  ``tag=key:value`` is unambiguous); a value at most 256 characters, no control
  characters (PostgreSQL's JSONB cannot hold ``\\u0000``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Literal, TypeAlias, get_args

from ._exceptions import ValidationError

__all__ = [
    "ENVIRONMENT_PATTERN",
    "MAX_ENVIRONMENT_LENGTH",
    "MAX_REF_LENGTH",
    "MAX_TAGS",
    "MAX_TAG_KEY_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "REF_PATTERN",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_PATTERN",
    "SEVERITIES",
    "TAG_KEY_PATTERN",
    "TAG_VALUE_PATTERN",
    "Severity",
    "check_environment",
    "check_ref",
    "check_schema_version",
    "check_severity",
    "check_tags",
    "is_environment",
    "is_ref",
    "is_tag_key",
    "is_tag_value",
]

SCHEMA_VERSION: Final = "1.0.0"
"""The envelope version this llmtally writes (semver: a new optional field is a minor
bump, a changed meaning a major one)."""

Severity: TypeAlias = Literal["debug", "info", "warning", "error", "critical"]
SEVERITIES: Final[frozenset[str]] = frozenset(get_args(Severity))

MAX_REF_LENGTH: Final = 128
MAX_ENVIRONMENT_LENGTH: Final = 64
MAX_TAGS: Final = 16
MAX_TAG_KEY_LENGTH: Final = 64
MAX_TAG_VALUE_LENGTH: Final = 256


def _anchored(body: str) -> str:
    # For msgspec (which searches) and JSON Schema: ``$`` alone also matches before a
    # final newline in Python, so the lookahead refuses one.
    return "^" + body + r"(?!\n)$"


_SCHEMA_VERSION_BODY: Final = r"1\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})"
_REF_BODY: Final = rf"[A-Za-z0-9._:/+=@-]{{1,{MAX_REF_LENGTH}}}"
_ENVIRONMENT_BODY: Final = rf"[A-Za-z0-9._/-]{{1,{MAX_ENVIRONMENT_LENGTH}}}"
_TAG_KEY_BODY: Final = rf"[A-Za-z0-9_][A-Za-z0-9_./-]{{0,{MAX_TAG_KEY_LENGTH - 1}}}"
_TAG_VALUE_BODY: Final = r"[^\x00-\x1f\x7f]*"

SCHEMA_VERSION_PATTERN: Final = _anchored(_SCHEMA_VERSION_BODY)
REF_PATTERN: Final = _anchored(_REF_BODY)
ENVIRONMENT_PATTERN: Final = _anchored(_ENVIRONMENT_BODY)
TAG_KEY_PATTERN: Final = _anchored(_TAG_KEY_BODY)
TAG_VALUE_PATTERN: Final = _anchored(_TAG_VALUE_BODY)

_schema_version_ok: Final = re.compile(_SCHEMA_VERSION_BODY).fullmatch
is_ref: Final = re.compile(_REF_BODY).fullmatch
"""``is_ref(s)`` is truthy when ``s`` is a valid correlation id / parent event id."""
is_environment: Final = re.compile(_ENVIRONMENT_BODY).fullmatch
"""``is_environment(s)`` is truthy when ``s`` is a valid (non-empty) environment name."""
is_tag_key: Final = re.compile(_TAG_KEY_BODY).fullmatch
"""``is_tag_key(s)`` is truthy when ``s`` is a valid tag key."""
is_tag_value: Final = re.compile(_TAG_VALUE_BODY).fullmatch
"""``is_tag_value(s)`` is truthy when ``s`` has no control character (length aside)."""
_tag_value_bad: Final = re.compile(r"[\x00-\x1f\x7f]").search


def check_schema_version(value: object) -> str:
    """A schema version this llmtally can read (``1.x.y``)."""
    if value is SCHEMA_VERSION or (type(value) is str and _schema_version_ok(value)):
        return value
    raise ValidationError(
        f"schema_version must be MAJOR.MINOR.PATCH with major 1 (this llmtally writes "
        f"{SCHEMA_VERSION}), got {value!r}"
    )


def check_ref(name: str, value: object) -> str | None:
    """An optional ``correlation_id`` or ``parent_event_id``; ``None`` and ``""`` are none."""
    if value is None or value == "":
        return None
    if type(value) is str and is_ref(value):
        return value
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a str, got {type(value).__name__}")
    if len(value) > MAX_REF_LENGTH:
        raise ValidationError(f"{name} is {len(value)} characters; the limit is {MAX_REF_LENGTH}")
    raise ValidationError(f"{name} may hold only letters, digits and . _ : / + = @ -")


def check_severity(value: object) -> Severity | None:
    """An optional severity; ``None`` means the event type's default."""
    if value is None or (type(value) is str and value in SEVERITIES):
        return value  # type: ignore[return-value]
    raise ValidationError(f"severity must be one of {', '.join(get_args(Severity))}, got {value!r}")


def check_environment(value: object) -> str | None:
    """An optional environment name; ``None`` and ``""`` are none."""
    if value is None or value == "":
        return None
    if type(value) is str and is_environment(value):
        return value
    raise ValidationError(
        f"environment must be 1-{MAX_ENVIRONMENT_LENGTH} characters of letters, digits "
        f"and . _ / -, got {value!r}"
    )


def check_tags(value: object) -> dict[str, str] | None:
    """Optional tags: a copy of the mapping (later changes to the caller's dict do not
    reach the event); ``None`` and an empty mapping are none."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(f"tags must be a mapping of str to str, got {type(value).__name__}")
    if not value:
        return None
    if len(value) > MAX_TAGS:
        raise ValidationError(f"{len(value)} tags; the limit is {MAX_TAGS}")
    tags: dict[str, str] = {}
    for key, item in value.items():
        if type(key) is not str or not is_tag_key(key):
            raise ValidationError(
                f"tag key {key!r} must be 1-{MAX_TAG_KEY_LENGTH} characters of letters, "
                "digits and _ . / -, not starting with . / -"
            )
        if not isinstance(item, str):
            raise ValidationError(f"tag {key!r} must have a str value, got {type(item).__name__}")
        if len(item) > MAX_TAG_VALUE_LENGTH:
            raise ValidationError(
                f"tag {key!r} has a value of {len(item)} characters; the limit is "
                f"{MAX_TAG_VALUE_LENGTH}"
            )
        if _tag_value_bad(item):
            raise ValidationError(f"tag {key!r} has a control character in its value")
        tags[key] = str(item)
    return tags
