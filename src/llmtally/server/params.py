"""Query parameters, declared once per endpoint.

Each route declares the query parameters it takes as a ``QuerySpec``; the same object
is (a) what the route checks first — any parameter it does not name, a parameter it does
not take as a list given more than once, and an empty value its schema refuses, is a
``QueryError`` naming it (a typo is never silently ignored, and ``?limit=1&limit=1000``
is not left to a proxy and the server to read differently) — and (b) what
``GET /openapi.json`` lists for the operation (``QueryParam.openapi``). What the document
says an endpoint takes and what it accepts cannot drift apart. The values themselves are checked by the handlers; the schema here
is the contract they keep (the schemathesis run in the test suite holds them to it).

The parameters several endpoints share (``start``, ``end``, ``limit``, the filters) are
declared here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.datastructures import QueryParams

from .._envelope import MAX_TAG_KEY_LENGTH, MAX_TAG_VALUE_LENGTH, MAX_TAGS, REF_PATTERN
from ..query import MAX_LIMIT, QueryError

__all__ = [
    "AGENT_ID",
    "CORRELATION_ID_SCHEMA",
    "CURSOR",
    "END",
    "LIMIT",
    "MAX_SECONDS",
    "MAX_TEXT",
    "MODEL",
    "NO_PARAMETERS",
    "PROVIDER",
    "PROVIDER_ID",
    "QueryParam",
    "QuerySpec",
    "SLO_TARGET",
    "TAGS",
    "TAG_FILTER_PATTERN",
    "TARGET_PATTERN",
    "is_target",
    "parse_int",
    "start",
    "text",
]

MAX_SECONDS: Final = 100_000_000_000
"""The largest ``start``/``end`` (year 5138): beyond it, a caller sent milliseconds."""
MAX_TEXT: Final = 256
"""The longest filter value (``model``, ``provider``, ...)."""
TAG_FILTER_PATTERN: Final = (
    rf"^[A-Za-z0-9_][A-Za-z0-9_./-]{{0,{MAX_TAG_KEY_LENGTH - 1}}}"
    rf":[^\x00-\x1f\x7f]{{0,{MAX_TAG_VALUE_LENGTH}}}(?!\n)$"
)
"""``key:value``, a key tags can have and a value they can hold (``_envelope``)."""
_TARGET_BODY: Final = r"0?\.[0-9]*[1-9][0-9]*"
TARGET_PATTERN: Final = rf"^({_TARGET_BODY})?(?!\n)$"
"""What ``?target=`` (an SLO success target) accepts: a plain decimal strictly between 0
and 1 (empty: the default, 0.999)."""
is_target: Final = re.compile(_TARGET_BODY).fullmatch
"""``is_target(s)`` is truthy when ``s`` is a target (not empty)."""


@dataclass(frozen=True)
class QueryParam:
    """One query parameter: its name, JSON Schema (an ``array`` schema means it may be
    repeated: ``?tag=a&tag=b``) and description."""

    name: str
    schema: Mapping[str, Any]
    description: str
    required: bool = False

    @property
    def repeatable(self) -> bool:
        """Whether the parameter may be given more than once (an array)."""
        return self.schema.get("type") == "array"

    @property
    def allows_empty(self) -> bool:
        """Whether an empty value (``?name=``) is valid for the schema: a string with no
        pattern or length that refuses it, or an enum that lists it."""
        schema = self.schema
        if "enum" in schema:
            return "" in schema["enum"]
        if schema.get("type") != "string" or schema.get("minLength", 0) > 0:
            return False
        pattern = schema.get("pattern")
        return pattern is None or re.search(pattern, "") is not None

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 Parameter Object."""
        out: dict[str, Any] = {
            "name": self.name,
            "in": "query",
            "required": self.required,
            "schema": dict(self.schema),
            "description": self.description,
        }
        if self.repeatable:
            out["style"] = "form"
            out["explode"] = True
        return out


class QuerySpec:
    """The query parameters one endpoint takes, in the order the document lists them."""

    __slots__ = ("_by_name", "params")

    def __init__(self, *params: QueryParam) -> None:
        self.params: Final = params
        self._by_name: Final = {p.name: p for p in params}
        if len(self._by_name) != len(params):
            raise ValueError("a query parameter is declared twice")

    def __iter__(self) -> Iterator[QueryParam]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    @property
    def names(self) -> frozenset[str]:
        """The names of the declared parameters."""
        return frozenset(self._by_name)

    def check(self, query: QueryParams) -> None:
        """Raise ``QueryError`` naming the first parameter of ``query`` that is not
        declared, that is given more than once and is not repeatable, or that is empty
        where its schema does not allow an empty value (``?limit=`` is not "the
        default": the document says an integer)."""
        seen: set[str] = set()
        for name, value in query.multi_items():
            param = self._by_name.get(name)
            if param is None:
                raise QueryError(name[:64], "unknown parameter")
            if name in seen and not param.repeatable:
                raise QueryError(name, "given more than once")
            if value == "" and not param.allows_empty:
                raise QueryError(name, "must not be empty")
            seen.add(name)


_INTEGER: Final = re.compile(r"-?[0-9]{1,30}")


def parse_int(raw: str) -> int | None:
    """``raw`` as an integer, or ``None`` unless it is one written in ASCII digits
    (``int()`` alone would take ``" 1_000 "`` and other scripts' digits)."""
    return int(raw) if _INTEGER.fullmatch(raw) else None


NO_PARAMETERS: Final = QuerySpec()
"""For an endpoint that takes none (any query parameter is refused)."""

_SECONDS: Final = {"type": "integer", "minimum": 0, "maximum": MAX_SECONDS}


def start(default: str) -> QueryParam:
    """``start`` (unix seconds, inclusive), whose default is ``default``."""
    return QueryParam(
        "start",
        _SECONDS,
        f"Range start, unix seconds (inclusive). Default: {default}. "
        "A start after the end (given or defaulted) is a 400 naming `end`.",
    )


def text(name: str, description: str) -> QueryParam:
    """A filter on one value: a string of at most ``MAX_TEXT`` characters (empty: none)."""
    return QueryParam(name, {"type": "string", "maxLength": MAX_TEXT}, description)


END: Final = QueryParam("end", _SECONDS, "Range end, unix seconds (exclusive). Default: now.")
LIMIT: Final = QueryParam(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
    "Page size.",
)
CURSOR: Final = QueryParam(
    "cursor",
    {"type": "string"},
    "next_cursor of the previous page (anything else is a 400).",
)
MODEL: Final = text("model", "Only this model.")
PROVIDER: Final = text("provider", "Only this provider.")
AGENT_ID: Final = text("agent_id", "Only this agent.")
PROVIDER_ID: Final = text("provider_id", "Only this API key id.")
CORRELATION_ID_SCHEMA: Final = {"type": "string", "pattern": REF_PATTERN}
TAGS: Final = QueryParam(
    "tag",
    {
        "type": "array",
        "maxItems": MAX_TAGS,
        "items": {"type": "string", "pattern": TAG_FILTER_PATTERN},
    },
    "key:value; repeat for several (all must hold).",
)
SLO_TARGET: Final = QueryParam(
    "target",
    {"type": "string", "pattern": TARGET_PATTERN, "default": "0.999"},
    "SLO success-rate target, a decimal strictly between 0 and 1.",
)
